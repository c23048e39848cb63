// RMSNorm reference, fp32, with Hugging Face's semantics (Qwen3RMSNorm / LlamaRMSNorm):
// out = weight * (x * rsqrt(mean(x^2) + eps)).
#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/norm/norm_check.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kernels/norm.h"

namespace sparsefill::kernels {
absl::Status RmsNormRef(const RmsNormParams& p) {
  if (absl::Status s = CheckRmsNorm(p); !s.ok()) return s;
  if (p.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("RmsNormRef: dtype ", AsAbsl(DTypeName(p.dtype)),
                                                   " not supported (fp32 only)"));
  }
  const float* x = static_cast<const float*>(p.x);
  const float* w = static_cast<const float*>(p.weight);
  float* out = static_cast<float*>(p.out);
  const int64_t dim = p.dim;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* xr = x + r * p.x_stride;
    float* orow = out + r * p.out_stride;
    // Double accumulation: torch's fp32 mean sums pairwise, which a long fp32 chain is not.
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < dim; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const float mean = static_cast<float>(ss / static_cast<double>(dim));
    const float inv = 1.0f / std::sqrt(mean + p.eps);
#pragma omp simd
    for (int64_t c = 0; c < dim; ++c) orow[c] = w[c] * (xr[c] * inv);
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
