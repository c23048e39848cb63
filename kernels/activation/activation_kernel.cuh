// SwiGLU device code: grid-stride over (row, vector) pairs, fp32 math, one rounding at the end.
#pragma once

#include <cstdint>

#include "kernels/common/cuda_dtype.cuh"

namespace sparsefill::kernels::cuda {

template <typename T, int kVec>
__global__ void SwiGluKernel(const T* gate,  // [rows, dim], row stride gate_stride
                             const T* up,    // [rows, dim], row stride up_stride
                             T* out,         // [rows, dim], row stride out_stride; may alias
                             int64_t rows, int32_t dim, int64_t gate_stride, int64_t up_stride,
                             int64_t out_stride) {
  const int64_t per_row = dim / kVec;
  const int64_t total = rows * per_row;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / per_row;
    const int64_t c = (idx % per_row) * kVec;
    float g[kVec], u[kVec];
    LoadF32<T, kVec>(gate + r * gate_stride + c, g);
    LoadF32<T, kVec>(up + r * up_stride + c, u);
#pragma unroll
    for (int i = 0; i < kVec; ++i) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    StoreF32<T, kVec>(out + r * out_stride + c, g);
  }
}

}  // namespace sparsefill::kernels::cuda
