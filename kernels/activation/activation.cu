// LaunchSwiGlu: checks the parameters, picks the vector width, launches.
#include <algorithm>
#include <cstdint>

#include "kernels/activation/activation_check.h"
#include "kernels/activation/activation_kernel.cuh"
#include "kernels/common/cuda_dtype.cuh"
#include "sparsefill/kernels/activation.h"

namespace sparsefill::kernels {
namespace {

template <typename T, int kVec>
absl::Status LaunchSwiGluT(const SwiGluParams& p, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t total = p.rows * (p.dim / kVec);
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
  cuda::SwiGluKernel<T, kVec><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(p.gate), static_cast<const T*>(p.up), static_cast<T*>(p.out), p.rows,
      p.dim, p.gate_stride, p.up_stride, p.out_stride);
  return cuda::LaunchStatus("LaunchSwiGlu");
}

}  // namespace

absl::Status LaunchSwiGlu(const SwiGluParams& p, cudaStream_t stream) {
  if (absl::Status s = CheckSwiGlu(p); !s.ok()) return s;
  if (p.rows == 0) return absl::OkStatus();
  SF_DISPATCH_DTYPE("LaunchSwiGlu", p.dtype, T, {
    constexpr int kVec = cuda::kVec16<T>;
    const bool vec = cuda::Aligned16(p.gate) && cuda::Aligned16(p.up) && cuda::Aligned16(p.out) &&
                     p.dim % kVec == 0 && p.gate_stride % kVec == 0 && p.up_stride % kVec == 0 &&
                     p.out_stride % kVec == 0;
    return vec ? LaunchSwiGluT<T, kVec>(p, stream) : LaunchSwiGluT<T, 1>(p, stream);
  })
}

}  // namespace sparsefill::kernels
