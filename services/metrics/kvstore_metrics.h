// kvstore::KvStoreMetrics as Prometheus series, labelled by tier (device, host, disk).
#pragma once

#include <array>
#include <cstdint>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "sparsefill/kvstore/kv_store.h"

namespace sparsefill::metrics {

// sparsefill_kv_bytes{tier}, sparsefill_kv_blocks{tier} (what the tier holds now, counted from
// this process's start), sparsefill_kv_offload_bytes_total{tier},
// sparsefill_kv_read_bytes_total{tier}, sparsefill_kv_checksum_failures_total{tier},
// sparsefill_kv_evicted_blocks_total{tier}.
class KvStoreMetricSet final : public kvstore::KvStoreMetrics {
 public:
  // Registers the families in `registry`, which must outlive this set.
  explicit KvStoreMetricSet(prometheus::Registry& registry);

  void OnBlocksStored(kvstore::Tier tier, int64_t blocks, uint64_t bytes) override;
  void OnBlocksRemoved(kvstore::Tier tier, int64_t blocks, uint64_t bytes) override;
  void OnOffload(kvstore::Tier tier, uint64_t bytes) override;
  void OnRead(kvstore::Tier tier, uint64_t bytes) override;
  void OnChecksumFailure(kvstore::Tier tier) override;
  void OnEviction(kvstore::Tier tier, int64_t blocks) override;
  // sparsefill_kv_budget_bytes{tier}: the tier's byte budget (0: unbounded), so that alerts can
  // compare sparsefill_kv_bytes against it without repeating each worker's flags.
  void SetBudget(kvstore::Tier tier, uint64_t bytes);

 private:
  struct PerTier {
    prometheus::Gauge* bytes = nullptr;
    prometheus::Gauge* blocks = nullptr;
    prometheus::Counter* offload_bytes = nullptr;
    prometheus::Counter* read_bytes = nullptr;
    prometheus::Counter* checksum_failures = nullptr;
    prometheus::Counter* evicted_blocks = nullptr;
    prometheus::Gauge* budget_bytes = nullptr;
  };
  // Returns null for a tier value outside the enum (never dereferenced then).
  PerTier* Of(kvstore::Tier tier);

  std::array<PerTier, 3> tiers_;  // indexed by Tier
};

}  // namespace sparsefill::metrics
