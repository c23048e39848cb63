// RoPE device code: one block per token (grid-stride); threadIdx.x walks the rotary pairs, so
// each cos/sin is computed once per token and reused for the heads that threadIdx.y walks.
#pragma once

#include <cstdint>

#include "kernels/common/cuda_dtype.cuh"

namespace sparsefill::kernels::cuda {

// kVec: consecutive pairs per thread (16-byte accesses when x and both halves are aligned).
template <typename T, int kVec>
__global__ void RopeKernel(T* x,                      // [tokens, heads, head_dim], in place
                           const int64_t* positions,  // [tokens]
                           const float* inv_freq,     // [rotary_dim / 2]
                           int64_t tokens, int32_t heads, int32_t head_dim, int32_t half,
                           float scaling) {
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    // fp32 position times fp32 inv_freq, as transformers does; sincosf is the full-range
    // accurate version (no fast math), which large positions need.
    const float pos = static_cast<float>(positions[t]);
    T* xt = x + t * static_cast<int64_t>(heads) * head_dim;
    for (int i0 = threadIdx.x * kVec; i0 < half; i0 += blockDim.x * kVec) {
      float c[kVec], s[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        sincosf(__fmul_rn(pos, inv_freq[i0 + i]), &s[i], &c[i]);
        c[i] *= scaling;
        s[i] *= scaling;
      }
      for (int h = threadIdx.y; h < heads; h += blockDim.y) {
        T* xh = xt + static_cast<int64_t>(h) * head_dim + i0;
        float a[kVec], b[kVec], ra[kVec], rb[kVec];
        LoadF32<T, kVec>(xh, a);
        LoadF32<T, kVec>(xh + half, b);
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          ra[i] = a[i] * c[i] - b[i] * s[i];
          rb[i] = b[i] * c[i] + a[i] * s[i];
        }
        StoreF32<T, kVec>(xh, ra);
        StoreF32<T, kVec>(xh + half, rb);
      }
    }
  }
}

}  // namespace sparsefill::kernels::cuda
