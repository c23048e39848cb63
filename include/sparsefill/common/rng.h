// Deterministic counter-based random numbers: the same seed gives the same stream on every
// machine and compiler (make-model's checkpoints depend on it), unlike <random>'s distributions.
#pragma once

#include <cmath>
#include <cstdint>

namespace sparsefill {

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(SplitMix64(seed)) {}
  uint64_t NextU64() {
    state_ += 0x9e3779b97f4a7c15ull;
    return SplitMix64(state_);
  }
  // Uniform in [0, 1) with 24 bits of mantissa.
  float Uniform() { return static_cast<float>(NextU64() >> 40) * (1.0f / 16777216.0f); }
  // Standard normal by Box-Muller (deterministic; uses two uniforms per call).
  float Normal() {
    const double u1 = (static_cast<double>(NextU64() >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    const double u2 = static_cast<double>(NextU64() >> 11) * (1.0 / 9007199254740992.0);
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  uint64_t state_;
};

}  // namespace sparsefill
