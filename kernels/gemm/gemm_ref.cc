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
// A row's result must not depend on how many rows came with it (a shard's rows against the same
// rows inside the whole prompt: tests/unit/engine/shard_test.cc checks row counts 1 .. 40 at
// several offsets against one 1203-row call). OpenBLAS (0.3.x) breaks that in two ways:
//  - it sends small products (m * n * k <= 1e6, and for our row-major A . B^T also m * n <= 1200)
//    to "small matrix" kernels whose summation order differs from its blocked kernels;
//  - its blocked kernels compute the rows left over past the last full register tile with other
//    edge kernels, which on some cores (Prescott, the fallback when the CPU is not recognised,
//    and Haswell) round differently.
// So every call is made of whole kRowQuantum-row tiles past the small path: the rows up to the
// last multiple of kRowQuantum in one call, the rest copied into a zero-padded block.
constexpr double kSmallGemmMnk = 1e6;
constexpr int64_t kRowQuantum = 64;  // a multiple of every sgemm register tile's row count

int64_t RoundUpRows(int64_t m) { return (m + kRowQuantum - 1) / kRowQuantum * kRowQuantum; }

bool TakesSmallPath(int64_t m, int64_t n, int64_t k) {
  return static_cast<double>(m) * static_cast<double>(n) *
             static_cast<double>(std::max<int64_t>(k, 1)) <=
         kSmallGemmMnk;
}

// Rows the zero-padded block of `m` rows needs: whole tiles, past the small path.
int64_t PaddedRows(int64_t m, int64_t n, int64_t k) {
  const double per_row = static_cast<double>(n) * static_cast<double>(std::max<int64_t>(k, 1));
  const int64_t past_small = static_cast<int64_t>(kSmallGemmMnk / per_row) + 1;
  return RoundUpRows(std::max(m, past_small));
}

void Sgemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a == Trans::kNo ? CblasNoTrans : CblasTrans,
              trans_b == Trans::kNo ? CblasNoTrans : CblasTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}
#endif

}  // namespace

void GemmF32(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
             int64_t ldc) {
  if (m <= 0 || n <= 0) return;
#if SPARSEFILL_HAVE_BLAS
  if (k <= 0) {
    Sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  int64_t done = m / kRowQuantum * kRowQuantum;
  if (done > 0 && TakesSmallPath(done, n, k)) done = 0;
  if (done > 0) Sgemm(trans_a, trans_b, done, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const int64_t rest = m - done;
  if (rest == 0) return;
  // The remaining op(A) rows into a zero-padded [m_pad, k] copy; their C rows into [m_pad, n].
  const int64_t m_pad = PaddedRows(rest, n, k);
  std::vector<float> ap(static_cast<size_t>(m_pad * k), 0.0f);
  for (int64_t i = 0; i < rest; ++i) {
    const int64_t row = done + i;
    for (int64_t p = 0; p < k; ++p) {
      ap[static_cast<size_t>(i * k + p)] =
          trans_a == Trans::kNo ? a[row * lda + p] : a[p * lda + row];
    }
  }
  std::vector<float> cp(static_cast<size_t>(m_pad * n), 0.0f);
  float* c_rest = c + done * ldc;
  if (beta != 0.0f) {
    for (int64_t i = 0; i < rest; ++i) std::copy_n(c_rest + i * ldc, n, cp.begin() + i * n);
  }
  Sgemm(Trans::kNo, trans_b, m_pad, n, k, alpha, ap.data(), k, b, ldb, beta, cp.data(), n);
  for (int64_t i = 0; i < rest; ++i) std::copy_n(cp.begin() + i * n, n, c_rest + i * ldc);
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
