#include "tools/bench/prefill/gpu_memory.h"

#include <cuda_runtime_api.h>

#include <chrono>

namespace sparsefill::bench {

GpuMemoryPeak::GpuMemoryPeak() {
  thread_ = std::thread([this] {
    while (!stop_.load()) {
      size_t free = 0, total = 0;
      if (cudaMemGetInfo(&free, &total) == cudaSuccess) {
        const uint64_t used = total - free;
        uint64_t seen = peak_.load();
        while (used > seen && !peak_.compare_exchange_weak(seen, used)) {
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
}

GpuMemoryPeak::~GpuMemoryPeak() {
  stop_.store(true);
  thread_.join();
}

nlohmann::json GpuInfoJson() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    return nlohmann::json::object();
  }
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return nlohmann::json::object();
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  return {{"name", p.name},
          {"memory_bytes", p.totalGlobalMem},
          {"multiprocessors", p.multiProcessorCount},
          {"compute_capability", std::to_string(p.major) + "." + std::to_string(p.minor)},
          {"l2_bytes", p.l2CacheSize},
          {"driver_version", driver},
          {"runtime_version", runtime},
          {"devices", n}};
}

}  // namespace sparsefill::bench
