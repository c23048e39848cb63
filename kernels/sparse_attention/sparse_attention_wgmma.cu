// LaunchSparseWgmma: the Hopper block-sparse attention kernel's maps and launch.
#include "kernels/sparse_attention/sparse_attention_wgmma.h"

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/common/cuda_dtype.cuh"
#include "kernels/common/flash_launch.cuh"
#include "kernels/dense_attention/dense_attention_wgmma.h"
#include "kernels/sparse_attention/sparse_attention_wgmma_kernel.cuh"
#include "sparsefill/common/status.h"

namespace sparsefill::kernels::cuda::flash {
namespace {

// Two stages of K and V: with the Q tile and the union window about 100 KB at d = 128, so that
// two CTAs (two consumer warpgroups) share an SM.
template <int kD>
absl::Status LaunchT(const char* op, FlashParams f, int num_seqs, int64_t max_q,
                     cudaStream_t stream) {
  constexpr int kStages = 2;
  using T = SparseWgmmaTile<kD, kStages>;
  auto* kernel = SparseAttentionWgmmaKernel<kD, kStages>;
  f.tokens_per_cta = T::kRows / f.group;
  SparseTmaMaps maps{};
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(f.kv_heads) * kD,
                              static_cast<cuuint64_t>(f.total_kv)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(f.kv_heads) * kD * 2};
  const cuuint32_t box[2] = {64,
                             static_cast<cuuint32_t>(f.block_size < T::kN ? f.block_size : T::kN)};
  SF_RETURN_IF_ERROR(EncodeBf16Map(op, "K", &maps.k, f.k, 2, dims, strides, box));
  SF_RETURN_IF_ERROR(EncodeBf16Map(op, "V", &maps.v, f.v, 2, dims, strides, box));
  return LaunchOverQueryTiles(op, kernel, T::kThreads, T::kSmemBytes, f, num_seqs, max_q, stream,
                              maps);
}

}  // namespace

bool SparseWgmmaTakes(const FlashParams& f, int head_dim) {
  return f.block_shift >= 4 && TmaDescribes(f, head_dim);
}

absl::Status LaunchSparseWgmma(const char* op, FlashParams f, int head_dim, int num_seqs,
                               int64_t max_q, cudaStream_t stream) {
  if (!SparseWgmmaTakes(f, head_dim)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": the wgmma sparse kernel needs a power-of-two block size >= 16 (got ",
                     f.block_size, ") and 16-byte aligned q, k, v"));
  }
  switch (head_dim) {
    case 64:
      return LaunchT<64>(op, f, num_seqs, max_q, stream);
    case 128:
      return LaunchT<128>(op, f, num_seqs, max_q, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": head_dim ", head_dim, " not supported (64 or 128)"));
  }
}

}  // namespace sparsefill::kernels::cuda::flash
