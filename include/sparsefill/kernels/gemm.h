// Row-major fp32 GEMM on the CPU (DESIGN §5): our own kernel, so that results are reproducible
// bit for bit whatever rows come with a row (shards against the whole prompt).
#pragma once

#include <cstdint>

namespace sparsefill::kernels {

enum class Trans : uint8_t { kNo, kYes };

// C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C[m, n], all row-major with leading
// dimensions lda, ldb, ldc (elements). op(X) = X or X^T. Each C element is one dot product along
// k computed the same way wherever it sits, so a row's result does not depend on m, n or its
// position in the call. Multithreaded with OpenMP; safe to call from several threads at once.
void GemmF32(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
             int64_t ldc);

}  // namespace sparsefill::kernels
