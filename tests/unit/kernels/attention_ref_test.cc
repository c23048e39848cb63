// DenseAttentionRef and SparseAttentionRef against a naive double-precision masked softmax.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kernels/attention.h"
#include "tests/testing/compare.h"

namespace sparsefill::kernels {
namespace {

using ::sparsefill::testing::AllClose;
using ::sparsefill::testing::FreshSeed;
using ::sparsefill::testing::GuardedBuffer;
using ::sparsefill::testing::RandomNormal;
using ::sparsefill::testing::RelativeL2Near;
using ::testing::HasSubstr;

struct Shape {
  int64_t num_q, num_kv, q_pos0;
  int32_t q_heads, kv_heads, head_dim;
  float q_std = 1.0f;  // larger values make the softmax peaky (exercises the online rescale)
};

std::ostream& operator<<(std::ostream& os, const Shape& s) {
  return os << "num_q " << s.num_q << " num_kv " << s.num_kv << " q_pos0 " << s.q_pos0
            << " q_heads " << s.q_heads << " kv_heads " << s.kv_heads << " head_dim " << s.head_dim
            << " q_std " << s.q_std;
}

struct Inputs {
  std::vector<float> q, k, v;
  GuardedBuffer out, lse;
  AttentionParams p;

  Inputs(const Shape& s, Rng& rng)
      : q(RandomNormal(s.num_q * s.q_heads * s.head_dim, rng, s.q_std)),
        k(RandomNormal(s.num_kv * s.kv_heads * s.head_dim, rng)),
        v(RandomNormal(s.num_kv * s.kv_heads * s.head_dim, rng)),
        out(s.num_q * s.q_heads * s.head_dim),
        lse(s.num_q * s.q_heads) {
    out.Poison();
    lse.Poison();
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.out = out.data();
    p.lse = lse.data();
    p.num_q = s.num_q;
    p.num_kv = s.num_kv;
    p.q_pos0 = s.q_pos0;
    p.q_heads = s.q_heads;
    p.kv_heads = s.kv_heads;
    p.head_dim = s.head_dim;
    p.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  }
};

// visible(hk, i, j): whether query i (of KV head hk's group) attends key j.
template <typename Visible>
void NaiveAttention(const Inputs& in, Visible visible, std::vector<float>& out,
                    std::vector<float>& lse) {
  const AttentionParams& p = in.p;
  const int64_t d = p.head_dim, G = p.q_heads / p.kv_heads;
  out.assign(p.num_q * p.q_heads * d, 0.0f);
  lse.assign(p.num_q * p.q_heads, 0.0f);
  std::vector<double> s(p.num_kv), acc(d);
  for (int64_t i = 0; i < p.num_q; ++i) {
    for (int64_t h = 0; h < p.q_heads; ++h) {
      const int64_t hk = h / G;
      const float* qr = in.q.data() + (i * p.q_heads + h) * d;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < p.num_kv; ++j) {
        s[j] = -std::numeric_limits<double>::infinity();
        if (!visible(hk, i, j)) continue;
        const float* kr = in.k.data() + (j * p.kv_heads + hk) * d;
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(qr[c]) * kr[c];
        s[j] = dot * p.scale;
        mx = std::max(mx, s[j]);
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      double sum = 0;
      for (int64_t j = 0; j < p.num_kv; ++j) {
        if (s[j] == -std::numeric_limits<double>::infinity()) continue;
        const double e = std::exp(s[j] - mx);
        sum += e;
        const float* vr = in.v.data() + (j * p.kv_heads + hk) * d;
        for (int64_t c = 0; c < d; ++c) acc[c] += e * vr[c];
      }
      for (int64_t c = 0; c < d; ++c) {
        out[(i * p.q_heads + h) * d + c] = sum > 0 ? static_cast<float>(acc[c] / sum) : 0.0f;
      }
      lse[h * p.num_q + i] = sum > 0 ? static_cast<float>(mx + std::log(sum))
                                     : -std::numeric_limits<float>::infinity();
    }
  }
}

void ExpectMatches(const Inputs& in, const std::vector<float>& want_out,
                   const std::vector<float>& want_lse) {
  EXPECT_TRUE(in.out.Intact());
  EXPECT_TRUE(in.lse.Intact());
  EXPECT_TRUE(in.out.FullyWritten());
  EXPECT_TRUE(in.lse.FullyWritten());
  EXPECT_TRUE(RelativeL2Near(in.out.span(), want_out, 2e-6));
  EXPECT_TRUE(AllClose(in.lse.span(), want_lse, 2e-5, 2e-6));
}

class DenseAttentionRefTest : public ::testing::TestWithParam<Shape> {};

TEST_P(DenseAttentionRefTest, MatchesNaive) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " " << GetParam());
  Rng rng(seed);
  Inputs in(GetParam(), rng);
  ASSERT_TRUE(DenseAttentionRef(in.p).ok());
  std::vector<float> want_out, want_lse;
  const int64_t q_pos0 = in.p.q_pos0;
  NaiveAttention(
      in, [&](int64_t, int64_t i, int64_t j) { return j <= q_pos0 + i; }, want_out, want_lse);
  ExpectMatches(in, want_out, want_lse);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DenseAttentionRefTest,
    ::testing::Values(Shape{1, 1, 0, 1, 1, 64}, Shape{300, 300, 0, 4, 4, 64},
                      Shape{200, 517, 317, 8, 4, 128}, Shape{133, 700, 250, 8, 2, 64},
                      Shape{290, 290, 0, 8, 1, 128}, Shape{261, 261, 0, 4, 2, 80},
                      Shape{45, 600, 555, 6, 2, 24}, Shape{300, 300, 0, 4, 2, 64, 6.0f},
                      Shape{97, 1000, 600, 16, 2, 64, 3.0f}));

TEST(DenseAttentionRef, LseIsOptional) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  Inputs in(Shape{70, 90, 20, 4, 2, 64}, rng);
  ASSERT_TRUE(DenseAttentionRef(in.p).ok());
  const std::vector<float> with_lse(in.out.span().begin(), in.out.span().end());
  in.out.Poison();
  in.p.lse = nullptr;
  ASSERT_TRUE(DenseAttentionRef(in.p).ok());
  EXPECT_TRUE(in.out.Intact());
  EXPECT_TRUE(AllClose(in.out.span(), with_lse, 0, 0));
}

// One random valid selection: each list a random subset of blocks 0 .. own block (sometimes
// empty, sometimes everything), ascending, -1 padded.
std::vector<int32_t> RandomSelection(const AttentionParams& p, int32_t block_size,
                                     int32_t max_blocks, Rng& rng) {
  std::vector<int32_t> sel(p.kv_heads * p.num_q * max_blocks, -1);
  for (int64_t hk = 0; hk < p.kv_heads; ++hk) {
    for (int64_t i = 0; i < p.num_q; ++i) {
      int32_t* list = sel.data() + (hk * p.num_q + i) * max_blocks;
      const int32_t own = static_cast<int32_t>((p.q_pos0 + i) / block_size);
      const float keep = rng.Uniform() < 0.05f ? 0.0f : rng.Uniform();
      int32_t n = 0;
      for (int32_t b = 0; b <= own && n < max_blocks; ++b) {
        if (rng.Uniform() < keep) list[n++] = b;
      }
    }
  }
  return sel;
}

struct SparseShape {
  Shape s;
  int32_t block_size;
};

std::ostream& operator<<(std::ostream& os, const SparseShape& s) {
  return os << s.s << " block_size " << s.block_size;
}

class SparseAttentionRefTest : public ::testing::TestWithParam<SparseShape> {};

TEST_P(SparseAttentionRefTest, MatchesNaiveMaskedSoftmax) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message()
               << "seed " << seed << " " << GetParam().s << " block " << GetParam().block_size);
  Rng rng(seed);
  Inputs in(GetParam().s, rng);
  const int32_t bs = GetParam().block_size;
  const int32_t total_blocks = static_cast<int32_t>((in.p.num_kv + bs - 1) / bs);
  const int32_t max_blocks = std::max(1, total_blocks - static_cast<int32_t>(rng.NextU64() % 3));
  const std::vector<int32_t> blocks = RandomSelection(in.p, bs, max_blocks, rng);
  BlockSelection sel{blocks.data(), max_blocks, bs};
  ASSERT_TRUE(SparseAttentionRef(in.p, sel).ok());

  const AttentionParams& p = in.p;
  std::vector<float> want_out, want_lse;
  NaiveAttention(
      in,
      [&](int64_t hk, int64_t i, int64_t j) {
        if (j > p.q_pos0 + i) return false;
        const int32_t* list = blocks.data() + (hk * p.num_q + i) * max_blocks;
        return std::find(list, list + max_blocks, static_cast<int32_t>(j / bs)) !=
               list + max_blocks;
      },
      want_out, want_lse);
  ExpectMatches(in, want_out, want_lse);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SparseAttentionRefTest,
                         ::testing::Values(SparseShape{Shape{1, 1, 0, 1, 1, 64}, 16},
                                           SparseShape{Shape{300, 300, 0, 4, 4, 64}, 16},
                                           SparseShape{Shape{200, 517, 317, 8, 4, 128}, 64},
                                           SparseShape{Shape{133, 700, 250, 8, 2, 64, 4.0f}, 16},
                                           SparseShape{Shape{150, 290, 140, 8, 1, 128}, 32},
                                           SparseShape{Shape{99, 333, 200, 6, 3, 40}, 7}));

TEST(SparseAttentionRef, EqualsDenseWhenEveryBlockIsSelected) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  for (const Shape& s : {Shape{500, 500, 0, 8, 2, 64}, Shape{257, 777, 520, 4, 1, 128},
                         Shape{130, 400, 13, 8, 8, 64, 5.0f}}) {
    SCOPED_TRACE(::testing::Message() << s);
    Inputs in(s, rng);
    const int32_t bs = 16;
    const int32_t max_blocks = static_cast<int32_t>((s.num_kv + bs - 1) / bs);
    std::vector<int32_t> blocks(s.kv_heads * s.num_q * max_blocks, -1);
    for (int64_t hk = 0; hk < s.kv_heads; ++hk) {
      for (int64_t i = 0; i < s.num_q; ++i) {
        for (int32_t b = 0; b <= (s.q_pos0 + i) / bs; ++b) {
          blocks[(hk * s.num_q + i) * max_blocks + b] = b;
        }
      }
    }
    ASSERT_TRUE(SparseAttentionRef(in.p, BlockSelection{blocks.data(), max_blocks, bs}).ok());
    const std::vector<float> sparse_out(in.out.span().begin(), in.out.span().end());
    const std::vector<float> sparse_lse(in.lse.span().begin(), in.lse.span().end());
    in.out.Poison();
    in.lse.Poison();
    ASSERT_TRUE(DenseAttentionRef(in.p).ok());
    EXPECT_TRUE(RelativeL2Near(in.out.span(), sparse_out, 1e-6));
    EXPECT_TRUE(AllClose(in.lse.span(), sparse_lse, 1e-5, 1e-6));
  }
}

TEST(SparseAttentionRef, EmptyListGivesZeroOutputAndMinusInfLse) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  Inputs in(Shape{4, 40, 36, 2, 1, 64}, rng);
  std::vector<int32_t> blocks = {0, 1, -1, -1, 2, -1, -1, -1, -1, -1, -1, -1, 0, 2, -1, -1};
  ASSERT_TRUE(SparseAttentionRef(in.p, BlockSelection{blocks.data(), 4, 16}).ok());
  for (int h = 0; h < 2; ++h) {
    EXPECT_EQ(in.lse.data()[h * 4 + 2], -std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isfinite(in.lse.data()[h * 4 + 1]));
    for (int c = 0; c < 64; ++c) EXPECT_EQ(in.out.data()[(2 * 2 + h) * 64 + c], 0.0f);
  }
}

TEST(AttentionValidation, RejectsBadShapes) {
  std::vector<float> buf(4096, 1.0f);
  AttentionParams good;
  good.q = good.k = good.v = buf.data();
  good.out = buf.data() + 2048;
  good.num_q = 4;
  good.num_kv = 8;
  good.q_pos0 = 4;
  good.q_heads = 4;
  good.kv_heads = 2;
  good.head_dim = 16;
  good.scale = 0.25f;
  ASSERT_TRUE(ValidateAttention(good).ok());
  std::vector<std::pair<std::string, AttentionParams>> cases;
  auto add = [&](std::string field, auto mutate) {
    AttentionParams p = good;
    mutate(p);
    cases.emplace_back(field, p);
  };
  add("num_q", [](AttentionParams& p) { p.num_q = -1; });
  add("num_kv", [](AttentionParams& p) { p.num_kv = -1; });
  add("q_pos0", [](AttentionParams& p) { p.q_pos0 = -1; });
  add("exceeds num_kv", [](AttentionParams& p) { p.q_pos0 = 5; });
  add("exceeds num_kv", [](AttentionParams& p) {
    p.num_q = 9;
    p.q_pos0 = 0;
  });
  add("q_heads", [](AttentionParams& p) { p.q_heads = 0; });
  add("kv_heads", [](AttentionParams& p) { p.kv_heads = 0; });
  add("not a multiple of kv_heads", [](AttentionParams& p) { p.q_heads = 3; });
  add("head_dim", [](AttentionParams& p) { p.head_dim = 0; });
  add("scale", [](AttentionParams& p) { p.scale = INFINITY; });
  add("q is null", [](AttentionParams& p) { p.q = nullptr; });
  add("k is null", [](AttentionParams& p) { p.k = nullptr; });
  add("v is null", [](AttentionParams& p) { p.v = nullptr; });
  add("out is null", [](AttentionParams& p) { p.out = nullptr; });
  for (const auto& [field, p] : cases) {
    for (const absl::Status& s : {ValidateAttention(p), DenseAttentionRef(p)}) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
      EXPECT_THAT(std::string(s.message()), HasSubstr(field));
    }
  }
  AttentionParams bf16 = good;
  bf16.dtype = DType::kBF16;
  EXPECT_TRUE(ValidateAttention(bf16).ok());  // the launcher takes bf16; only the ref is fp32
  EXPECT_THAT(std::string(DenseAttentionRef(bf16).message()), HasSubstr("dtype BF16"));
}

TEST(AttentionValidation, RejectsMalformedSelections) {
  std::vector<float> buf(4096, 1.0f);
  AttentionParams p;
  p.q = p.k = p.v = buf.data();
  p.out = buf.data() + 2048;
  p.num_q = 2;
  p.num_kv = 40;  // 3 blocks of 16
  p.q_pos0 = 20;  // queries at 20 and 21: own block 1
  p.q_heads = 2;
  p.kv_heads = 1;
  p.head_dim = 16;
  p.scale = 0.25f;
  auto check = [&](std::vector<int32_t> lists, int32_t block_size, std::string want) {
    SCOPED_TRACE(want);
    const BlockSelection sel{lists.data(), static_cast<int32_t>(lists.size() / 2), block_size};
    for (const absl::Status& s : {ValidateSelection(p, sel), SparseAttentionRef(p, sel)}) {
      if (want.empty()) {
        EXPECT_TRUE(s.ok()) << s;
      } else {
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
        EXPECT_THAT(std::string(s.message()), HasSubstr(want));
      }
    }
  };
  check({0, 1, -1, 1, -1, -1}, 16, "");
  check({0, 2, -1, 1, -1, -1}, 16, "after the query's own block 1");
  check({0, 1, -1, 0, 0, -1}, 16, "unique and ascending");
  check({1, 0, -1, 0, -1, -1}, 16, "unique and ascending");
  check({0, -1, 1, 0, -1, -1}, 16, "follows -1 padding");
  check({0, -2, -1, 0, -1, -1}, 16, "negative");
  check({0, 5, -1, 0, -1, -1}, 16, "slot 1] = 5");
  check({0, 1, -1, 0, -1, -1}, 0, "block_size");
  check({0, 1, 2, 0, 2, -1}, 8, "");  // block 2 of 8 tokens holds positions 20 and 21
  check({0, 1, 3, -1, -1, -1}, 8, "kv_head 0, query 0, slot 2");
  const BlockSelection null_sel{nullptr, 3, 16};
  EXPECT_THAT(std::string(ValidateSelection(p, null_sel).message()), HasSubstr("blocks is null"));
  const BlockSelection neg{nullptr, -1, 16};
  EXPECT_THAT(std::string(ValidateSelection(p, neg).message()), HasSubstr("max_blocks"));
}

}  // namespace
}  // namespace sparsefill::kernels
