// engine::ShardExchange over the Worker service (DESIGN §8: the gRPC transport, always on the CPU
// backend). All-gathers post this rank's payload to every peer with PutPayload and wait in the
// local mailbox for theirs; K/V rows come from their owner's FetchKv stream. Every call has a
// deadline; a peer whose connection keeps failing ends a wait early with UNAVAILABLE naming it;
// Abort tells every peer (a PutPayload with the reserved abort tag) so that they fail fast.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/common/auth_tls.h"
#include "services/worker/job_mailbox.h"
#include "services/worker/worker.h"
#include "sparsefill/engine/shard.h"
#include "sparsefill/v1/worker.grpc.pb.h"

namespace sparsefill::worker {

// Channels to peers, one per address, shared by every job of a worker. Thread-safe.
class PeerChannels {
 public:
  struct Options {
    // Default: insecure (loopback tests).
    auth::ChannelSecurityOptions security;
    // Bearer token sent on every peer call. Default empty: none.
    std::string token;
    // Largest message either way (KvRows are <= 4 MiB; payloads are one message). Default 64 MiB.
    int max_message_bytes = 64 << 20;
    absl::Status Validate() const;
  };
  explicit PeerChannels(Options options) : options_(std::move(options)) {}

  absl::StatusOr<std::shared_ptr<grpc::Channel>> Get(const std::string& address);

 private:
  Options options_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;
};

struct GrpcExchangeOptions {
  // Deadline of each PutPayload / FetchKv call, and the longest a rank waits for its peers to
  // reach the same step. Default 120 s. The job's own deadline caps both.
  std::chrono::milliseconds peer_timeout{120000};
  // A peer whose connection stays failed this long while we wait on it fails the wait with
  // UNAVAILABLE naming it. Default 2 s.
  std::chrono::milliseconds unreachable_after{2000};
  // How often waits check cancellation and peer connections. Default 100 ms.
  std::chrono::milliseconds poll{100};
  // Largest KvRows message a FetchKv reply uses (raw fp32 bytes). Default 4 MiB.
  size_t max_rows_bytes = 4u << 20;
  absl::Status Validate() const;
};

class GrpcShardExchange final : public engine::ShardExchange {
 public:
  // `mailbox` is the job's (already attached); `channels` is not owned and must outlive this.
  static absl::StatusOr<std::unique_ptr<GrpcShardExchange>> Create(
      const ShardJob& job, engine::ShardLayout layout, std::shared_ptr<JobMailbox> mailbox,
      PeerChannels* channels, const GrpcExchangeOptions& options);
  ~GrpcShardExchange() override;

  int32_t rank() const override { return rank_; }
  const engine::ShardLayout& layout() const override { return layout_; }
  absl::StatusOr<std::vector<std::string>> AllGather(int32_t layer, std::string_view tag,
                                                     std::string_view data) override;
  absl::Status PublishLayer(int32_t layer, int64_t row_floats, std::span<const float> k,
                            std::span<const float> v) override;
  absl::Status ReleaseLayer(int32_t layer) override;
  absl::StatusOr<engine::KvRows> FetchKv(int32_t layer, int32_t owner,
                                         std::span<const engine::TokenRange> ranges) override;
  void Abort(const absl::Status& why) override;

 private:
  GrpcShardExchange() = default;
  // now + peer_timeout, capped by the job's deadline.
  std::chrono::system_clock::time_point CallDeadline() const;
  WaitOptions Wait() const;
  // Cancellation, then the connections of `missing` ranks.
  absl::Status Check(std::span<const int32_t> missing);
  std::string Peer(int32_t rank) const;  // "rank 2 (127.0.0.1:4001)"
  // PutPayload to every other rank at once; the first failure (naming the peer) or OK.
  absl::Status PostToPeers(int32_t layer, std::string_view tag, std::string_view data,
                           std::chrono::system_clock::time_point deadline);

  std::string job_bytes_;  // the job id as it travels (16 bytes)
  int32_t rank_ = 0;
  engine::ShardLayout layout_;
  std::vector<std::string> addresses_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;  // [world], null for this rank
  std::vector<std::unique_ptr<v1::Worker::Stub>> stubs_;  // [world], null for this rank
  std::shared_ptr<JobMailbox> mailbox_;
  GrpcExchangeOptions options_;
  std::chrono::system_clock::time_point job_deadline_;
  std::function<bool()> cancelled_;
  int64_t row_floats_ = 0;  // from PublishLayer: the same on every rank

  std::mutex mu_;  // guards what follows (Check runs from waits, Abort from any thread)
  std::vector<std::chrono::steady_clock::time_point> failing_since_;  // [world]; max(): healthy
  bool aborted_ = false;
};

// The factory Worker::ExecuteShard uses in the worker process.
class GrpcExchangeFactory final : public ShardExchangeFactory {
 public:
  GrpcExchangeFactory(PeerChannels* channels, GrpcExchangeOptions options)
      : channels_(channels), options_(options) {}
  absl::StatusOr<std::unique_ptr<engine::ShardExchange>> Create(
      const ShardJob& job, const engine::ShardLayout& layout,
      std::shared_ptr<JobMailbox> mailbox) override;
  void AbortPeers(const ShardJob& job, const absl::Status& why) override;

 private:
  PeerChannels* channels_;
  GrpcExchangeOptions options_;
};

}  // namespace sparsefill::worker
