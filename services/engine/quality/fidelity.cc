// Output fidelity (relative L2, next-token KL) and the per-layer quality summary.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sparsefill/engine/quality.h"

namespace sparsefill::engine {

absl::StatusOr<double> RelativeL2(std::span<const float> got, std::span<const float> ref) {
  if (got.size() != ref.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("relative L2: got has ", got.size(), " elements, ref ", ref.size()));
  }
  double diff = 0.0;
  double norm = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double r = ref[i];
    const double e = static_cast<double>(got[i]) - r;
    diff += e * e;
    norm += r * r;
  }
  if (std::isnan(diff) || std::isnan(norm)) return std::numeric_limits<double>::quiet_NaN();
  if (norm == 0.0) return diff == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(diff / norm);
}

absl::StatusOr<double> NextTokenKl(std::span<const float> dense_logits,
                                   std::span<const float> sparse_logits, int64_t rows,
                                   int64_t vocab) {
  if (rows <= 0 || vocab <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("next-token KL: rows ", rows, " and vocab ", vocab, " must be positive"));
  }
  if (rows > std::numeric_limits<int64_t>::max() / vocab ||
      static_cast<int64_t>(dense_logits.size()) != rows * vocab ||
      static_cast<int64_t>(sparse_logits.size()) != rows * vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("next-token KL: expected ", rows, " x ", vocab, " logits, got ",
                     dense_logits.size(), " (dense) and ", sparse_logits.size(), " (sparse)"));
  }
  // log-sum-exp of one row in double.
  const auto lse = [vocab](const float* x) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t v = 0; v < vocab; ++v) mx = std::max(mx, static_cast<double>(x[v]));
    double s = 0.0;
    for (int64_t v = 0; v < vocab; ++v) s += std::exp(x[v] - mx);
    return mx + std::log(s);
  };
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = dense_logits.data() + r * vocab;
    const float* b = sparse_logits.data() + r * vocab;
    const double lse_a = lse(a);
    const double lse_b = lse(b);
    double kl = 0.0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double log_p = a[v] - lse_a;
      const double log_q = b[v] - lse_b;
      const double pv = std::exp(log_p);
      if (pv > 0.0) kl += pv * (log_p - log_q);
    }
    total += kl;
  }
  return total / static_cast<double>(rows);
}

QualitySummary Summarize(std::span<const LayerQualityStats> layers) {
  QualitySummary s;
  s.layers = static_cast<int32_t>(layers.size());
  double loss_sum = 0.0;
  int64_t loss_count = 0;
  double l2_sum = 0.0;
  for (const LayerQualityStats& l : layers) {
    s.selected_keys += l.selected_keys;
    s.causal_keys += l.causal_keys;
    loss_sum += l.info_loss.sum;
    loss_count += l.info_loss.count;
    s.max_layer_info_loss = std::max(s.max_layer_info_loss, l.info_loss.mean());
    l2_sum += l.output_rel_l2;
  }
  s.sparsity = s.causal_keys > 0
                   ? 1.0 - static_cast<double>(s.selected_keys) / static_cast<double>(s.causal_keys)
                   : 0.0;
  s.info_loss = loss_count > 0 ? loss_sum / static_cast<double>(loss_count) : 0.0;
  s.mean_output_rel_l2 = layers.empty() ? 0.0 : l2_sum / static_cast<double>(layers.size());
  return s;
}

std::string QualitySummary::ToString() const {
  return absl::StrFormat(
      "layers=%d selected_keys=%d causal_keys=%d sparsity=%.4f info_loss=%.6f "
      "max_layer_info_loss=%.6f output_rel_l2=%.3e final_hidden_rel_l2=%.3e next_token_kl=%.3e",
      layers, selected_keys, causal_keys, sparsity, info_loss, max_layer_info_loss,
      mean_output_rel_l2, final_hidden_rel_l2, next_token_kl);
}

}  // namespace sparsefill::engine
