#include "tests/testing/compare.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include <unistd.h>

namespace sparsefill::testing {

uint64_t FreshSeed() {
  if (const char* s = std::getenv("SPARSEFILL_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static std::atomic<uint64_t> counter{0};
  const uint64_t t = static_cast<uint64_t>(
      std::chrono::high_resolution_clock::now().time_since_epoch().count());
  return SplitMix64(t ^ (counter.fetch_add(1) * 0x9e3779b97f4a7c15ull));
}

std::vector<float> RandomNormal(size_t n, Rng& rng, float stddev) {
  std::vector<float> v(n);
  for (auto& x : v) x = rng.Normal() * stddev;
  return v;
}

std::vector<float> RandomUniform(size_t n, Rng& rng, float lo, float hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * rng.Uniform();
  return v;
}

::testing::AssertionResult RelativeL2Near(std::span<const float> got, std::span<const float> want,
                                          double max_rel_error) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << "size mismatch: got " << got.size() << " want " << want.size();
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool gf = std::isfinite(got[i]), wf = std::isfinite(want[i]);
    if (gf != wf || (!gf && (std::isnan(got[i]) != std::isnan(want[i])))) {
      return ::testing::AssertionFailure() << "NaN/Inf disagreement at " << i << ": got " << got[i]
                                           << " want " << want[i];
    }
    if (!gf) continue;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (rel > max_rel_error) {
    return ::testing::AssertionFailure()
           << "relative L2 error " << rel << " > " << max_rel_error << " over " << got.size()
           << " elements";
  }
  return ::testing::AssertionSuccess() << "relative L2 error " << rel;
}

::testing::AssertionResult AllClose(std::span<const float> got, std::span<const float> want,
                                    double atol, double rtol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << "size mismatch: got " << got.size() << " want " << want.size();
  }
  size_t worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) {
      return ::testing::AssertionFailure() << "NaN disagreement at " << i;
    }
    if (std::isnan(got[i])) continue;
    const double excess = std::fabs(static_cast<double>(got[i]) - want[i]) -
                          (atol + rtol * std::fabs(static_cast<double>(want[i])));
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (worst_excess > 0) {
    return ::testing::AssertionFailure() << "element " << worst << ": got " << got[worst]
                                         << " want " << want[worst] << " (atol " << atol
                                         << ", rtol " << rtol << ")";
  }
  return ::testing::AssertionSuccess();
}

GuardedBuffer::GuardedBuffer(size_t n, size_t guard, float poison)
    : n_(n), guard_(guard), poison_(poison), buf_(n + 2 * guard, poison) {}

void GuardedBuffer::Poison() { std::fill(buf_.begin() + guard_, buf_.end() - guard_, poison_); }

::testing::AssertionResult GuardedBuffer::Intact() const {
  for (size_t i = 0; i < guard_; ++i) {
    if (buf_[i] != poison_) {
      return ::testing::AssertionFailure() << "write before the buffer at offset -" << guard_ - i;
    }
    if (buf_[guard_ + n_ + i] != poison_) {
      return ::testing::AssertionFailure() << "write past the buffer at offset +" << i;
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult GuardedBuffer::FullyWritten() const {
  for (size_t i = 0; i < n_; ++i) {
    if (buf_[guard_ + i] == poison_) {
      return ::testing::AssertionFailure() << "element " << i << " was never written";
    }
  }
  return ::testing::AssertionSuccess();
}

std::string SharedDataDir() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("SPARSEFILL_SHARED_DATA")) {
    if (fs::exists(env)) return env;
  }
  const char* src = std::getenv("SPARSEFILL_SOURCE_DIR");
  const fs::path root = src ? fs::path(src) : fs::current_path();
  const fs::path p = root / ".." / "shared" / "data";
  return fs::exists(p) ? p.lexically_normal().string() : std::string();
}

std::string BinDir() {
  const char* b = std::getenv("SPARSEFILL_BIN_DIR");
  return b ? std::string(b) : std::string("build/bin");
}

std::string MakeTempDir(const std::string& prefix) {
  namespace fs = std::filesystem;
  static std::atomic<int> n{0};
  const fs::path p = fs::temp_directory_path() /
                     (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + "-" +
                      std::to_string(FreshSeed() % 1000000));
  fs::create_directories(p);
  return p.string();
}

}  // namespace sparsefill::testing
