// RmsNormRef, RopeRef and SwiGluRef against naive double-precision loops written here.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kernels/activation.h"
#include "sparsefill/kernels/norm.h"
#include "sparsefill/kernels/rope.h"
#include "tests/testing/compare.h"

namespace sparsefill::kernels {
namespace {

using ::sparsefill::testing::AllClose;
using ::sparsefill::testing::FreshSeed;
using ::sparsefill::testing::GuardedBuffer;
using ::sparsefill::testing::RandomNormal;
using ::sparsefill::testing::RandomUniform;
using ::testing::HasSubstr;

constexpr float kPoison = 1.2345e30f;

// Row gaps (elements between dim and stride) must keep their poison.
::testing::AssertionResult GapsUntouched(const GuardedBuffer& b, int64_t rows, int64_t dim,
                                         int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = dim; c < stride; ++c) {
      if (b.data()[r * stride + c] != kPoison) {
        return ::testing::AssertionFailure()
               << "write into the row gap at row " << r << " col " << c;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

std::vector<float> Compact(const float* p, int64_t rows, int64_t dim, int64_t stride) {
  std::vector<float> v(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < dim; ++c) v[r * dim + c] = p[r * stride + c];
  }
  return v;
}

// ---------------------------------------------------------------- RMSNorm

struct NormShape {
  int64_t rows;
  int32_t dim;
  int64_t x_pad, out_pad;
};

class RmsNormRefTest : public ::testing::TestWithParam<NormShape> {};

TEST_P(RmsNormRefTest, MatchesNaive) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const NormShape s = GetParam();
  const int64_t xs = s.dim + s.x_pad, os = s.dim + s.out_pad;
  const float scale = 0.1f + 10.0f * rng.Uniform();  // norms far from 1 too
  const std::vector<float> x = RandomNormal(s.rows * xs, rng, scale);
  const std::vector<float> w = RandomUniform(s.dim, rng, 0.5f, 1.5f);
  const float eps = 1e-6f;
  GuardedBuffer out(s.rows * os);
  out.Poison();

  RmsNormParams p;
  p.x = x.data();
  p.weight = w.data();
  p.out = out.data();
  p.rows = s.rows;
  p.dim = s.dim;
  p.x_stride = xs;
  p.out_stride = os;
  p.eps = eps;
  ASSERT_TRUE(RmsNormRef(p).ok());

  std::vector<float> want(s.rows * s.dim);
  for (int64_t r = 0; r < s.rows; ++r) {
    double ss = 0;
    for (int c = 0; c < s.dim; ++c) ss += static_cast<double>(x[r * xs + c]) * x[r * xs + c];
    const double inv = 1.0 / std::sqrt(ss / s.dim + eps);
    for (int c = 0; c < s.dim; ++c)
      want[r * s.dim + c] = static_cast<float>(w[c] * (x[r * xs + c] * inv));
  }
  EXPECT_TRUE(out.Intact());
  EXPECT_TRUE(GapsUntouched(out, s.rows, s.dim, os));
  EXPECT_TRUE(AllClose(Compact(out.data(), s.rows, s.dim, os), want, 1e-6, 4e-6));
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormRefTest,
                         ::testing::Values(NormShape{1, 1, 0, 0}, NormShape{7, 128, 0, 0},
                                           NormShape{33, 128, 128, 3}, NormShape{5, 1000, 7, 0},
                                           NormShape{64, 4096, 0, 0}, NormShape{3, 1537, 5, 11}));

TEST(RmsNormRef, InPlace) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const int64_t rows = 9;
  const int32_t dim = 256;
  std::vector<float> x = RandomNormal(rows * dim, rng, 2.0f);
  const std::vector<float> w = RandomNormal(dim, rng);
  std::vector<float> want(rows * dim);
  RmsNormParams p;
  p.x = x.data();
  p.weight = w.data();
  p.out = want.data();
  p.rows = rows;
  p.dim = dim;
  p.x_stride = p.out_stride = dim;
  ASSERT_TRUE(RmsNormRef(p).ok());
  p.out = x.data();
  ASSERT_TRUE(RmsNormRef(p).ok());
  EXPECT_EQ(x, want);
}

TEST(RmsNormRef, RejectsBadParams) {
  std::vector<float> x(64, 1.0f), w(16, 1.0f), o(64);
  RmsNormParams good;
  good.x = x.data();
  good.weight = w.data();
  good.out = o.data();
  good.rows = 4;
  good.dim = 16;
  good.x_stride = good.out_stride = 16;
  ASSERT_TRUE(RmsNormRef(good).ok());
  struct Case {
    std::string field;
    RmsNormParams p;
  };
  std::vector<Case> cases;
  auto add = [&](std::string field, auto mutate) {
    RmsNormParams p = good;
    mutate(p);
    cases.push_back({field, p});
  };
  add("rows", [](RmsNormParams& p) { p.rows = -1; });
  add("dim", [](RmsNormParams& p) { p.dim = 0; });
  add("x_stride", [](RmsNormParams& p) { p.x_stride = 15; });
  add("out_stride", [](RmsNormParams& p) { p.out_stride = 3; });
  add("eps", [](RmsNormParams& p) { p.eps = -1.0f; });
  add("x is null", [](RmsNormParams& p) { p.x = nullptr; });
  add("weight is null", [](RmsNormParams& p) { p.weight = nullptr; });
  add("out is null", [](RmsNormParams& p) { p.out = nullptr; });
  add("dtype BF16", [](RmsNormParams& p) { p.dtype = DType::kBF16; });
  add("dtype F16", [](RmsNormParams& p) { p.dtype = DType::kF16; });
  add("out_stride == x_stride", [&](RmsNormParams& p) {
    p.out = x.data();
    p.out_stride = 17;
    p.rows = 3;
  });
  for (const Case& c : cases) {
    const absl::Status s = RmsNormRef(c.p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.field));
  }
}

// ---------------------------------------------------------------- RoPE

struct RopeShape {
  int64_t tokens;
  int32_t heads, head_dim, rotary_dim;
  int64_t max_pos;
};

class RopeRefTest : public ::testing::TestWithParam<RopeShape> {};

TEST_P(RopeRefTest, MatchesNaive) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const RopeShape s = GetParam();
  const int64_t n = s.tokens * s.heads * s.head_dim;
  const std::vector<float> x0 = RandomNormal(n, rng);
  GuardedBuffer x(n);
  std::copy(x0.begin(), x0.end(), x.data());
  std::vector<int64_t> pos(s.tokens);
  for (auto& v : pos) v = static_cast<int64_t>(rng.NextU64() % static_cast<uint64_t>(s.max_pos));
  const int half = s.rotary_dim / 2;
  // transformers: 1 / base^(arange(0, dim, 2) / dim), in fp32, with a random base.
  const float base = 1e4f + 1e6f * rng.Uniform();
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    inv_freq[i] =
        1.0f / std::pow(base, static_cast<float>(2 * i) / static_cast<float>(s.rotary_dim));
  }
  const float scaling = 0.5f + rng.Uniform();

  RopeParams p;
  p.x = x.data();
  p.positions = pos.data();
  p.inv_freq = inv_freq.data();
  p.tokens = s.tokens;
  p.heads = s.heads;
  p.head_dim = s.head_dim;
  p.rotary_dim = s.rotary_dim;
  p.attention_scaling = scaling;
  ASSERT_TRUE(RopeRef(p).ok());

  std::vector<float> want = x0;
  for (int64_t t = 0; t < s.tokens; ++t) {
    for (int h = 0; h < s.heads; ++h) {
      const int64_t base_idx = (t * s.heads + h) * s.head_dim;
      for (int i = 0; i < half; ++i) {
        // The angle is an fp32 product (as in transformers); only cos/sin run in double here.
        const float angle = static_cast<float>(pos[t]) * inv_freq[i];
        const double c = std::cos(static_cast<double>(angle)) * scaling;
        const double sn = std::sin(static_cast<double>(angle)) * scaling;
        const double x1 = x0[base_idx + i], x2 = x0[base_idx + i + half];
        want[base_idx + i] = static_cast<float>(x1 * c - x2 * sn);
        want[base_idx + i + half] = static_cast<float>(x2 * c + x1 * sn);
      }
    }
  }
  EXPECT_TRUE(x.Intact());
  EXPECT_TRUE(AllClose(x.span(), want, 2e-6, 2e-6));
  // Dims past rotary_dim are untouched, bit for bit.
  for (int64_t r = 0; r < s.tokens * s.heads; ++r) {
    for (int c = s.rotary_dim; c < s.head_dim; ++c) {
      ASSERT_EQ(x.data()[r * s.head_dim + c], x0[r * s.head_dim + c])
          << "row " << r << " dim " << c;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeRefTest,
                         ::testing::Values(RopeShape{1, 1, 2, 2, 10},
                                           RopeShape{37, 4, 64, 64, 4096},
                                           RopeShape{19, 3, 128, 128, 1 << 20},
                                           RopeShape{23, 2, 128, 64, 200000},
                                           RopeShape{11, 5, 96, 32, 131072}));

TEST(RopeRef, RejectsBadParams) {
  std::vector<float> x(4 * 2 * 8, 1.0f), inv(4, 0.1f);
  std::vector<int64_t> pos(4, 3);
  RopeParams good;
  good.x = x.data();
  good.positions = pos.data();
  good.inv_freq = inv.data();
  good.tokens = 4;
  good.heads = 2;
  good.head_dim = 8;
  good.rotary_dim = 8;
  ASSERT_TRUE(RopeRef(good).ok());
  std::vector<std::pair<std::string, RopeParams>> cases;
  auto add = [&](std::string field, auto mutate) {
    RopeParams p = good;
    mutate(p);
    cases.emplace_back(field, p);
  };
  add("tokens", [](RopeParams& p) { p.tokens = -2; });
  add("heads", [](RopeParams& p) { p.heads = 0; });
  add("head_dim", [](RopeParams& p) { p.head_dim = -8; });
  add("rotary_dim", [](RopeParams& p) { p.rotary_dim = 7; });
  add("rotary_dim", [](RopeParams& p) { p.rotary_dim = 10; });
  add("rotary_dim", [](RopeParams& p) { p.rotary_dim = 0; });
  add("attention_scaling", [](RopeParams& p) { p.attention_scaling = NAN; });
  add("x is null", [](RopeParams& p) { p.x = nullptr; });
  add("positions is null", [](RopeParams& p) { p.positions = nullptr; });
  add("inv_freq is null", [](RopeParams& p) { p.inv_freq = nullptr; });
  add("dtype F16", [](RopeParams& p) { p.dtype = DType::kF16; });
  for (const auto& [field, p] : cases) {
    const absl::Status s = RopeRef(p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(field));
  }
}

// ---------------------------------------------------------------- SwiGLU

struct GluShape {
  int64_t rows;
  int32_t dim;
  int64_t gate_pad, up_pad, out_pad;
};

class SwiGluRefTest : public ::testing::TestWithParam<GluShape> {};

TEST_P(SwiGluRefTest, MatchesNaive) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const GluShape s = GetParam();
  const int64_t gs = s.dim + s.gate_pad, us = s.dim + s.up_pad, os = s.dim + s.out_pad;
  std::vector<float> gate = RandomNormal(s.rows * gs, rng, 4.0f);
  gate[0] = -200.0f;  // exp(-x) overflows to inf: silu must give -0, not NaN
  if (gate.size() > 1) gate[1] = 200.0f;
  const std::vector<float> up = RandomNormal(s.rows * us, rng);
  GuardedBuffer out(s.rows * os);
  out.Poison();
  SwiGluParams p;
  p.gate = gate.data();
  p.up = up.data();
  p.out = out.data();
  p.rows = s.rows;
  p.dim = s.dim;
  p.gate_stride = gs;
  p.up_stride = us;
  p.out_stride = os;
  ASSERT_TRUE(SwiGluRef(p).ok());
  std::vector<float> want(s.rows * s.dim);
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int c = 0; c < s.dim; ++c) {
      const double g = gate[r * gs + c];
      want[r * s.dim + c] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[r * us + c]);
    }
  }
  EXPECT_TRUE(out.Intact());
  EXPECT_TRUE(GapsUntouched(out, s.rows, s.dim, os));
  EXPECT_TRUE(AllClose(Compact(out.data(), s.rows, s.dim, os), want, 1e-7, 4e-6));
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwiGluRefTest,
                         ::testing::Values(GluShape{1, 1, 0, 0, 0}, GluShape{17, 300, 0, 0, 0},
                                           GluShape{8, 1024, 1024, 1024, 0},
                                           GluShape{5, 333, 3, 1, 7}));

TEST(SwiGluRef, OutMayAliasGate) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  std::vector<float> gate = RandomNormal(6 * 40, rng), up = RandomNormal(6 * 40, rng);
  std::vector<float> want(6 * 40);
  SwiGluParams p;
  p.gate = gate.data();
  p.up = up.data();
  p.out = want.data();
  p.rows = 6;
  p.dim = 40;
  p.gate_stride = p.up_stride = p.out_stride = 40;
  ASSERT_TRUE(SwiGluRef(p).ok());
  p.out = gate.data();
  ASSERT_TRUE(SwiGluRef(p).ok());
  EXPECT_EQ(gate, want);
}

TEST(SwiGluRef, RejectsBadParams) {
  std::vector<float> g(32, 1.0f), u(32, 1.0f), o(32);
  SwiGluParams good;
  good.gate = g.data();
  good.up = u.data();
  good.out = o.data();
  good.rows = 4;
  good.dim = 8;
  good.gate_stride = good.up_stride = good.out_stride = 8;
  ASSERT_TRUE(SwiGluRef(good).ok());
  std::vector<std::pair<std::string, SwiGluParams>> cases;
  auto add = [&](std::string field, auto mutate) {
    SwiGluParams p = good;
    mutate(p);
    cases.emplace_back(field, p);
  };
  add("rows", [](SwiGluParams& p) { p.rows = -1; });
  add("dim", [](SwiGluParams& p) { p.dim = 0; });
  add("gate_stride", [](SwiGluParams& p) { p.gate_stride = 7; });
  add("up_stride", [](SwiGluParams& p) { p.up_stride = 1; });
  add("out_stride", [](SwiGluParams& p) { p.out_stride = 0; });
  add("gate is null", [](SwiGluParams& p) { p.gate = nullptr; });
  add("up is null", [](SwiGluParams& p) { p.up = nullptr; });
  add("out is null", [](SwiGluParams& p) { p.out = nullptr; });
  add("dtype BF16", [](SwiGluParams& p) { p.dtype = DType::kBF16; });
  for (const auto& [field, p] : cases) {
    const absl::Status s = SwiGluRef(p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(field));
  }
}

}  // namespace
}  // namespace sparsefill::kernels
