// SwiGLU: out = silu(gate) * up.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/kernels/stream.h"

namespace sparsefill::kernels {

struct SwiGluParams {
  const void* gate = nullptr;  // [rows, dim], row stride gate_stride elements; dtype
  const void* up = nullptr;    // [rows, dim], row stride up_stride elements; dtype
  void* out = nullptr;         // [rows, dim], row stride out_stride elements; may alias gate
  int64_t rows = 0;
  int32_t dim = 0;
  int64_t gate_stride = 0;
  int64_t up_stride = 0;
  int64_t out_stride = 0;
  DType dtype = DType::kF32;
};

[[nodiscard]] absl::Status SwiGluRef(const SwiGluParams& p);  // fp32 only
// CUDA (builds with the CUDA backend): dtype F32, BF16 or F16, fp32 math, asynchronous on
// `stream`. InvalidArgument for bad parameters (checked before any CUDA call), Internal naming
// the op when the launch fails. Nothing to do (0 rows) launches nothing.
[[nodiscard]] absl::Status LaunchSwiGlu(const SwiGluParams& p, cudaStream_t stream);

}  // namespace sparsefill::kernels
