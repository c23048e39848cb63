// Block summaries on the GPU: InfLLM-V2 compressed keys (the mean of kernel_size keys every
// kernel_stride keys) and PHSA's punctuation-mixed representatives. Memory-bound and tiny next to
// the scoring, so one thread per (chunk, KV head, pair of dims) with fp32 sums is enough: each
// warp reads 64 consecutive bf16 of a key row (coalesced), and overlapping chunks re-read keys
// from L2 rather than DRAM.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace sparsefill::kernels::cuda {

constexpr int kSummaryThreads = 256;

__global__ void __launch_bounds__(kSummaryThreads)
    BlockSummaryKernel(const __nv_bfloat162* __restrict__ k,  // [num_kv, kv_heads, head_dim / 2]
                       const uint8_t* __restrict__ punct,     // [num_kv]; null unless mixing
                       __nv_bfloat162* __restrict__ out,      // [count, kv_heads, head_dim / 2]
                       int64_t first_chunk, int64_t count, int64_t k_pos0, int32_t kv_heads,
                       int32_t half_dim, int32_t kernel_size, int32_t kernel_stride, float lambda) {
  const int64_t total = count * kv_heads * half_dim;
  const int64_t row_pairs = static_cast<int64_t>(kv_heads) * half_dim;
  const float inv = 1.0f / static_cast<float>(kernel_size);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = idx / row_pairs;
    const int64_t within = idx % row_pairs;  // head * half_dim + pair
    const int64_t first_key = (first_chunk + c) * kernel_stride - k_pos0;
    float sx = 0.0f, sy = 0.0f, px = 0.0f, py = 0.0f;
    int n_punct = 0;
    for (int32_t j = 0; j < kernel_size; ++j) {
      const int64_t key = first_key + j;
      const float2 v = __bfloat1622float2(k[key * row_pairs + within]);
      sx += v.x;
      sy += v.y;
      if (punct != nullptr && punct[key] != 0) {
        px += v.x;
        py += v.y;
        ++n_punct;
      }
    }
    float rx = sx * inv, ry = sy * inv;
    if (n_punct > 0) {  // only when mixing: punct is null for lambda == 1
      const float pinv = 1.0f / static_cast<float>(n_punct);
      rx = lambda * rx + (1.0f - lambda) * (px * pinv);
      ry = lambda * ry + (1.0f - lambda) * (py * pinv);
    }
    out[idx] = __floats2bfloat162_rn(rx, ry);
  }
}

}  // namespace sparsefill::kernels::cuda
