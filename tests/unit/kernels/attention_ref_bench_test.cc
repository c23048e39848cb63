// Wall time of the CPU attention references at 16K tokens (the CPU backend's hot path).
// Printed, not asserted: the machine is shared. Correctness is attention_ref_test's job; here a
// few output rows are checked against a naive double loop so the timed run is a real one (fp32
// sums over 16K keys: a looser bound than the small shapes of attention_ref_test).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kernels/attention.h"
#include "tests/testing/compare.h"

namespace sparsefill::kernels {
namespace {

using ::sparsefill::testing::FreshSeed;
using ::sparsefill::testing::RandomNormal;
using ::sparsefill::testing::RelativeL2Near;

constexpr int64_t kTokens = 16384;
constexpr int32_t kQHeads = 4, kKvHeads = 2, kHeadDim = 64;

struct Problem {
  std::vector<float> q, k, v, out;
  AttentionParams p;
  explicit Problem(Rng& rng)
      : q(RandomNormal(kTokens * kQHeads * kHeadDim, rng)),
        k(RandomNormal(kTokens * kKvHeads * kHeadDim, rng)),
        v(RandomNormal(kTokens * kKvHeads * kHeadDim, rng)),
        out(kTokens * kQHeads * kHeadDim) {
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.out = out.data();
    p.num_q = p.num_kv = kTokens;
    p.q_heads = kQHeads;
    p.kv_heads = kKvHeads;
    p.head_dim = kHeadDim;
    p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  }
};

// Naive double attention for query i, head h, over the keys for which visible(j) holds.
template <typename Visible>
std::vector<float> NaiveRow(const Problem& pr, int64_t i, int32_t h, Visible visible) {
  const int32_t hk = h / (kQHeads / kKvHeads);
  const float* qr = pr.q.data() + (i * kQHeads + h) * kHeadDim;
  std::vector<double> s(i + 1), acc(kHeadDim, 0.0);
  double mx = -1e300, sum = 0;
  for (int64_t j = 0; j <= i; ++j) {
    if (!visible(j)) continue;
    double dot = 0;
    for (int c = 0; c < kHeadDim; ++c)
      dot += double(qr[c]) * pr.k[(j * kKvHeads + hk) * kHeadDim + c];
    s[j] = dot * pr.p.scale;
    mx = std::max(mx, s[j]);
  }
  for (int64_t j = 0; j <= i; ++j) {
    if (!visible(j)) continue;
    const double e = std::exp(s[j] - mx);
    sum += e;
    for (int c = 0; c < kHeadDim; ++c) acc[c] += e * pr.v[(j * kKvHeads + hk) * kHeadDim + c];
  }
  std::vector<float> r(kHeadDim);
  for (int c = 0; c < kHeadDim; ++c) r[c] = static_cast<float>(acc[c] / sum);
  return r;
}

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(AttentionRefBench, Dense16K) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  Problem pr(rng);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(DenseAttentionRef(pr.p).ok());
  const double secs = Seconds(t0);
  std::printf(
      "[bench] DenseAttentionRef 16K tokens, 4 q heads, 2 kv heads, d 64, causal: %.3f s "
      "(%d threads)\n",
      secs, omp_get_max_threads());
  RecordProperty("dense_16k_seconds", std::to_string(secs));
  for (int64_t i : {int64_t{0}, int64_t{4097}, kTokens - 1}) {
    for (int32_t h = 0; h < kQHeads; ++h) {
      const std::vector<float> want = NaiveRow(pr, i, h, [](int64_t) { return true; });
      EXPECT_TRUE(RelativeL2Near({pr.out.data() + (i * kQHeads + h) * kHeadDim, size_t{kHeadDim}},
                                 want, 2e-5))
          << "query " << i << " head " << h;
    }
  }
}

TEST(AttentionRefBench, Sparse16K57BlocksOf16) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  Problem pr(rng);
  constexpr int32_t kBlock = 16, kSelected = 57, kLocal = 32;
  // PHSA-like lists: the sink block, the 32 most recent blocks, 24 random blocks in between.
  std::vector<int32_t> blocks(int64_t{kKvHeads} * kTokens * kSelected, -1);
  std::vector<char> taken;
  for (int64_t hk = 0; hk < kKvHeads; ++hk) {
    for (int64_t i = 0; i < kTokens; ++i) {
      int32_t* list = blocks.data() + (hk * kTokens + i) * kSelected;
      const int32_t own = static_cast<int32_t>(i / kBlock);
      int32_t n = 0;
      if (own < kSelected) {
        for (int32_t b = 0; b <= own; ++b) list[n++] = b;
        continue;
      }
      taken.assign(own + 1, 0);
      taken[0] = 1;
      for (int32_t b = own - kLocal + 1; b <= own; ++b) taken[b] = 1;
      for (int32_t picked = 0; picked < kSelected - kLocal - 1;) {
        const int32_t b = 1 + static_cast<int32_t>(rng.NextU64() % (own - kLocal));
        if (!taken[b]) taken[b] = 1, ++picked;
      }
      for (int32_t b = 0; b <= own; ++b) {
        if (taken[b]) list[n++] = b;
      }
    }
  }
  const BlockSelection sel{blocks.data(), kSelected, kBlock};
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(SparseAttentionRef(pr.p, sel).ok());
  const double secs = Seconds(t0);
  std::printf(
      "[bench] SparseAttentionRef 16K tokens, 57 blocks of 16 per query: %.3f s "
      "(%d threads)\n",
      secs, omp_get_max_threads());
  RecordProperty("sparse_16k_seconds", std::to_string(secs));
  for (int64_t i : {int64_t{5}, int64_t{9000}, kTokens - 1}) {
    for (int32_t h = 0; h < kQHeads; ++h) {
      const int32_t* list = blocks.data() + ((h / 2) * kTokens + i) * kSelected;
      const std::vector<float> want = NaiveRow(pr, i, h, [&](int64_t j) {
        return std::find(list, list + kSelected, static_cast<int32_t>(j / kBlock)) !=
               list + kSelected;
      });
      EXPECT_TRUE(RelativeL2Near({pr.out.data() + (i * kQHeads + h) * kHeadDim, size_t{kHeadDim}},
                                 want, 2e-5))
          << "query " << i << " head " << h;
    }
  }
}

}  // namespace
}  // namespace sparsefill::kernels
