// Owning handles for the CUDA runtime objects the cuda backend holds (device and pinned host
// memory, streams, events), and the Status form of a CUDA error. Host code only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::cuda {

// Internal naming `what` and CUDA's own words; OK for cudaSuccess.
absl::Status CudaStatus(cudaError_t err, std::string_view what);

#define SF_CUDA_RETURN_IF_ERROR(expr, what) \
  SF_RETURN_IF_ERROR(::sparsefill::engine::cuda::CudaStatus((expr), (what)))

// The two kinds of memory a CudaBuffer can own.
struct DeviceMemory {  // cudaMalloc'd
  static constexpr const char* kAllocator = "cudaMalloc";
  static cudaError_t Allocate(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
  static void Free(void* p) { cudaFree(p); }
};
struct PinnedMemory {  // cudaHostAlloc'd, so device<->host copies run asynchronously at full speed
  static constexpr const char* kAllocator = "cudaHostAlloc";
  static cudaError_t Allocate(void** p, size_t bytes) {
    return cudaHostAlloc(p, bytes, cudaHostAllocDefault);
  }
  static void Free(void* p) { cudaFreeHost(p); }
};

// Bytes of `Memory`; moves, never copies. Zero bytes holds nothing.
template <typename Memory>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  static absl::StatusOr<CudaBuffer> Allocate(size_t bytes, std::string_view what) {
    CudaBuffer b;
    if (bytes == 0) return b;
    SF_RETURN_IF_ERROR(
        CudaStatus(Memory::Allocate(&b.ptr_, bytes),
                   absl::StrCat(Memory::kAllocator, " of ", bytes, " bytes for ", AsAbsl(what))));
    b.bytes_ = bytes;
    return b;
  }
  CudaBuffer(CudaBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  CudaBuffer& operator=(CudaBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_ != nullptr) Memory::Free(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  ~CudaBuffer() {
    if (ptr_ != nullptr) Memory::Free(ptr_);
  }

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

using DeviceBuffer = CudaBuffer<DeviceMemory>;
using PinnedBuffer = CudaBuffer<PinnedMemory>;

class Stream {
 public:
  Stream() = default;
  static absl::StatusOr<Stream> Create();
  Stream(Stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class Event {
 public:
  Event() = default;
  static absl::StatusOr<Event> Create(bool timing = false);
  Event(Event&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Number of CUDA devices this process can use (0 without a driver or device).
int CudaDeviceCount();

}  // namespace sparsefill::engine::cuda
