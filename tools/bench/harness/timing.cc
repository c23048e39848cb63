#include "tools/bench/harness/timing.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sparsefill::bench {

double Samples::median() const {
  if (values.empty()) return 0.0;
  std::vector<double> v = values;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Samples::min() const {
  return values.empty() ? 0.0 : *std::min_element(values.begin(), values.end());
}

double Samples::max() const {
  return values.empty() ? 0.0 : *std::max_element(values.begin(), values.end());
}

nlohmann::json Samples::ToJson() const {
  return {{"median", median()}, {"min", min()}, {"max", max()}, {"values", values}};
}

absl::StatusOr<Samples> TimeRepeated(const RepeatOptions& options,
                                     const std::function<absl::StatusOr<double>()>& body) {
  if (options.warmup < 0 || options.repeats < 1) {
    return absl::InvalidArgumentError(absl::StrCat("TimeRepeated: warmup must be >= 0 (got ",
                                                   options.warmup, ") and repeats >= 1 (got ",
                                                   options.repeats, ")"));
  }
  Samples samples;
  for (int i = 0; i < options.warmup + options.repeats; ++i) {
    absl::StatusOr<double> seconds = body();
    if (!seconds.ok()) return seconds.status();
    if (i >= options.warmup) samples.values.push_back(*seconds);
  }
  return samples;
}

Samples ToGBps(uint64_t bytes, const Samples& seconds) {
  Samples out;
  out.values.reserve(seconds.values.size());
  for (double s : seconds.values) out.values.push_back(GBps(bytes, s));
  return out;
}

}  // namespace sparsefill::bench
