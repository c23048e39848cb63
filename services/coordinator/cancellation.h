// Cancellation that crosses threads and layers without gRPC types: the gRPC adapter cancels a
// request's Cancellation when its client goes away; the domain code cancels its worker calls
// through the callbacks their transports registered (grpc::ClientContext::TryCancel).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

namespace sparsefill::coordinator {

using Deadline = std::chrono::system_clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

class Cancellation {
 public:
  Cancellation() = default;
  Cancellation(const Cancellation&) = delete;
  Cancellation& operator=(const Cancellation&) = delete;

  // Runs every registered callback once; later calls do nothing. Callbacks run under the lock
  // so that once a Registration is destroyed its callback is neither running nor going to run
  // (it may capture a grpc::ClientContext that dies right after). Hence callbacks must be quick
  // and must not touch this Cancellation.
  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    for (auto& [id, fn] : callbacks_) fn();
    callbacks_.clear();
  }
  bool cancelled() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }

  // Unregisters on destruction, so a callback never outlives what it captured.
  class Registration {
   public:
    Registration() = default;
    Registration(Cancellation* owner, int64_t id) : owner_(owner), id_(id) {}
    Registration(Registration&& o) noexcept : owner_(o.owner_), id_(o.id_) { o.owner_ = nullptr; }
    Registration& operator=(Registration&&) = delete;
    Registration(const Registration&) = delete;
    ~Registration() {
      if (owner_ != nullptr) owner_->Unregister(id_);
    }

   private:
    Cancellation* owner_ = nullptr;
    int64_t id_ = 0;
  };

  // `fn` runs on Cancel, or right now when already cancelled. `self` may be null (no-op).
  [[nodiscard]] static Registration OnCancel(Cancellation* self, std::function<void()> fn) {
    if (self == nullptr) return Registration();
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      if (!self->cancelled_) {
        const int64_t id = ++self->next_id_;
        self->callbacks_.emplace(id, std::move(fn));
        return Registration(self, id);
      }
    }
    fn();
    return Registration();
  }

 private:
  void Unregister(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    callbacks_.erase(id);
  }

  mutable std::mutex mu_;
  bool cancelled_ = false;
  int64_t next_id_ = 0;
  std::map<int64_t, std::function<void()>> callbacks_;
};

inline bool IsCancelled(const Cancellation* c) { return c != nullptr && c->cancelled(); }

}  // namespace sparsefill::coordinator
