// What the GPU tests share: CUDA_ASSERT, device detection and a guarded device buffer that
// catches writes outside its payload. Header-only (tests/gpu builds one binary per test file).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

#define CUDA_ASSERT(expr)                                                      \
  do {                                                                         \
    const cudaError_t err_ = (expr);                                           \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_); \
  } while (0)

namespace sparsefill::testing {

inline constexpr size_t kGuardBytes = 256;
inline constexpr uint8_t kSentinel = 0xA5;
inline constexpr uint8_t kPoison = 0xFF;  // bf16 0xFFFF and fp32 0xFFFFFFFF are NaN

inline bool HasCudaDevice() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the error, so that a later check does not see it
    return false;
  }
  return n > 0;
}

// A payload of `bytes` starting `offset` bytes after a kGuardBytes guard, inside one
// kSentinel-filled allocation with a guard after it too: stray writes before or after the
// payload show up in GuardsIntact. The payload starts as `fill` bytes (kPoison: unwritten
// floats read back as NaN; kSentinel: unwritten ints as 0xA5A5A5A5). offset = one element gives
// a kernel a pointer that is not 16-byte aligned.
class GuardedDeviceBuffer {
 public:
  explicit GuardedDeviceBuffer(size_t bytes, size_t offset = 0, uint8_t fill = kSentinel)
      : bytes_(bytes), offset_(offset), total_(bytes + offset + 2 * kGuardBytes) {
    ok_ = cudaMalloc(&base_, total_) == cudaSuccess &&
          cudaMemset(base_, kSentinel, total_) == cudaSuccess &&
          (fill == kSentinel || cudaMemset(data(), fill, bytes_) == cudaSuccess);
  }
  ~GuardedDeviceBuffer() {
    if (base_ != nullptr) cudaFree(base_);
  }
  GuardedDeviceBuffer(const GuardedDeviceBuffer&) = delete;
  GuardedDeviceBuffer& operator=(const GuardedDeviceBuffer&) = delete;

  bool ok() const { return ok_; }
  void* data() { return static_cast<uint8_t*>(base_) + kGuardBytes + offset_; }

  // False unless exactly the payload's size is copied.
  bool Upload(const void* host, size_t bytes) {
    return bytes == bytes_ &&
           cudaMemcpy(data(), host, bytes, cudaMemcpyHostToDevice) == cudaSuccess;
  }
  template <typename T>
  bool Upload(const std::vector<T>& host) {
    return Upload(host.data(), host.size() * sizeof(T));
  }

  // The whole allocation, guards included (empty when the copy failed).
  std::vector<uint8_t> DownloadAll() const {
    std::vector<uint8_t> all(total_);
    if (cudaMemcpy(all.data(), base_, total_, cudaMemcpyDeviceToHost) != cudaSuccess) all.clear();
    return all;
  }
  // The payload of a DownloadAll() as T values (empty when that download failed).
  template <typename T = uint8_t>
  std::vector<T> Payload(const std::vector<uint8_t>& all) const {
    if (all.size() != total_) return {};
    std::vector<T> v(bytes_ / sizeof(T));
    std::memcpy(v.data(), all.data() + kGuardBytes + offset_, v.size() * sizeof(T));
    return v;
  }
  ::testing::AssertionResult GuardsIntact(const std::vector<uint8_t>& all) const {
    if (all.size() != total_) return ::testing::AssertionFailure() << "download failed";
    const size_t begin = kGuardBytes + offset_, end = begin + bytes_;
    for (size_t i = 0; i < total_; ++i) {
      if ((i < begin || i >= end) && all[i] != kSentinel) {
        return ::testing::AssertionFailure()
               << "write outside the buffer at byte "
               << static_cast<int64_t>(i) - static_cast<int64_t>(begin);
      }
    }
    return ::testing::AssertionSuccess();
  }

 private:
  void* base_ = nullptr;
  size_t bytes_, offset_, total_;
  bool ok_ = false;
};

}  // namespace sparsefill::testing
