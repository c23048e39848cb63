// GemmF32 against a naive double-precision loop written here: every transpose combination, alpha
// and beta, sizes off the 3 x 4 tile and the 8-lane groups, leading dimensions wider than a row,
// and the columns of C outside n left alone.
#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kernels/gemm.h"
#include "tests/testing/compare.h"

namespace sparsefill::kernels {
namespace {

using ::sparsefill::testing::AllClose;
using ::sparsefill::testing::FreshSeed;
using ::sparsefill::testing::RandomNormal;

constexpr float kPoison = 1.2345e30f;

TEST(GemmRefTest, MatchesNaiveLoopForEveryTransposeAlphaAndBeta) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{7, 5, 3}, Shape{13, 29, 17}, Shape{64, 48, 64},
                        Shape{50, 130, 257}, Shape{5, 3, 0}}) {
    for (const Trans ta : {Trans::kNo, Trans::kYes}) {
      for (const Trans tb : {Trans::kNo, Trans::kYes}) {
        for (const float beta : {0.0f, 0.5f}) {
          SCOPED_TRACE(::testing::Message() << "m " << s.m << " n " << s.n << " k " << s.k << " ta "
                                            << int(ta) << " tb " << int(tb) << " beta " << beta);
          // op(A) [m, k] stored as A [m, lda] or A^T [k, lda]; the same for B with [k, n].
          const int64_t a_rows = ta == Trans::kNo ? s.m : s.k,
                        a_cols = ta == Trans::kNo ? s.k : s.m;
          const int64_t b_rows = tb == Trans::kNo ? s.k : s.n,
                        b_cols = tb == Trans::kNo ? s.n : s.k;
          const int64_t lda = a_cols + 3, ldb = b_cols + 2, ldc = s.n + 5;
          const std::vector<float> a = RandomNormal(static_cast<size_t>(a_rows * lda + 1), rng);
          const std::vector<float> b = RandomNormal(static_cast<size_t>(b_rows * ldb + 1), rng);
          std::vector<float> c = RandomNormal(static_cast<size_t>(s.m * ldc), rng);
          for (int64_t i = 0; i < s.m; ++i) {
            for (int64_t j = s.n; j < ldc; ++j) c[static_cast<size_t>(i * ldc + j)] = kPoison;
          }
          if (beta == 0.0f) {  // C is not read when beta is 0: a NaN there must not leak in
            for (int64_t i = 0; i < s.m; ++i) {
              c[static_cast<size_t>(i * ldc)] = std::numeric_limits<float>::quiet_NaN();
            }
          }
          std::vector<float> want(static_cast<size_t>(s.m * s.n)), got(want.size());
          for (int64_t i = 0; i < s.m; ++i) {
            for (int64_t j = 0; j < s.n; ++j) {
              double dot = 0.0;
              for (int64_t p = 0; p < s.k; ++p) {
                const double av = ta == Trans::kNo ? a[static_cast<size_t>(i * lda + p)]
                                                   : a[static_cast<size_t>(p * lda + i)];
                const double bv = tb == Trans::kNo ? b[static_cast<size_t>(p * ldb + j)]
                                                   : b[static_cast<size_t>(j * ldb + p)];
                dot += av * bv;
              }
              want[static_cast<size_t>(i * s.n + j)] = static_cast<float>(
                  0.75 * dot + (beta == 0.0f ? 0.0 : beta * c[static_cast<size_t>(i * ldc + j)]));
            }
          }
          GemmF32(ta, tb, s.m, s.n, s.k, 0.75f, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
          for (int64_t i = 0; i < s.m; ++i) {
            for (int64_t j = 0; j < s.n; ++j) {
              got[static_cast<size_t>(i * s.n + j)] = c[static_cast<size_t>(i * ldc + j)];
            }
            for (int64_t j = s.n; j < ldc; ++j) {
              ASSERT_EQ(c[static_cast<size_t>(i * ldc + j)], kPoison)
                  << "row " << i << " col " << j;
            }
          }
          EXPECT_TRUE(AllClose(got, want, 1e-4, 1e-4));
        }
      }
    }
  }
}

}  // namespace
}  // namespace sparsefill::kernels
