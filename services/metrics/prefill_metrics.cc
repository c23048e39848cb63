#include "services/metrics/prefill_metrics.h"

#include <string>

#include "services/metrics/buckets.h"

namespace sparsefill::metrics {

PrefillMetricSet::PrefillMetricSet(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("sparsefill_prefill_requests_total")
                    .Help("Finished prefills by status code")
                    .Register(registry)),
      tokens_(prometheus::BuildCounter()
                  .Name("sparsefill_prefill_tokens_total")
                  .Help("Prompt tokens of successful prefills")
                  .Register(registry)
                  .Add({})),
      duration_(prometheus::BuildHistogram()
                    .Name("sparsefill_prefill_duration_seconds")
                    .Help("Latency of successful prefills, admission wait included")
                    .Register(registry)
                    .Add({}, LatencyBuckets())),
      selected_(prometheus::BuildCounter()
                    .Name("sparsefill_attention_selected_keys_total")
                    .Help("Keys sparse attention read, summed over queries and heads")
                    .Register(registry)),
      causal_(prometheus::BuildCounter()
                  .Name("sparsefill_attention_causal_keys_total")
                  .Help("Keys dense causal attention would have read")
                  .Register(registry)),
      loss_sum_(prometheus::BuildCounter()
                    .Name("sparsefill_attention_information_loss_ratio_sum")
                    .Help("Sum of the measured attention mass lost to selection")
                    .Register(registry)),
      loss_count_(prometheus::BuildCounter()
                      .Name("sparsefill_attention_information_loss_ratio_count")
                      .Help("Samples behind sparsefill_attention_information_loss_ratio_sum")
                      .Register(registry)) {}

void PrefillMetricSet::RecordPrefill(absl::StatusCode code, int64_t tokens, double seconds) {
  requests_.Add({{"status", absl::StatusCodeToString(code)}}).Increment();
  if (code != absl::StatusCode::kOk) return;
  if (tokens > 0) tokens_.Increment(static_cast<double>(tokens));
  if (seconds >= 0) duration_.Observe(seconds);
}

void PrefillMetricSet::RecordLayer(int32_t layer, int64_t selected_keys, int64_t causal_keys,
                                   double loss_sum, int64_t loss_count) {
  if (layer < 0) return;
  const std::map<std::string, std::string> labels = {{"layer", std::to_string(layer)}};
  if (selected_keys >= 0) selected_.Add(labels).Increment(static_cast<double>(selected_keys));
  if (causal_keys >= 0) causal_.Add(labels).Increment(static_cast<double>(causal_keys));
  if (loss_count > 0 && loss_sum >= 0) {
    loss_sum_.Add(labels).Increment(loss_sum);
    loss_count_.Add(labels).Increment(static_cast<double>(loss_count));
  }
}

}  // namespace sparsefill::metrics
