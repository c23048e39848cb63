// LaunchRope: checks the parameters, picks the vector width and block shape, launches.
#include <algorithm>
#include <cstdint>

#include "kernels/common/cuda_dtype.cuh"
#include "kernels/rope/rope_check.h"
#include "kernels/rope/rope_kernel.cuh"
#include "sparsefill/kernels/rope.h"

namespace sparsefill::kernels {
namespace {

template <typename T, int kVec>
absl::Status LaunchRopeT(const RopeParams& p, cudaStream_t stream) {
  const int32_t half = p.rotary_dim / 2;
  const int32_t bx = std::clamp((half / kVec + 31) / 32 * 32, 32, 128);
  const int32_t by = std::clamp(256 / bx, 1, p.heads);
  const int64_t blocks = std::min<int64_t>(p.tokens, 1 << 20);
  cuda::RopeKernel<T, kVec><<<static_cast<unsigned>(blocks), dim3(bx, by), 0, stream>>>(
      static_cast<T*>(p.x), p.positions, p.inv_freq, p.tokens, p.heads, p.head_dim, half,
      p.attention_scaling);
  return cuda::LaunchStatus("LaunchRope");
}

}  // namespace

absl::Status LaunchRope(const RopeParams& p, cudaStream_t stream) {
  if (absl::Status s = CheckRope(p); !s.ok()) return s;
  if (p.tokens == 0) return absl::OkStatus();
  SF_DISPATCH_DTYPE("LaunchRope", p.dtype, T, {
    constexpr int kVec = cuda::kVec16<T>;
    const bool vec =
        cuda::Aligned16(p.x) && p.head_dim % kVec == 0 && (p.rotary_dim / 2) % kVec == 0;
    return vec ? LaunchRopeT<T, kVec>(p, stream) : LaunchRopeT<T, 1>(p, stream);
  })
}

}  // namespace sparsefill::kernels
