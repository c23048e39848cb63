#include "sparsefill/kernels/gemm.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sparsefill::kernels {
namespace {

// Every C element is one dot product of a row of op(A) with a row of op(B)^T, computed by the
// same instruction sequence wherever the element sits: 8 lanes of fused multiply-adds along k
// (the last partial group through a masked load), then a fixed reduction of the lanes. So a row's
// result depends on nothing but its own inputs: not on how many rows came with it nor where it
// sits in the call, which makes a shard's rows bit-identical to the same rows inside the whole
// prompt (tests/unit/engine/shard_test.cc). OpenBLAS (0.3.21) gives no such guarantee: its Zen and
// Haswell kernels round a row differently by its position modulo 12 and by the thread that took
// it, and its small-matrix paths sum in another order.
//
// Tiles of kTi rows x kTj columns keep kTi * kTj accumulators plus kTi A vectors and one B vector
// in the 16 AVX registers; column blocks of B stay in L2 while every row tile passes over them.
constexpr int kTi = 3, kTj = 4;

// A and B as [rows, k] with row strides (op applied by the caller).
struct Operands {
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
};

template <class TileFn>
void ForEachTile(int64_t m, int64_t n, int64_t k, float alpha, const Operands& o, float beta,
                 float* c, int64_t ldc, TileFn tile) {
  const int64_t jb = std::max<int64_t>(
      kTj, std::min<int64_t>(n, (int64_t{48} * 1024 / std::max<int64_t>(k, 1)) / kTj * kTj));
  const int64_t row_tiles = (m + kTi - 1) / kTi, col_blocks = (n + jb - 1) / jb;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t cb = 0; cb < col_blocks; ++cb) {
    for (int64_t rt = 0; rt < row_tiles; ++rt) {
      const int64_t i0 = rt * kTi;
      const float* a[kTi];
      // Edge tiles repeat the last row / column: the same work, results discarded.
      for (int i = 0; i < kTi; ++i) a[i] = o.a + std::min(i0 + i, m - 1) * o.lda;
      const int64_t j_end = std::min(n, (cb + 1) * jb);
      for (int64_t j0 = cb * jb; j0 < j_end; j0 += kTj) {
        const float* b[kTj];
        for (int j = 0; j < kTj; ++j) b[j] = o.b + std::min(j0 + j, n - 1) * o.ldb;
        float dot[kTi][kTj];
        tile(a, b, k, dot);
        for (int i = 0; i < kTi && i0 + i < m; ++i) {
          float* crow = c + (i0 + i) * ldc;
          for (int j = 0; j < kTj && j0 + j < j_end; ++j) {
            crow[j0 + j] =
                beta == 0.0f ? alpha * dot[i][j] : alpha * dot[i][j] + beta * crow[j0 + j];
          }
        }
      }
    }
  }
}

#if defined(__x86_64__)
#define SF_AVX2 __attribute__((target("avx2,fma")))

SF_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

SF_AVX2 void DotTileAvx2(const float* const (&a)[kTi], const float* const (&b)[kTj], int64_t k,
                         float (&dot)[kTi][kTj]) {
  const int64_t k8 = k / 8 * 8;
  __m256 acc[kTi][kTj];
  for (int i = 0; i < kTi; ++i) {
    for (int j = 0; j < kTj; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  for (int64_t p = 0; p < k8; p += 8) {
    __m256 av[kTi];
    for (int i = 0; i < kTi; ++i) av[i] = _mm256_loadu_ps(a[i] + p);
    for (int j = 0; j < kTj; ++j) {
      const __m256 bv = _mm256_loadu_ps(b[j] + p);
      for (int i = 0; i < kTi; ++i) acc[i][j] = _mm256_fmadd_ps(av[i], bv, acc[i][j]);
    }
  }
  if (k8 < k) {
    alignas(32) int32_t lanes[8];
    for (int l = 0; l < 8; ++l) lanes[l] = l < k - k8 ? -1 : 0;
    const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
    __m256 av[kTi];
    for (int i = 0; i < kTi; ++i) av[i] = _mm256_maskload_ps(a[i] + k8, mask);
    for (int j = 0; j < kTj; ++j) {
      const __m256 bv = _mm256_maskload_ps(b[j] + k8, mask);
      for (int i = 0; i < kTi; ++i) acc[i][j] = _mm256_fmadd_ps(av[i], bv, acc[i][j]);
    }
  }
  for (int i = 0; i < kTi; ++i) {
    for (int j = 0; j < kTj; ++j) dot[i][j] = HorizontalSum(acc[i][j]);
  }
}

SF_AVX2 void GemmAvx2(int64_t m, int64_t n, int64_t k, float alpha, const Operands& o, float beta,
                      float* c, int64_t ldc) {
  ForEachTile(m, n, k, alpha, o, beta, c, ldc, DotTileAvx2);
}

bool HasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

// Without AVX2: the same lane structure in plain C++ (one code path per process either way).
void DotTilePortable(const float* const (&a)[kTi], const float* const (&b)[kTj], int64_t k,
                     float (&dot)[kTi][kTj]) {
  for (int i = 0; i < kTi; ++i) {
    for (int j = 0; j < kTj; ++j) {
      float lane[8] = {};
      for (int64_t p = 0; p < k; ++p) lane[p % 8] += a[i][p] * b[j][p];
      dot[i][j] =
          ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
    }
  }
}

// A column-major-along-k operand (element (r, p) at x[p * ld + r]) packed as `rows` rows of k.
const float* TransposeToRows(const float* x, int64_t ld, int64_t rows, int64_t k,
                             std::vector<float>& packed) {
  packed.resize(static_cast<size_t>(rows * std::max<int64_t>(k, 1)));
  for (int64_t p = 0; p < k; ++p) {
    for (int64_t r = 0; r < rows; ++r) packed[static_cast<size_t>(r * k + p)] = x[p * ld + r];
  }
  return packed.data();
}

}  // namespace

void GemmF32(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
             int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  // Both operands as rows along k: op(A) [m, k], op(B)^T [n, k] (B^T rows when trans_b).
  std::vector<float> at, bt;
  Operands o{a, lda, b, ldb};
  if (trans_a == Trans::kYes) {
    o.a = TransposeToRows(a, lda, m, k, at);
    o.lda = k;
  }
  if (trans_b == Trans::kNo) {
    o.b = TransposeToRows(b, ldb, n, k, bt);
    o.ldb = k;
  }
#if defined(__x86_64__)
  if (HasAvx2Fma()) {
    GemmAvx2(m, n, std::max<int64_t>(k, 0), alpha, o, beta, c, ldc);
    return;
  }
#endif
  ForEachTile(m, n, std::max<int64_t>(k, 0), alpha, o, beta, c, ldc, DotTilePortable);
}

}  // namespace sparsefill::kernels
