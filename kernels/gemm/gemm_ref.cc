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

#if SPARSEFILL_HAVE_BLAS
// OpenBLAS (0.3.x) sends small products (m * n * k <= 1e6, and for our row-major A . B^T also
// m * n <= 1200) to "small matrix" kernels whose summation order differs from its blocked
// kernels, so a row's result depended on how many rows came with it: a 16-token shard's K
// projection differed in the last bits from the same rows inside a 1200-token one. Padding the
// row count with zero rows past that size keeps every call on the blocked kernels, whose
// per-element order does not depend on m (tests/unit/engine/shard_test.cc checks row counts
// 1 .. 40 at several offsets against one 1203-row call). Costs at most ~1e6 extra multiply-adds
// per small call.
constexpr double kSmallGemmMnk = 1e6;

int64_t RowsPastSmallPath(int64_t m, int64_t n, int64_t k) {
  const double per_row = static_cast<double>(n) * static_cast<double>(std::max<int64_t>(k, 1));
  if (static_cast<double>(m) * per_row > kSmallGemmMnk) return m;
  return static_cast<int64_t>(kSmallGemmMnk / per_row) + 1;
}
#endif

}  // namespace

void GemmF32(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
             int64_t ldc) {
  if (m <= 0 || n <= 0) return;
#if SPARSEFILL_HAVE_BLAS
  if (const int64_t m_pad = RowsPastSmallPath(m, n, k); m_pad != m && k > 0) {
    // op(A) rows into a zero-padded [m_pad, k] copy; C rows into [m_pad, n].
    std::vector<float> ap(static_cast<size_t>(m_pad * k), 0.0f);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t p = 0; p < k; ++p) {
        ap[static_cast<size_t>(i * k + p)] =
            trans_a == Trans::kNo ? a[i * lda + p] : a[p * lda + i];
      }
    }
    std::vector<float> cp(static_cast<size_t>(m_pad * n), 0.0f);
    if (beta != 0.0f) {
      for (int64_t i = 0; i < m; ++i) std::copy_n(c + i * ldc, n, cp.begin() + i * n);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b == Trans::kNo ? CblasNoTrans : CblasTrans,
                static_cast<int>(m_pad), static_cast<int>(n), static_cast<int>(k), alpha, ap.data(),
                static_cast<int>(k), b, static_cast<int>(ldb), beta, cp.data(),
                static_cast<int>(n));
    for (int64_t i = 0; i < m; ++i) std::copy_n(cp.begin() + i * n, n, c + i * ldc);
    return;
  }
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
