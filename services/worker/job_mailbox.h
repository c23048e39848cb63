// The worker's side of the peer exchange, transport-free: what peers posted to this worker (the
// all-gather payloads, keyed by (job, layer, tag, rank)), the K/V layers the local rank published
// for peers to fetch, and each job's abort state. The gRPC handlers (PutPayload, FetchKv) and
// GrpcShardExchange both work on it; nothing here includes gRPC.
//
// Peers may post before this worker's ExecuteShard of the job has started (the coordinator starts
// the ranks one after the other), so a job's mailbox is created by whichever comes first. A
// finished job lingers for a while so that late posts learn how it ended instead of creating a
// new, never-collected mailbox.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/engine/shard.h"

namespace sparsefill::worker {

using SteadyTime = std::chrono::steady_clock::time_point;

// How a blocking mailbox call waits.
struct WaitOptions {
  SteadyTime deadline = SteadyTime::max();
  // Called every `poll` while waiting with the ranks still missing (empty when waiting for a local
  // publish); a non-OK status ends the wait with it (cancellation, an unreachable peer).
  std::function<absl::Status(std::span<const int32_t> missing)> check;
  std::chrono::milliseconds poll{100};
};

// One job's mailbox. Thread-safe.
class JobMailbox {
 public:
  explicit JobMailbox(std::string job_name) : job_(std::move(job_name)) {}

  const std::string& job_name() const { return job_; }

  // A peer's payload for (layer, tag). FailedPrecondition when that rank already posted it; the
  // job's failure when it was aborted or ended with an error.
  absl::Status Deliver(int32_t layer, std::string_view tag, int32_t from_rank, std::string data);
  // Waits until every rank of [0, world) but `self_rank` has delivered (layer, tag), then returns
  // the payloads in rank order with `self_data` at self_rank, and forgets them.
  // DeadlineExceeded names the missing ranks; an abort returns its status.
  absl::StatusOr<std::vector<std::string>> Collect(int32_t layer, std::string_view tag,
                                                   int32_t self_rank, int32_t world,
                                                   std::string self_data, const WaitOptions& wait);

  // The local rank's K/V of `layer`, [tokens, row_floats] each (copied), fetchable by peers.
  absl::Status Publish(int32_t layer, int64_t row_floats, std::span<const float> k,
                       std::span<const float> v);
  absl::Status Release(int32_t layer);
  // The local rank's tokens (set when the local ExecuteShard attaches).
  void SetShard(engine::TokenRange shard);
  // Rows of `ranges` (absolute positions inside the local shard) of `layer`: K bytes of every
  // range in order, then V bytes (fp32, host order = little-endian on every supported machine).
  // Waits until the layer is published. InvalidArgument for a range outside the shard.
  absl::StatusOr<std::string> ReadRows(int32_t layer, std::span<const engine::TokenRange> ranges,
                                       const WaitOptions& wait);

  // Fails the job (the first cause wins) and wakes every waiter.
  void Abort(const absl::Status& why);
  // OK while the job runs; the cause once aborted or finished with an error.
  absl::Status failure() const;
  // The local rank finished (OK or not); later deliveries are refused with a status saying so.
  void Finish(const absl::Status& how);
  bool finished() const;

 private:
  struct Layer {
    int64_t row_floats = 0;
    std::vector<float> k, v;
  };
  // Waits under `lock` until `ready()`; `missing` lists the ranks the wait depends on.
  template <typename Ready, typename Missing>
  absl::Status WaitLocked(std::unique_lock<std::mutex>& lock, Ready ready, Missing missing,
                          const WaitOptions& wait, const std::string& what);

  const std::string job_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<int32_t, std::string>, std::map<int32_t, std::string>> payloads_;
  std::map<int32_t, std::shared_ptr<const Layer>> layers_;
  absl::Status failure_;
  bool finished_ = false;
  engine::TokenRange shard_;
};

// Every job's mailbox on this worker. Thread-safe.
class PeerMailbox {
 public:
  struct Options {
    // How long a finished job's mailbox lingers, and how long a mailbox that peers created for a
    // job this worker never started is kept (default 120 s).
    std::chrono::milliseconds linger{120000};
    // Most mailboxes held at once; beyond it Open fails with ResourceExhausted (default 4096).
    size_t max_jobs = 4096;
    absl::Status Validate() const;
  };

  PeerMailbox();
  explicit PeerMailbox(Options options) : options_(options) {}

  // The mailbox of `job` (a printable name, e.g. the cache id in hex), created when absent.
  absl::StatusOr<std::shared_ptr<JobMailbox>> Open(const std::string& job);
  // Claims `job` for the local ExecuteShard: AlreadyExists when the job runs (or ran) here already.
  absl::StatusOr<std::shared_ptr<JobMailbox>> Attach(const std::string& job);
  // The local ExecuteShard ended with `how`: the mailbox lingers, then is dropped.
  void Detach(const std::string& job, const absl::Status& how);
  // Drops the mailboxes whose linger has passed (finished jobs, and jobs peers posted to that
  // never started here, whose waiters are told so); returns how many. Open calls it too, but a
  // worker that gets no new jobs must call it on a timer (Worker::ExpireCaches does).
  size_t CollectGarbage();
  size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<JobMailbox> box;
    bool attached = false;
    SteadyTime touched;  // created, or finished
  };
  size_t CollectGarbageLocked(SteadyTime now);

  Options options_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> jobs_;
};

// The reserved tag a failing rank posts to its peers (engine tags are plain words).
inline constexpr std::string_view kAbortTag = "!abort";
// Abort payloads carry the status: "<code number> <message>".
std::string EncodeAbort(const absl::Status& why);
absl::Status DecodeAbort(std::string_view data, int32_t from_rank);

}  // namespace sparsefill::worker
