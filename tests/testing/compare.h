// Comparators for tests: NaN/Inf agreement, normalised error, guard sentinels, fresh randoms.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"

namespace sparsefill::testing {

// A seed that differs on every run (time + counter), printed via SCOPED_TRACE by the caller so a
// failure can be replayed with SPARSEFILL_TEST_SEED=<seed>.
uint64_t FreshSeed();

// n values ~ N(0, stddev^2) (never all zeros).
std::vector<float> RandomNormal(size_t n, Rng& rng, float stddev = 1.0f);
std::vector<float> RandomUniform(size_t n, Rng& rng, float lo, float hi);

// ||got - want|| / max(||want||, tiny); NaN/Inf positions must agree, else a failure.
::testing::AssertionResult RelativeL2Near(std::span<const float> got, std::span<const float> want,
                                          double max_rel_error);
// max |got - want| <= atol + rtol * |want| element-wise; reports the worst element.
::testing::AssertionResult AllClose(std::span<const float> got, std::span<const float> want,
                                    double atol, double rtol);

// A buffer with `guard` poisoned elements on each side of the payload; Intact() checks that no
// write landed outside the payload.
class GuardedBuffer {
 public:
  GuardedBuffer(size_t n, size_t guard = 64, float poison = 1.2345e30f);
  float* data() { return buf_.data() + guard_; }
  const float* data() const { return buf_.data() + guard_; }
  size_t size() const { return n_; }
  std::span<const float> span() const { return {data(), n_}; }
  // Fill the payload with poison too (to check that every element is written).
  void Poison();
  ::testing::AssertionResult Intact() const;
  // Every payload element was overwritten (no poison left).
  ::testing::AssertionResult FullyWritten() const;

 private:
  size_t n_, guard_;
  float poison_;
  std::vector<float> buf_;
};

// Source-root relative path of the shared data folder (../shared/data) or "" when absent.
std::string SharedDataDir();
// Directory of the built binaries (bin/), from the environment the test runner sets.
std::string BinDir();
// Makes a fresh temporary directory under the test's temp dir.
std::string MakeTempDir(const std::string& prefix);

}  // namespace sparsefill::testing
