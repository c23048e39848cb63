// Device-side element types for the CUDA kernels: fp32 <-> storage conversions, 16-byte vector
// loads, and the one dtype dispatch (STYLE §5). Private to kernels/.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/common/dtype.h"

namespace sparsefill::kernels::cuda {

__device__ __forceinline__ float ToF32(float x) { return x; }
__device__ __forceinline__ float ToF32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToF32(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T FromF32(float x);
template <>
__device__ __forceinline__ float FromF32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromF32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half FromF32<__half>(float x) {
  return __float2half_rn(x);
}

// kN elements of T moved as one 16-byte access when kN * sizeof(T) == 16, else element by
// element. Callers choose kN = 16 / sizeof(T) only when pointers and strides are aligned.
template <typename T, int kN>
struct alignas(kN * sizeof(T) == 16 ? 16 : alignof(T)) Pack {
  T v[kN];
};

template <typename T, int kN>
__device__ __forceinline__ void LoadF32(const T* src, float (&dst)[kN]) {
  Pack<T, kN> p = *reinterpret_cast<const Pack<T, kN>*>(src);
#pragma unroll
  for (int i = 0; i < kN; ++i) dst[i] = ToF32(p.v[i]);
}

template <typename T, int kN>
__device__ __forceinline__ void StoreF32(T* dst, const float (&src)[kN]) {
  Pack<T, kN> p;
#pragma unroll
  for (int i = 0; i < kN; ++i) p.v[i] = FromF32<T>(src[i]);
  *reinterpret_cast<Pack<T, kN>*>(dst) = p;
}

// Elements of T per 16-byte access.
template <typename T>
constexpr int kVec16 = static_cast<int>(16 / sizeof(T));

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The status a launcher returns after a launch: OK, or Internal naming the op and CUDA's error.
inline absl::Status LaunchStatus(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(op, ": kernel launch failed: ", cudaGetErrorName(err),
                                          " (", cudaGetErrorString(err), ")"));
}

}  // namespace sparsefill::kernels::cuda

// Runs the statements in `...` with `T` bound to the device type of `dtype` (float,
// __nv_bfloat16, __half); any other value returns InvalidArgument naming it. The body should
// return.
#define SF_DISPATCH_DTYPE(op, dtype, T, ...)                                                     \
  switch (dtype) {                                                                               \
    case ::sparsefill::DType::kF32: {                                                            \
      using T = float;                                                                           \
      __VA_ARGS__                                                                                \
    }                                                                                            \
    case ::sparsefill::DType::kBF16: {                                                           \
      using T = __nv_bfloat16;                                                                   \
      __VA_ARGS__                                                                                \
    }                                                                                            \
    case ::sparsefill::DType::kF16: {                                                            \
      using T = __half;                                                                          \
      __VA_ARGS__                                                                                \
    }                                                                                            \
    default:                                                                                     \
      return ::absl::InvalidArgumentError(::absl::StrCat(                                        \
          op, ": unsupported dtype ", static_cast<int>(dtype), " (supported: F32, BF16, F16)")); \
  }
