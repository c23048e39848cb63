// Rotary position embedding reference, fp32, Hugging Face rotate_half layout:
// for i < rotary_dim / 2, angle = float(pos) * inv_freq[i] (fp32, as transformers' matmul of a
// float position by inv_freq), c = cos(angle) * scaling, s = sin(angle) * scaling,
// x[i] <- x[i] c - x[i + half] s, x[i + half] <- x[i + half] c + x[i] s.
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/rope/rope_check.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kernels/rope.h"

namespace sparsefill::kernels {
absl::Status RopeRef(const RopeParams& p) {
  if (absl::Status s = CheckRope(p); !s.ok()) return s;
  if (p.dtype != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("RopeRef: dtype ", AsAbsl(DTypeName(p.dtype)), " not supported (fp32 only)"));
  }
  float* x = static_cast<float*>(p.x);
  const int64_t half = p.rotary_dim / 2;
  const int64_t token_stride = static_cast<int64_t>(p.heads) * p.head_dim;
#pragma omp parallel
  {
    std::vector<float> cs(half), sn(half);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < p.tokens; ++t) {
      const float pos = static_cast<float>(p.positions[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = pos * p.inv_freq[i];
        cs[i] = std::cos(angle) * p.attention_scaling;
        sn[i] = std::sin(angle) * p.attention_scaling;
      }
      for (int32_t h = 0; h < p.heads; ++h) {
        float* xh = x + t * token_stride + static_cast<int64_t>(h) * p.head_dim;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = xh[i], x2 = xh[i + half];
          xh[i] = x1 * cs[i] - x2 * sn[i];
          xh[i + half] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
