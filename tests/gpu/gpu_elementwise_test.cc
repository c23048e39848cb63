// LaunchRmsNorm, LaunchRope and LaunchSwiGlu against their CPU references (DESIGN §5: every CUDA
// op is tested against its CPU twin), for fp32, bf16 and fp16, on fresh random inputs, with
// sentinel bytes around every device buffer and in every row gap.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kernels/activation.h"
#include "sparsefill/kernels/norm.h"
#include "sparsefill/kernels/rope.h"
#include "tests/gpu/gpu_testing.h"
#include "tests/testing/compare.h"

namespace sparsefill::kernels {
namespace {

using ::sparsefill::testing::AllClose;
using ::sparsefill::testing::FreshSeed;
using ::sparsefill::testing::RandomNormal;
using ::sparsefill::testing::RelativeL2Near;
using ::testing::HasSubstr;

using DeviceBuffer = testing::GuardedDeviceBuffer;

// Host data in `dtype` plus its exact fp32 value (what the CPU reference gets).
struct HostTensor {
  std::vector<uint8_t> bytes;
  std::vector<float> f32;
  HostTensor(std::vector<float> values, DType dtype) : bytes(values.size() * DTypeSize(dtype)) {
    ConvertFromF32(values.data(), dtype, bytes.data(), values.size());
    f32.resize(values.size());
    ConvertToF32(bytes.data(), dtype, f32.data(), values.size());
  }
};

std::vector<float> ToF32(const std::vector<uint8_t>& bytes, DType dtype) {
  std::vector<float> f(bytes.size() / DTypeSize(dtype));
  ConvertToF32(bytes.data(), dtype, f.data(), f.size());
  return f;
}

std::vector<float> Compact(const std::vector<float>& v, int64_t rows, int64_t dim, int64_t stride) {
  std::vector<float> c(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < dim; ++j) c[r * dim + j] = v[r * stride + j];
  }
  return c;
}

// Row gaps of an output must keep their sentinel bytes.
::testing::AssertionResult GapsUntouched(const std::vector<uint8_t>& payload, DType dtype,
                                         int64_t rows, int64_t dim, int64_t stride) {
  const size_t es = DTypeSize(dtype);
  for (int64_t r = 0; r < rows; ++r) {
    for (size_t b = (r * stride + dim) * es; b < static_cast<size_t>((r + 1) * stride) * es; ++b) {
      if (b < payload.size() && payload[b] != testing::kSentinel) {
        return ::testing::AssertionFailure() << "write into the row gap of row " << r;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

struct Tolerance {
  double rel_l2, atol, rtol;
};

// Rounding the fp32 result once (twice for RMSNorm's Hugging Face order) to the storage type.
Tolerance ToleranceFor(DType t, double scale) {
  switch (t) {
    case DType::kF32:
      return {2e-6, 2e-6 * scale, 2e-5};
    case DType::kF16:
      return {2e-3, 2e-3 * scale, 2e-3};
    default:
      return {1e-2, 1.6e-2 * scale, 1.6e-2};
  }
}

class GpuElementwiseTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!testing::HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
    CUDA_ASSERT(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  cudaStream_t stream_ = nullptr;
};

std::string DTypeParamName(const ::testing::TestParamInfo<DType>& info) {
  return std::string(DTypeName(info.param));
}

// ---------------------------------------------------------------- RMSNorm

struct NormCase {
  int64_t rows;
  int32_t dim;
  int64_t x_pad, out_pad;
  bool misalign, in_place;
};

TEST_P(GpuElementwiseTest, RmsNormMatchesReference) {
  const DType dt = GetParam();
  const size_t es = DTypeSize(dt);
  for (const NormCase& c :
       {NormCase{37, 128, 0, 0, false, false}, NormCase{5, 4096, 0, 8, false, false},
        NormCase{9, 1000, 3, 5, false, false}, NormCase{3, 1536, 0, 0, true, false},
        NormCase{70, 64, 64, 64, false, true}, NormCase{4, 2051, 1, 1, false, true}}) {
    const uint64_t seed = FreshSeed();
    SCOPED_TRACE(::testing::Message() << "seed " << seed << " rows " << c.rows << " dim " << c.dim
                                      << " misalign " << c.misalign << " in_place " << c.in_place);
    Rng rng(seed);
    const int64_t xs = c.dim + c.x_pad;
    const int64_t os = c.in_place ? xs : c.dim + c.out_pad;
    const float scale = 0.2f + 5.0f * rng.Uniform();
    HostTensor x(RandomNormal(c.rows * xs, rng, scale), dt);
    std::vector<float> w0 = RandomNormal(c.dim, rng, 0.3f);
    for (float& v : w0) v += 1.0f;
    HostTensor w(w0, dt);

    const size_t off = c.misalign ? es : 0;
    DeviceBuffer dx(x.bytes.size(), off), dw(w.bytes.size(), off), dout(c.rows * os * es, off);
    ASSERT_TRUE(dx.ok() && dw.ok() && dout.ok());
    ASSERT_TRUE(dx.Upload(x.bytes));
    ASSERT_TRUE(dw.Upload(w.bytes));
    RmsNormParams p;
    p.x = dx.data();
    p.weight = dw.data();
    p.out = c.in_place ? dx.data() : dout.data();
    p.rows = c.rows;
    p.dim = c.dim;
    p.x_stride = xs;
    p.out_stride = os;
    p.eps = 1e-6f;
    p.dtype = dt;
    ASSERT_TRUE(LaunchRmsNorm(p, stream_).ok());
    CUDA_ASSERT(cudaStreamSynchronize(stream_));

    std::vector<float> want(c.rows * os, 0.0f);
    RmsNormParams r = p;
    r.x = x.f32.data();
    r.weight = w.f32.data();
    r.out = want.data();
    r.dtype = DType::kF32;
    ASSERT_TRUE(RmsNormRef(r).ok());

    DeviceBuffer& out = c.in_place ? dx : dout;
    const std::vector<uint8_t> all = out.DownloadAll();
    EXPECT_TRUE(out.GuardsIntact(all));
    const std::vector<uint8_t> payload = out.Payload(all);
    if (!c.in_place) {
      EXPECT_TRUE(GapsUntouched(payload, dt, c.rows, c.dim, os));
    }
    const std::vector<float> got = Compact(ToF32(payload, dt), c.rows, c.dim, os);
    const std::vector<float> ref = Compact(want, c.rows, c.dim, os);
    const Tolerance tol = ToleranceFor(dt, 1.0);
    EXPECT_TRUE(RelativeL2Near(got, ref, tol.rel_l2));
    EXPECT_TRUE(AllClose(got, ref, tol.atol, tol.rtol));
  }
}

// ---------------------------------------------------------------- RoPE

struct RopeCase {
  int64_t tokens;
  int32_t heads, head_dim, rotary_dim;
  int64_t max_pos;
  bool misalign;
};

TEST_P(GpuElementwiseTest, RopeMatchesReference) {
  const DType dt = GetParam();
  const size_t es = DTypeSize(dt);
  for (const RopeCase& c :
       {RopeCase{33, 4, 128, 128, 1 << 20, false}, RopeCase{7, 3, 64, 32, 40000, false},
        RopeCase{5, 2, 80, 80, 4096, false}, RopeCase{6, 5, 6, 6, 100, false},
        RopeCase{300, 8, 64, 64, 16384, true}}) {
    const uint64_t seed = FreshSeed();
    SCOPED_TRACE(::testing::Message() << "seed " << seed << " tokens " << c.tokens << " heads "
                                      << c.heads << " head_dim " << c.head_dim << " rotary_dim "
                                      << c.rotary_dim << " misalign " << c.misalign);
    Rng rng(seed);
    const int64_t n = c.tokens * c.heads * c.head_dim;
    HostTensor x(RandomNormal(n, rng), dt);
    std::vector<int64_t> pos(c.tokens);
    for (auto& v : pos) v = static_cast<int64_t>(rng.NextU64() % static_cast<uint64_t>(c.max_pos));
    const int half = c.rotary_dim / 2;
    const float base = 1e4f + 1e6f * rng.Uniform();
    std::vector<float> inv_freq(half);
    for (int i = 0; i < half; ++i) {
      inv_freq[i] = 1.0f / std::pow(base, static_cast<float>(2 * i) / c.rotary_dim);
    }
    const float scaling = 0.5f + rng.Uniform();

    DeviceBuffer dx(x.bytes.size(), c.misalign ? es : 0);
    DeviceBuffer dpos(pos.size() * sizeof(int64_t), 0), dfreq(inv_freq.size() * sizeof(float), 0);
    ASSERT_TRUE(dx.ok() && dpos.ok() && dfreq.ok());
    ASSERT_TRUE(dx.Upload(x.bytes));
    std::vector<uint8_t> pos_bytes(pos.size() * sizeof(int64_t));
    std::memcpy(pos_bytes.data(), pos.data(), pos_bytes.size());
    std::vector<uint8_t> freq_bytes(inv_freq.size() * sizeof(float));
    std::memcpy(freq_bytes.data(), inv_freq.data(), freq_bytes.size());
    ASSERT_TRUE(dpos.Upload(pos_bytes));
    ASSERT_TRUE(dfreq.Upload(freq_bytes));

    RopeParams p;
    p.x = dx.data();
    p.positions = static_cast<const int64_t*>(dpos.data());
    p.inv_freq = static_cast<const float*>(dfreq.data());
    p.tokens = c.tokens;
    p.heads = c.heads;
    p.head_dim = c.head_dim;
    p.rotary_dim = c.rotary_dim;
    p.attention_scaling = scaling;
    p.dtype = dt;
    ASSERT_TRUE(LaunchRope(p, stream_).ok());
    CUDA_ASSERT(cudaStreamSynchronize(stream_));

    std::vector<float> want = x.f32;
    RopeParams r = p;
    r.x = want.data();
    r.positions = pos.data();
    r.inv_freq = inv_freq.data();
    r.dtype = DType::kF32;
    ASSERT_TRUE(RopeRef(r).ok());

    const std::vector<uint8_t> all = dx.DownloadAll();
    EXPECT_TRUE(dx.GuardsIntact(all));
    const std::vector<float> got = ToF32(dx.Payload(all), dt);
    const Tolerance tol = ToleranceFor(dt, 2.0 * scaling);
    EXPECT_TRUE(RelativeL2Near(got, want, tol.rel_l2));
    EXPECT_TRUE(AllClose(got, want, tol.atol, tol.rtol));
    for (int64_t row = 0; row < c.tokens * c.heads; ++row) {
      for (int j = c.rotary_dim; j < c.head_dim; ++j) {
        ASSERT_EQ(got[row * c.head_dim + j], x.f32[row * c.head_dim + j]) << "pass-through dim";
      }
    }
  }
}

// ---------------------------------------------------------------- SwiGLU

struct GluCase {
  int64_t rows;
  int32_t dim;
  int64_t gate_pad, up_pad, out_pad;
  bool misalign, alias_gate;
};

TEST_P(GpuElementwiseTest, SwiGluMatchesReference) {
  const DType dt = GetParam();
  const size_t es = DTypeSize(dt);
  for (const GluCase& c :
       {GluCase{17, 1024, 0, 0, 0, false, false}, GluCase{3, 333, 2, 7, 1, false, false},
        GluCase{8, 3072, 3072, 0, 8, false, false}, GluCase{5, 512, 0, 0, 0, true, false},
        GluCase{6, 136, 0, 0, 0, false, true}}) {
    const uint64_t seed = FreshSeed();
    SCOPED_TRACE(::testing::Message() << "seed " << seed << " rows " << c.rows << " dim " << c.dim
                                      << " misalign " << c.misalign << " alias " << c.alias_gate);
    Rng rng(seed);
    const int64_t gs = c.dim + c.gate_pad, us = c.dim + c.up_pad;
    const int64_t os = c.alias_gate ? gs : c.dim + c.out_pad;
    std::vector<float> g0 = RandomNormal(c.rows * gs, rng, 4.0f);
    g0[0] = -100.0f;  // exp(-x) overflows: silu must be -0, not NaN
    g0[1] = 100.0f;
    HostTensor gate(g0, dt), up(RandomNormal(c.rows * us, rng), dt);
    const size_t off = c.misalign ? es : 0;
    DeviceBuffer dg(gate.bytes.size(), off), du(up.bytes.size(), off), dout(c.rows * os * es, off);
    ASSERT_TRUE(dg.ok() && du.ok() && dout.ok());
    ASSERT_TRUE(dg.Upload(gate.bytes));
    ASSERT_TRUE(du.Upload(up.bytes));
    SwiGluParams p;
    p.gate = dg.data();
    p.up = du.data();
    p.out = c.alias_gate ? dg.data() : dout.data();
    p.rows = c.rows;
    p.dim = c.dim;
    p.gate_stride = gs;
    p.up_stride = us;
    p.out_stride = os;
    p.dtype = dt;
    ASSERT_TRUE(LaunchSwiGlu(p, stream_).ok());
    CUDA_ASSERT(cudaStreamSynchronize(stream_));

    std::vector<float> want(c.rows * os, 0.0f);
    SwiGluParams r = p;
    r.gate = gate.f32.data();
    r.up = up.f32.data();
    r.out = want.data();
    r.dtype = DType::kF32;
    ASSERT_TRUE(SwiGluRef(r).ok());

    DeviceBuffer& out = c.alias_gate ? dg : dout;
    const std::vector<uint8_t> all = out.DownloadAll();
    EXPECT_TRUE(out.GuardsIntact(all));
    const std::vector<uint8_t> payload = out.Payload(all);
    if (!c.alias_gate) {
      EXPECT_TRUE(GapsUntouched(payload, dt, c.rows, c.dim, os));
    }
    const std::vector<float> got = Compact(ToF32(payload, dt), c.rows, c.dim, os);
    const std::vector<float> ref = Compact(want, c.rows, c.dim, os);
    const Tolerance tol = ToleranceFor(dt, 1.0);
    EXPECT_TRUE(RelativeL2Near(got, ref, tol.rel_l2));
    EXPECT_TRUE(AllClose(got, ref, tol.atol, tol.rtol));
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, GpuElementwiseTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16), DTypeParamName);

// Parameter checks run before any CUDA call, so they need no device.
TEST(GpuElementwiseLaunchers, RejectBadParamsWithoutTouchingTheDevice) {
  float buf[64] = {};
  RmsNormParams n;
  n.x = n.weight = buf;
  n.out = buf;
  n.rows = 2;
  n.dim = 16;
  n.x_stride = 16;
  n.out_stride = 8;
  EXPECT_THAT(std::string(LaunchRmsNorm(n, nullptr).message()), HasSubstr("out_stride"));
  n.out_stride = 16;
  n.dtype = static_cast<DType>(7);
  const absl::Status bad_dtype = LaunchRmsNorm(n, nullptr);
  EXPECT_EQ(bad_dtype.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_dtype.message()), HasSubstr("unsupported dtype 7"));

  int64_t pos[2] = {0, 1};
  RopeParams r;
  r.x = buf;
  r.positions = pos;
  r.inv_freq = buf;
  r.tokens = 2;
  r.heads = 1;
  r.head_dim = 8;
  r.rotary_dim = 9;
  EXPECT_THAT(std::string(LaunchRope(r, nullptr).message()), HasSubstr("rotary_dim"));
  r.rotary_dim = 8;
  r.dtype = static_cast<DType>(9);
  EXPECT_THAT(std::string(LaunchRope(r, nullptr).message()),
              HasSubstr("LaunchRope: unsupported dtype 9"));

  SwiGluParams s;
  s.gate = s.up = buf;
  s.out = buf;
  s.rows = 2;
  s.dim = 8;
  s.gate_stride = s.up_stride = 8;
  s.out_stride = 8;
  s.up = nullptr;
  EXPECT_THAT(std::string(LaunchSwiGlu(s, nullptr).message()), HasSubstr("up is null"));
  s.up = buf;
  s.dtype = static_cast<DType>(3);
  EXPECT_THAT(std::string(LaunchSwiGlu(s, nullptr).message()),
              HasSubstr("LaunchSwiGlu: unsupported dtype 3"));
  // Nothing to do is not an error, and launches nothing.
  s.rows = 0;
  s.dtype = DType::kBF16;
  EXPECT_TRUE(LaunchSwiGlu(s, nullptr).ok());
}

}  // namespace
}  // namespace sparsefill::kernels
