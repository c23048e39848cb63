// Prefill work as Prometheus series: requests by status, prompt tokens, latency, and per layer the
// keys attention selected against the causal keys it could have read (sparsity is derived in
// PromQL: 1 - rate(selected) / rate(causal)), plus the information loss when measured.
#pragma once

#include <cstdint>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"

namespace sparsefill::metrics {

// sparsefill_prefill_requests_total{status}, sparsefill_prefill_tokens_total,
// sparsefill_prefill_duration_seconds, sparsefill_attention_selected_keys_total{layer},
// sparsefill_attention_causal_keys_total{layer},
// sparsefill_attention_information_loss_ratio_sum{layer} and
// sparsefill_attention_information_loss_ratio_count{layer} (mean loss = rate(sum) / rate(count)).
// The coordinator records whole prompts; a worker records its shards. Thread-safe.
class PrefillMetricSet {
 public:
  // Registers the families in `registry`, which must outlive this set.
  explicit PrefillMetricSet(prometheus::Registry& registry);

  // One finished prefill (or shard). Tokens and latency count only when `code` is OK.
  void RecordPrefill(absl::StatusCode code, int64_t tokens, double seconds);
  // One layer's counters; `loss_count` 0 when the loss was not measured. Negative values (a
  // malformed report) are ignored.
  void RecordLayer(int32_t layer, int64_t selected_keys, int64_t causal_keys, double loss_sum,
                   int64_t loss_count);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Counter& tokens_;
  prometheus::Histogram& duration_;
  prometheus::Family<prometheus::Counter>& selected_;
  prometheus::Family<prometheus::Counter>& causal_;
  prometheus::Family<prometheus::Counter>& loss_sum_;
  prometheus::Family<prometheus::Counter>& loss_count_;
};

}  // namespace sparsefill::metrics
