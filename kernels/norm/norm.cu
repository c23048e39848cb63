// LaunchRmsNorm: checks the parameters, picks the vector width and row mapping, launches.
#include <algorithm>
#include <cstdint>

#include "kernels/common/cuda_dtype.cuh"
#include "kernels/norm/norm_check.h"
#include "kernels/norm/norm_kernel.cuh"
#include "sparsefill/kernels/norm.h"

namespace sparsefill::kernels {
namespace {

template <typename T, int kVec>
absl::Status LaunchRmsNormT(const RmsNormParams& p, cudaStream_t stream) {
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.weight);
  T* out = static_cast<T*>(p.out);
  // A warp per row up to 1024 elements keeps short rows (per-head q/k norm) from idling 7/8 of
  // a block; longer rows (hidden states) get the whole block.
  if (p.dim <= 1024) {
    constexpr int kRows = cuda::kRmsNormBlock / 32;
    const int64_t blocks = std::min<int64_t>((p.rows + kRows - 1) / kRows, 1 << 20);
    cuda::RmsNormKernel<T, kVec, 32>
        <<<static_cast<unsigned>(blocks), cuda::kRmsNormBlock, 0, stream>>>(
            x, w, out, p.rows, p.dim, p.x_stride, p.out_stride, p.eps);
  } else {
    const int64_t blocks = std::min<int64_t>(p.rows, 1 << 20);
    cuda::RmsNormKernel<T, kVec, cuda::kRmsNormBlock>
        <<<static_cast<unsigned>(blocks), cuda::kRmsNormBlock, 0, stream>>>(
            x, w, out, p.rows, p.dim, p.x_stride, p.out_stride, p.eps);
  }
  return cuda::LaunchStatus("LaunchRmsNorm");
}

}  // namespace

absl::Status LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (absl::Status s = CheckRmsNorm(p); !s.ok()) return s;
  if (p.rows == 0) return absl::OkStatus();
  SF_DISPATCH_DTYPE("LaunchRmsNorm", p.dtype, T, {
    constexpr int kVec = cuda::kVec16<T>;
    const bool vec = cuda::Aligned16(p.x) && cuda::Aligned16(p.weight) && cuda::Aligned16(p.out) &&
                     p.dim % kVec == 0 && p.x_stride % kVec == 0 && p.out_stride % kVec == 0;
    return vec ? LaunchRmsNormT<T, kVec>(p, stream) : LaunchRmsNormT<T, 1>(p, stream);
  })
}

}  // namespace sparsefill::kernels
