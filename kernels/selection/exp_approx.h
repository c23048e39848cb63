// exp() for softmax rows on the CPU. std::exp does not vectorise without -ffast-math, and the
// quality metrics take hundreds of millions of exponentials per layer at 16K tokens; this one is
// plain arithmetic that GCC and Clang turn into AVX2 code. Relative error below 1e-7 (Cephes
// expf polynomial).
#pragma once

#include <bit>
#include <cstdint>

namespace sparsefill::kernels::internal {

// exp(x) for x <= 0 (softmax after subtracting the row maximum); inputs below -87 (and -inf)
// are clamped to -87, where exp is below 1.7e-38 and cannot change a softmax sum that contains
// exp(0) = 1. Everything is integer or float arithmetic without compares on floats, because GCC
// does not if-convert float compares under the default -ftrapping-math and would not vectorise.
inline float ExpNonPositive(float x) {
  // For x <= 0 the bit patterns grow with |x| as unsigned integers: clamp in that domain.
  constexpr uint32_t kMinus87 = 0xC2AE0000u;  // bits of -87.0f
  uint32_t u = std::bit_cast<uint32_t>(x);
  u = u > kMinus87 ? kMinus87 : u;
  x = std::bit_cast<float>(u);
  // n = round(x / ln 2) by the 1.5 * 2^23 trick: the integer lands in the low mantissa bits.
  constexpr float kMagic = 12582912.0f;
  const float shifted = x * 1.44269504088896341f + kMagic;
  const int32_t n = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kMagic);
  const float fn = shifted - kMagic;
  // r = x - n ln2 in two steps (Cody-Waite) so r keeps full precision.
  float r = x - fn * 0.693359375f;
  r = r + fn * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  return er * std::bit_cast<float>((n + 127) << 23);
}

}  // namespace sparsefill::kernels::internal
