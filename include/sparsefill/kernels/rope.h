// Rotary position embedding, Hugging Face "rotate_half" layout (pairs i and i + rotary_dim/2).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/kernels/stream.h"

namespace sparsefill::kernels {

struct RopeParams {
  void* x = nullptr;                   // [tokens, heads, head_dim], rotated in place; dtype
  const int64_t* positions = nullptr;  // [tokens] absolute positions (device memory for LaunchRope)
  const float* inv_freq = nullptr;     // [rotary_dim / 2], already scaled (Llama 3, LongRoPE);
                                       // device memory for LaunchRope
  int64_t tokens = 0;
  int32_t heads = 0;
  int32_t head_dim = 0;
  int32_t rotary_dim = 0;          // even, <= head_dim; dims past it are left as they are
  float attention_scaling = 1.0f;  // multiplies cos and sin (LongRoPE's mscale)
  DType dtype = DType::kF32;
};

// angle = float(position) * inv_freq[i] in fp32 (as transformers computes it);
// x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin.
[[nodiscard]] absl::Status RopeRef(const RopeParams& p);  // fp32 only
// CUDA (builds with the CUDA backend): dtype F32, BF16 or F16, fp32 math, asynchronous on
// `stream`. InvalidArgument for bad parameters (checked before any CUDA call), Internal naming
// the op when the launch fails. Nothing to do (0 rows) launches nothing.
[[nodiscard]] absl::Status LaunchRope(const RopeParams& p, cudaStream_t stream);

}  // namespace sparsefill::kernels
