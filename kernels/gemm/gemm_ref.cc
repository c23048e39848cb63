#include "sparsefill/kernels/gemm.h"

#include <algorithm>
#include <vector>

#if SPARSEFILL_HAVE_BLAS
#include <cblas.h>
#endif

namespace sparsefill::kernels {
namespace {

#if !SPARSEFILL_HAVE_BLAS
// Fallback for machines without a BLAS: C += alpha * op(A) op(B), blocked for the cache.
void GemmLoop(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
              int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  constexpr int64_t kBk = 256;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    float* crow = c + i * ldc;
    for (int64_t p0 = 0; p0 < k; p0 += kBk) {
      const int64_t p1 = std::min(k, p0 + kBk);
      for (int64_t p = p0; p < p1; ++p) {
        const float av = alpha * (ta == Trans::kNo ? a[i * lda + p] : a[p * lda + i]);
        if (tb == Trans::kNo) {
          const float* bp = b + p * ldb;
          for (int64_t j = 0; j < n; ++j) crow[j] += av * bp[j];
        } else {
          for (int64_t j = 0; j < n; ++j) crow[j] += av * b[j * ldb + p];
        }
      }
    }
  }
}
#endif

}  // namespace

void GemmF32(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
             int64_t ldc) {
  if (m <= 0 || n <= 0) return;
#if SPARSEFILL_HAVE_BLAS
  cblas_sgemm(CblasRowMajor, trans_a == Trans::kNo ? CblasNoTrans : CblasTrans,
              trans_b == Trans::kNo ? CblasNoTrans : CblasTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
#else
  for (int64_t i = 0; i < m; ++i) {
    float* crow = c + i * ldc;
    if (beta == 0.0f) {
      std::fill(crow, crow + n, 0.0f);
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < n; ++j) crow[j] *= beta;
    }
  }
  if (k > 0) GemmLoop(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, c, ldc);
#endif
}

bool GemmUsesBlas() { return SPARSEFILL_HAVE_BLAS != 0; }

}  // namespace sparsefill::kernels
