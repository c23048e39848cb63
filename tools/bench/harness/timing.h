// Timing helpers shared by every bench subcommand: a stopwatch that can leave work out of the
// measurement (setup, verification), medians of repeats after warm-up, and throughput units.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace sparsefill::bench {

// Accumulates only the intervals between Start() and Stop(), so a loop can keep its own
// verification or data preparation out of the figure it reports.
class Stopwatch {
 public:
  void Start() { begin_ = Clock::now(); }
  void Stop() { total_ += Clock::now() - begin_; }
  double Seconds() const { return std::chrono::duration<double>(total_).count(); }
  void Reset() { total_ = Clock::duration::zero(); }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point begin_{};
  Clock::duration total_{};
};

// Seconds since `begin` on the steady clock.
inline double SecondsSince(std::chrono::steady_clock::time_point begin) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
}

// The values of one measured quantity over repeats; the median is the figure reported.
struct Samples {
  std::vector<double> values;
  double median() const;
  double min() const;
  double max() const;
  nlohmann::json ToJson() const;  // {"median", "min", "max", "values"}
};

struct RepeatOptions {
  int warmup = 1;   // runs whose result is dropped (caches, page faults, CPU clocks)
  int repeats = 5;  // measured runs
};

// Runs `body` warmup + repeats times; `body` returns the seconds it measured (so it can leave
// its own setup out) or an error, which stops the loop.
absl::StatusOr<Samples> TimeRepeated(const RepeatOptions& options,
                                     const std::function<absl::StatusOr<double>()>& body);

// Decimal units, as disks and networks are quoted: 1 GB/s = 1e9 bytes per second.
inline double GBps(uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}
// Throughput of every sample: bytes / seconds[i], in GB/s.
Samples ToGBps(uint64_t bytes, const Samples& seconds);

}  // namespace sparsefill::bench
