// Warp-level building blocks of the flash attention kernels (sm_80+ instructions, used on sm_90a):
// cp.async with zero fill, ldmatrix, mma.sync m16n8k16 bf16 -> fp32, the XOR swizzle of the
// shared-memory tiles, and fast exp2. Private to kernels/.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace sparsefill::kernels::cuda::flash {

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1. `valid` false writes 16 zero bytes and reads nothing,
// which is how padding rows (past the sequence, unselected slots) become exact zeros.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most kPending committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a (16x16, row-major fragment) * b (16x8, column-major fragment), fp32 accumulators.
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to bf16 and packed (lo in the low half), the A-fragment element order.
__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  static_assert(sizeof(v) == sizeof(u));
  __builtin_memcpy(&u, &v, sizeof(u));
  return u;
}

// 2^x with one MUFU instruction; exp2(-inf) = +0, which is what masked scores rely on.
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows, kD] bf16 tile. Chunks are
// XOR-swizzled with the row's low three bits so that the 8 rows one ldmatrix phase reads (same
// logical chunk) fall into 8 different bank groups.
template <int kD>
__device__ __forceinline__ int Swizzle(int row, int chunk) {
  static_assert(kD % 64 == 0, "rows must hold a multiple of 8 chunks for the swizzle");
  return row * kD + ((chunk ^ (row & 7)) << 3);
}

}  // namespace sparsefill::kernels::cuda::flash
