// RMSNorm device code: one row per warp (short rows) or per 256-thread block (long rows),
// fp32 accumulation, Hugging Face rounding order (normalise, round to T, multiply by weight).
#pragma once

#include <cstdint>

#include "kernels/common/cuda_dtype.cuh"

namespace sparsefill::kernels::cuda {

constexpr int kRmsNormBlock = 256;

template <int kRowThreads>
__device__ __forceinline__ float RowSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if constexpr (kRowThreads > 32) {
    static_assert(kRowThreads == kRmsNormBlock, "a multi-warp row spans the whole block");
    __shared__ float partial[kRowThreads / 32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // partial[] may still be read by the previous row
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < kRowThreads / 32 ? partial[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  }
  return v;
}

// kVec: elements per access (16 bytes when every row start is 16-byte aligned, else 1).
template <typename T, int kVec, int kRowThreads>
__global__ void __launch_bounds__(kRmsNormBlock)
    RmsNormKernel(const T* __restrict__ x,       // [rows, dim], row stride x_stride
                  const T* __restrict__ weight,  // [dim]
                  T* out,                        // [rows, dim], row stride out_stride; may == x
                  int64_t rows, int32_t dim, int64_t x_stride, int64_t out_stride, float eps) {
  static_assert(kRmsNormBlock % kRowThreads == 0);
  constexpr int kRowsPerBlock = kRmsNormBlock / kRowThreads;
  const int t = threadIdx.x % kRowThreads;
  const int64_t first =
      static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kRowThreads;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  // Every thread of a multi-warp row runs the same trip count (RowSum synchronises the block).
  for (int64_t row = first; row < rows; row += step) {
    const T* xr = x + row * x_stride;
    T* orow = out + row * out_stride;
    float ss = 0.0f;
    for (int c = t * kVec; c < dim; c += kRowThreads * kVec) {
      float v[kVec];
      LoadF32<T, kVec>(xr + c, v);
#pragma unroll
      for (int i = 0; i < kVec; ++i) ss += v[i] * v[i];
    }
    ss = RowSum<kRowThreads>(ss);
    const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
    for (int c = t * kVec; c < dim; c += kRowThreads * kVec) {
      float v[kVec], w[kVec];
      LoadF32<T, kVec>(xr + c, v);
      LoadF32<T, kVec>(weight + c, w);
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = w[i] * ToF32(FromF32<T>(v[i] * inv));
      StoreF32<T, kVec>(orow + c, v);
    }
  }
}

}  // namespace sparsefill::kernels::cuda
