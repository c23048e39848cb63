// LaunchDenseWgmma: the Hopper dense attention kernel's tile choice and launch.
#include "kernels/dense_attention/dense_attention_wgmma.h"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/common/cuda_dtype.cuh"
#include "kernels/common/flash_launch.cuh"
#include "kernels/dense_attention/dense_attention_wgmma_kernel.cuh"
#include "sparsefill/common/status.h"

namespace sparsefill::kernels::cuda::flash {
namespace {

// cuTensorMapEncodeTiled from the driver the runtime loaded (no -lcuda); null when the driver
// does not have it.
PFN_cuTensorMapEncodeTiled_v12000 TensorMapEncoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

template <int kD, int kRows, int kN>
absl::Status EncodeMaps(const char* op, const FlashParams& f, WgmmaTmaMaps* maps) {
  {
    const cuuint64_t dims[3] = {kD, static_cast<cuuint64_t>(f.q_heads),
                                static_cast<cuuint64_t>(f.total_q)};
    const cuuint64_t strides[2] = {kD * 2, static_cast<cuuint64_t>(f.q_heads) * kD * 2};
    const cuuint32_t box[3] = {64, static_cast<cuuint32_t>(f.group),
                               static_cast<cuuint32_t>(kRows / f.group)};
    SF_RETURN_IF_ERROR(EncodeBf16Map(op, "Q", &maps->q, f.q, 3, dims, strides, box));
  }
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(f.kv_heads) * kD,
                              static_cast<cuuint64_t>(f.total_kv)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(f.kv_heads) * kD * 2};
  const cuuint32_t box[2] = {64, kN};
  SF_RETURN_IF_ERROR(EncodeBf16Map(op, "K", &maps->k, f.k, 2, dims, strides, box));
  return EncodeBf16Map(op, "V", &maps->v, f.v, 2, dims, strides, box);
}

// kN = 128 keys per tile. Stages: the overlapped schedules hold K of tile j and V of tile j - 1
// at once, so tile j + 1 only streams in while they run with a third stage: 3 at d = 128
// (225 KB with Q, of the 227 KB a CTA may have), 4 at d = 64 (144 KB).
template <int kD, int kStages, bool kOverlap, bool kPingPong, bool kTma>
absl::Status LaunchT(const char* op, FlashParams f, int num_seqs, int64_t max_q,
                     cudaStream_t stream) {
  constexpr int kN = 128;
  using T = WgmmaTile<kD, kN, kStages>;
  auto* kernel = DenseAttentionWgmmaKernel<kD, kN, kStages, kOverlap, kPingPong, kTma>;
  f.tokens_per_cta = T::kRows / f.group;
  WgmmaTmaMaps maps{};
  if constexpr (kTma) {
    SF_RETURN_IF_ERROR((EncodeMaps<kD, T::kRows, kN>(op, f, &maps)));
  }
  return LaunchOverQueryTiles(op, kernel, T::kThreads, T::kSmemBytes, f, num_seqs, max_q, stream,
                              maps);
}

}  // namespace

// A bf16 tensor map with 128-byte swizzled boxes of 64 elements in dimension 0 (one Sw128
// panel row). dims / strides as cuTensorMapEncodeTiled takes them (strides of dims 1.., bytes).
absl::Status EncodeBf16Map(const char* op, const char* what, CUtensorMap* map, const void* base,
                           int rank, const cuuint64_t* dims, const cuuint64_t* strides,
                           const cuuint32_t* box) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = TensorMapEncoder();
  if (encode == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": the driver has no cuTensorMapEncodeTiled (TMA)"));
  }
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, static_cast<cuuint32_t>(rank),
                            const_cast<void*>(base), dims, strides, box, elem_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    return absl::InternalError(
        absl::StrCat(op, ": cuTensorMapEncodeTiled for ", what, " failed (CUresult ", r, ")"));
  }
  return absl::OkStatus();
}

// Whether TMA can describe f's tensors: 16-byte aligned bases and row strides, coordinates
// inside int32.
bool TmaDescribes(const FlashParams& f, int kd) {
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return aligned(f.q) && aligned(f.k) && aligned(f.v) && (kd * 2) % 16 == 0 && f.total_q > 0 &&
         f.total_kv > 0 && static_cast<int64_t>(f.kv_heads) * kd < (int64_t{1} << 31);
}

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

absl::Status LaunchDenseWgmma(const char* op, WgmmaSchedule schedule, WgmmaLoads loads,
                              FlashParams f, int head_dim, int num_seqs, int64_t max_q,
                              cudaStream_t stream) {
  const bool overlap = schedule != WgmmaSchedule::kSerial;
  const bool pingpong = schedule == WgmmaSchedule::kPingPong;
  // TMA only with the overlapped schedules (the serial one is the reference order).
  const bool tma = loads == WgmmaLoads::kTma && overlap && TmaDescribes(f, head_dim);
  switch (head_dim) {
    case 64:
      if (!overlap) return LaunchT<64, 4, false, false, false>(op, f, num_seqs, max_q, stream);
      if (tma && pingpong) return LaunchT<64, 4, true, true, true>(op, f, num_seqs, max_q, stream);
      if (tma) return LaunchT<64, 4, true, false, true>(op, f, num_seqs, max_q, stream);
      if (pingpong) return LaunchT<64, 4, true, true, false>(op, f, num_seqs, max_q, stream);
      return LaunchT<64, 4, true, false, false>(op, f, num_seqs, max_q, stream);
    case 128:
      if (!overlap) return LaunchT<128, 3, false, false, false>(op, f, num_seqs, max_q, stream);
      if (tma && pingpong) {
        return LaunchT<128, 3, true, true, true>(op, f, num_seqs, max_q, stream);
      }
      if (tma) return LaunchT<128, 3, true, false, true>(op, f, num_seqs, max_q, stream);
      if (pingpong) return LaunchT<128, 3, true, true, false>(op, f, num_seqs, max_q, stream);
      return LaunchT<128, 3, true, false, false>(op, f, num_seqs, max_q, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": head_dim ", head_dim, " not supported (64 or 128)"));
  }
}

}  // namespace sparsefill::kernels::cuda::flash
