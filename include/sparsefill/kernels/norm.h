// RMSNorm over the last dimension (also used per head for Qwen3's q/k-norm).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/kernels/stream.h"

namespace sparsefill::kernels {

struct RmsNormParams {
  const void* x = nullptr;       // [rows, dim], row i at x + i * x_stride elements; dtype
  const void* weight = nullptr;  // [dim]; dtype
  void* out = nullptr;           // [rows, dim], row i at out + i * out_stride elements; may == x
  int64_t rows = 0;
  int32_t dim = 0;
  int64_t x_stride = 0;    // elements between rows of x (>= dim)
  int64_t out_stride = 0;  // elements between rows of out (>= dim)
  float eps = 1e-6f;
  DType dtype = DType::kF32;  // of x, weight and out
};

// out = x / sqrt(mean(x^2) + eps) * weight, accumulated in fp32 (Hugging Face order:
// normalise in fp32, round to dtype, then multiply by the weight).
[[nodiscard]] absl::Status RmsNormRef(const RmsNormParams& p);  // fp32 only
// CUDA (builds with the CUDA backend): dtype F32, BF16 or F16, fp32 math, asynchronous on
// `stream`. InvalidArgument for bad parameters (checked before any CUDA call), Internal naming
// the op when the launch fails. Nothing to do (0 rows) launches nothing.
[[nodiscard]] absl::Status LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream);

}  // namespace sparsefill::kernels
