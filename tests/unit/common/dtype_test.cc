// dtype conversions: the vectorised array path equals the scalar one on every kind of value,
// and round-trips are exact where they must be.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/common/dtype.h"
#include "tests/testing/compare.h"

namespace sparsefill {
namespace {

std::vector<float> EdgeAndRandomValues(Rng& rng) {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::max(), 65504.0f, 65520.0f, 1e-8f};
  // Exact bf16 ties (low 16 bits 0x8000) with even and odd kept bits.
  for (uint32_t hi : {0x3f80u, 0x3f81u, 0xbf80u, 0x4049u}) {
    const uint32_t bits = (hi << 16) | 0x8000u;
    float f;
    std::memcpy(&f, &bits, 4);
    v.push_back(f);
  }
  for (int i = 0; i < 100000; ++i) {
    uint32_t bits = static_cast<uint32_t>(rng.NextU64());
    float f;
    std::memcpy(&f, &bits, 4);
    v.push_back(f);  // every bit pattern, NaNs with payloads included
    v.push_back(rng.Normal() * 10.0f);
  }
  return v;
}

TEST(DTypeTest, ArrayConversionToBf16EqualsScalar) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const std::vector<float> v = EdgeAndRandomValues(rng);
  std::vector<uint16_t> out(v.size());
  ConvertFromF32(v.data(), DType::kBF16, out.data(), v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    ASSERT_EQ(out[i], F32ToBf16(v[i])) << "value " << v[i] << " at " << i;
  }
  // bf16 -> f32 -> bf16 is the identity (NaN stays NaN).
  std::vector<float> back(v.size());
  ConvertToF32(out.data(), DType::kBF16, back.data(), v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(back[i])) {
      ASSERT_TRUE(std::isnan(v[i]));
      continue;
    }
    ASSERT_EQ(F32ToBf16(back[i]), out[i]);
  }
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  uint32_t tie_even = 0x3f808000u, tie_odd = 0x3f818000u;
  float a, b;
  std::memcpy(&a, &tie_even, 4);
  std::memcpy(&b, &tie_odd, 4);
  EXPECT_EQ(F32ToBf16(a), 0x3f80);  // tie, kept bit even: down
  EXPECT_EQ(F32ToBf16(b), 0x3f82);  // tie, kept bit odd: up
}

TEST(DTypeTest, F16RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToF16(f), h) << "half 0x" << std::hex << h;
  }
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);  // rounds to +inf
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
}

TEST(DTypeTest, ParseNamesTheBadValue) {
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("float16"), DType::kF16);
  auto bad = ParseDType("F64");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("F64"), std::string::npos);
}

}  // namespace
}  // namespace sparsefill
