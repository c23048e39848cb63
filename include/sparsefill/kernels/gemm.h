// Row-major fp32 GEMM on the CPU, through a BLAS when the build found one (DESIGN §5).
#pragma once

#include <cstdint>

namespace sparsefill::kernels {

enum class Trans : uint8_t { kNo, kYes };

// C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C[m, n], all row-major with leading
// dimensions lda, ldb, ldc (elements). op(X) = X or X^T. Multithreaded inside the BLAS; safe to
// call from several threads at once.
void GemmF32(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
             int64_t ldc);

// True when GemmF32 goes through a BLAS (false: the built-in blocked loop).
bool GemmUsesBlas();

}  // namespace sparsefill::kernels
