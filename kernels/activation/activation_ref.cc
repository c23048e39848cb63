// SwiGLU reference, fp32: out = silu(gate) * up with silu(x) = x / (1 + exp(-x)), as torch's
// F.silu computes it.
#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/activation/activation_check.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kernels/activation.h"

namespace sparsefill::kernels {
absl::Status SwiGluRef(const SwiGluParams& p) {
  if (absl::Status s = CheckSwiGlu(p); !s.ok()) return s;
  if (p.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("SwiGluRef: dtype ", AsAbsl(DTypeName(p.dtype)),
                                                   " not supported (fp32 only)"));
  }
  const float* gate = static_cast<const float*>(p.gate);
  const float* up = static_cast<const float*>(p.up);
  float* out = static_cast<float*>(p.out);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* g = gate + r * p.gate_stride;
    const float* u = up + r * p.up_stride;
    float* o = out + r * p.out_stride;
    for (int32_t c = 0; c < p.dim; ++c) o[c] = g[c] / (1.0f + std::exp(-g[c])) * u[c];
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
