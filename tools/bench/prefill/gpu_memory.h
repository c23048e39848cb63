// Peak device memory in use while a piece of work runs, sampled from cudaMemGetInfo by a
// background thread (every allocator counts: ours, cuBLASLt's, the driver's).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "nlohmann/json.hpp"

namespace sparsefill::bench {

class GpuMemoryPeak {
 public:
  GpuMemoryPeak();  // starts sampling
  ~GpuMemoryPeak();
  GpuMemoryPeak(const GpuMemoryPeak&) = delete;
  GpuMemoryPeak& operator=(const GpuMemoryPeak&) = delete;
  // Largest (total - free) seen so far, bytes.
  uint64_t peak_bytes() const { return peak_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> peak_{0};
  std::thread thread_;
};

// name, memory, SM count, clocks of device 0 (empty object when there is none).
nlohmann::json GpuInfoJson();

}  // namespace sparsefill::bench
