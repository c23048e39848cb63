// LaunchDenseWgmma: the Hopper dense attention kernel's tile choice and launch.
#include "kernels/dense_attention/dense_attention_wgmma.h"

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/common/cuda_dtype.cuh"
#include "kernels/dense_attention/dense_attention_wgmma_kernel.cuh"

namespace sparsefill::kernels::cuda::flash {
namespace {

// kN = 128 keys per tile. Stages: the overlapped schedules hold K of tile j and V of tile j - 1
// at once, so tile j + 1 only streams in while they run with a third stage: 3 at d = 128
// (225 KB with Q, of the 227 KB a CTA may have), 4 at d = 64 (144 KB).
template <int kD, int kStages, bool kOverlap, bool kPingPong>
absl::Status LaunchT(const char* op, FlashParams f, int num_seqs, int64_t max_q,
                     cudaStream_t stream) {
  constexpr int kN = 128;
  using T = WgmmaTile<kD, kN, kStages>;
  auto* kernel = DenseAttentionWgmmaKernel<kD, kN, kStages, kOverlap, kPingPong>;
  f.tokens_per_cta = T::kRows / f.group;
  const int64_t tiles = (max_q + f.tokens_per_cta - 1) / f.tokens_per_cta;
  const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes);
  if (attr != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat(op, ": cudaFuncSetAttribute(", T::kSmemBytes,
                     " bytes of shared memory) failed: ", cudaGetErrorString(attr)));
  }
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(num_seqs),
                  static_cast<unsigned>(f.kv_heads));
  kernel<<<grid, T::kThreads, T::kSmemBytes, stream>>>(f);
  return LaunchStatus(op);
}

}  // namespace

absl::StatusOr<bool> DeviceHasWgmma(const char* op) {
  int dev = 0, major = 0, minor = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (e != cudaSuccess) {
    return absl::InternalError(absl::StrCat(
        op, ": reading the device's compute capability failed: ", cudaGetErrorString(e)));
  }
  return major == 9 && minor == 0;
}

absl::Status LaunchDenseWgmma(const char* op, WgmmaSchedule schedule, FlashParams f, int head_dim,
                              int num_seqs, int64_t max_q, cudaStream_t stream) {
  const bool overlap = schedule != WgmmaSchedule::kSerial;
  const bool pingpong = schedule == WgmmaSchedule::kPingPong;
  switch (head_dim) {
    case 64:
      if (!overlap) return LaunchT<64, 4, false, false>(op, f, num_seqs, max_q, stream);
      if (pingpong) return LaunchT<64, 4, true, true>(op, f, num_seqs, max_q, stream);
      return LaunchT<64, 4, true, false>(op, f, num_seqs, max_q, stream);
    case 128:
      if (!overlap) return LaunchT<128, 3, false, false>(op, f, num_seqs, max_q, stream);
      if (pingpong) return LaunchT<128, 3, true, true>(op, f, num_seqs, max_q, stream);
      return LaunchT<128, 3, true, false>(op, f, num_seqs, max_q, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": head_dim ", head_dim, " not supported (64 or 128)"));
  }
}

}  // namespace sparsefill::kernels::cuda::flash
