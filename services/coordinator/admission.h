// Admission control (DESIGN §1.2): a request runs when its tokens fit in the in-flight token
// budget; otherwise it waits in a bounded FIFO queue until they fit, its deadline passes or it is
// cancelled; with the queue full it is refused at once with RESOURCE_EXHAUSTED. A Slot gives its
// tokens back when destroyed, so every exit path of a request releases what it held.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/coordinator/cancellation.h"
#include "services/metrics/server_metrics.h"

namespace sparsefill::coordinator {

class AdmissionController {
 public:
  struct Options {
    // Requests that may wait for budget; more are RESOURCE_EXHAUSTED. 0: none wait. Default 16.
    int32_t max_queue = 16;
    // Sum of the prompt tokens of running requests. Default 4M tokens.
    int64_t max_inflight_tokens = int64_t{4} << 20;
    // Queue depth, in-flight tokens and rejections. Default null: none. Not owned.
    metrics::AdmissionMetricSet* metrics = nullptr;
    absl::Status Validate() const;
  };

  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& o) noexcept : owner_(o.owner_), tokens_(o.tokens_) { o.owner_ = nullptr; }
    Slot& operator=(Slot&& o) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { Release(); }
    void Release();
    int64_t tokens() const { return tokens_; }

   private:
    friend class AdmissionController;
    Slot(AdmissionController* owner, int64_t tokens) : owner_(owner), tokens_(tokens) {}
    AdmissionController* owner_ = nullptr;
    int64_t tokens_ = 0;
  };

  explicit AdmissionController(Options options) : options_(options) {}
  // Slots must not outlive the controller.
  ~AdmissionController() = default;

  // RESOURCE_EXHAUSTED when `tokens` exceed the whole budget or the queue is full;
  // DEADLINE_EXCEEDED / CANCELLED when the wait in the queue ends that way.
  absl::StatusOr<Slot> Admit(int64_t tokens, Deadline deadline, const Cancellation* cancel);

  int64_t inflight_tokens() const;
  int32_t running() const;
  int32_t queued() const;

 private:
  void Return(int64_t tokens);
  // Copies the state into the metrics; called with mu_ held.
  void Publish() const;
  void Reject(std::string_view reason) const;

  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<uint64_t> queue_;  // tickets, FIFO
  uint64_t next_ticket_ = 0;
  int64_t inflight_tokens_ = 0;
  int32_t running_ = 0;
};

}  // namespace sparsefill::coordinator
