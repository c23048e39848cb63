// Small vectorisable building blocks shared by the CPU attention references (dense and sparse).
// Private to kernels/: not a public header.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

namespace sparsefill::kernels::cpu {

// 2^x for x <= 126, exactly 0 below -126 (so that masked scores, -inf, give exact zeros).
// A degree-7 Taylor polynomial of e^(f ln2) on f in [-0.5, 0.5] (relative error < 5e-9 before
// rounding): within ~1 ulp of libm; Exp2Sub8 below evaluates the same polynomial eight at a
// time (std::exp2 has no vector form without -ffast-math). This scalar form
// is for single values (the online-softmax rescale factor).
inline float FastExp2(float x) {
  const float y = std::min(std::max(x, -126.0f), 126.0f);
  // Round to nearest by the 1.5 * 2^23 trick: no floor/nearbyint, which need SSE4.1 vectors.
  const float n = (y + 12582912.0f) - 12582912.0f;
  const float f = y - n;
  float p = 1.5252733804059841e-05f;
  p = p * f + 1.5403530393381606e-04f;
  p = p * f + 1.3333558146428443e-03f;
  p = p * f + 9.6181291076284772e-03f;
  p = p * f + 5.5504108664821580e-02f;
  p = p * f + 2.4022650695910071e-01f;
  p = p * f + 6.9314718055994531e-01f;
  p = p * f + 1.0f;
  const int32_t bits = std::bit_cast<int32_t>(p) + (static_cast<int32_t>(n) << 23);
  const float r = std::bit_cast<float>(bits);
  return x < -126.0f ? 0.0f : r;
}

// Register-blocked micro-kernel: C[kMr, 16] (+)= A[kMr, k] * B[k, 16].
// A row-major with leading dimension lda; B row-major with leading dimension ldb (16 used
// columns per row); C row-major with leading dimension ldc. accumulate=false overwrites C.
// GCC/Clang vector types keep the kMr x 16 accumulators in registers, which plain loops do not
// reliably get; they never appear in a signature (that would change the ABI without AVX).
template <int kMr>
inline void MicroKernel16(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                          float* c, int64_t ldc, bool accumulate) {
  typedef float V8 __attribute__((vector_size(32)));
  V8 acc[kMr][2];
  for (int i = 0; i < kMr; ++i) {
    if (accumulate) {
      std::memcpy(&acc[i][0], c + i * ldc, 32);
      std::memcpy(&acc[i][1], c + i * ldc + 8, 32);
    } else {
      acc[i][0] = V8{};
      acc[i][1] = V8{};
    }
  }
  for (int64_t p = 0; p < k; ++p) {
    V8 b0, b1;
    std::memcpy(&b0, b + p * ldb, 32);
    std::memcpy(&b1, b + p * ldb + 8, 32);
    for (int i = 0; i < kMr; ++i) {
      const float av = a[i * lda + p];
      acc[i][0] += av * b0;
      acc[i][1] += av * b1;
    }
  }
  for (int i = 0; i < kMr; ++i) {
    std::memcpy(c + i * ldc, &acc[i][0], 32);
    std::memcpy(c + i * ldc + 8, &acc[i][1], 32);
  }
}

// C[m, n] (+)= A[m, k] * B[k, n] with m a multiple of kMr and n a multiple of 16 (callers pad).
// B is read in 16-column blocks: block jb starts at b + jb * b_block_stride and has rows ldb
// apart, so B may be a plain row-major matrix (b_block_stride 16) or packed panels.
template <int kMr>
inline void TileGemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                     int64_t ldb, int64_t b_block_stride, float* c, int64_t ldc, bool accumulate) {
  for (int64_t j = 0; j < n; j += 16) {
    const float* bj = b + (j / 16) * b_block_stride;
    for (int64_t i = 0; i < m; i += kMr) {
      MicroKernel16<kMr>(k, a + i * lda, lda, bj, ldb, c + i * ldc + j, ldc, accumulate);
    }
  }
}

// GCC's vectoriser leaves loops with float compares scalar under the default -ftrapping-math, so
// the softmax loops below use vector types directly. n is a multiple of 8 for all of them.
namespace detail {
typedef float V8 __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));

inline float HorizontalSum(const V8& v) {
  float lanes[8];
  std::memcpy(lanes, &v, 32);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}
}  // namespace detail

// max(s[0 .. n)), n a multiple of 8.
inline float RowMax8(const float* s, int64_t n) {
  using detail::V8;
  V8 m0 = V8{} - __builtin_inff(), m1 = m0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    V8 a, b;
    std::memcpy(&a, s + j, 32);
    std::memcpy(&b, s + j + 8, 32);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  if (j < n) {
    V8 a;
    std::memcpy(&a, s + j, 32);
    m0 = a > m0 ? a : m0;
  }
  m0 = m1 > m0 ? m1 : m0;
  float lanes[8];
  std::memcpy(lanes, &m0, 32);
  float m = lanes[0];
  for (int i = 1; i < 8; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}

// s[0 .. 8) = FastExp2(s - m), added to sum.
inline void Exp2Sub8(float* s, float m, detail::V8& sum) {
  using detail::V8;
  using detail::V8i;
  V8 x;
  std::memcpy(&x, s, 32);
  x -= m;
  V8 y = x < -126.0f ? V8{} - 126.0f : x;
  y = y > 126.0f ? V8{} + 126.0f : y;
  const V8 n = (y + 12582912.0f) - 12582912.0f;
  const V8 f = y - n;
  V8 p = V8{} + 1.5252733804059841e-05f;
  p = p * f + 1.5403530393381606e-04f;
  p = p * f + 1.3333558146428443e-03f;
  p = p * f + 9.6181291076284772e-03f;
  p = p * f + 5.5504108664821580e-02f;
  p = p * f + 2.4022650695910071e-01f;
  p = p * f + 6.9314718055994531e-01f;
  p = p * f + 1.0f;
  V8i bits;
  std::memcpy(&bits, &p, 32);
  bits += __builtin_convertvector(n, V8i) << 23;
  V8 e;
  std::memcpy(&e, &bits, 32);
  e = x < -126.0f ? V8{} : e;
  std::memcpy(s, &e, 32);
  sum += e;
}

// s[j] = FastExp2(s[j] - m) for j < n (a multiple of 8); returns their sum.
inline float Exp2SubSum8(float* s, int64_t n, float m) {
  detail::V8 sum0 = detail::V8{}, sum1 = detail::V8{};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    Exp2Sub8(s + j, m, sum0);
    Exp2Sub8(s + j + 8, m, sum1);
  }
  if (j < n) Exp2Sub8(s + j, m, sum0);
  return detail::HorizontalSum(sum0 + sum1);
}

// Dot product (no compares inside, so `omp simd` vectorises it, horizontal sum included).
inline float Dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

}  // namespace sparsefill::kernels::cpu
