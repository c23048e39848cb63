// An injectable clock (STYLE §10): components take a Clock*, tests pass a FakeClock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace sparsefill {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch.
  virtual int64_t NowUnixMillis() const = 0;
  // The process-wide real clock (stateless, so sharing it is not a singleton of state).
  static Clock* Real();
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t now_ms = 1'700'000'000'000) : now_ms_(now_ms) {}
  int64_t NowUnixMillis() const override { return now_ms_.load(); }
  void Advance(int64_t ms) { now_ms_ += ms; }
  void Set(int64_t ms) { now_ms_ = ms; }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace sparsefill
