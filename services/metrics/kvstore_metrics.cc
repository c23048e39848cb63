#include "services/metrics/kvstore_metrics.h"

#include <string>

namespace sparsefill::metrics {

KvStoreMetricSet::KvStoreMetricSet(prometheus::Registry& registry) {
  auto& bytes = prometheus::BuildGauge()
                    .Name("sparsefill_kv_bytes")
                    .Help("KV block bytes held in the tier")
                    .Register(registry);
  auto& blocks = prometheus::BuildGauge()
                     .Name("sparsefill_kv_blocks")
                     .Help("KV blocks held in the tier")
                     .Register(registry);
  auto& offload = prometheus::BuildCounter()
                      .Name("sparsefill_kv_offload_bytes_total")
                      .Help("Bytes written into the tier as the colder copy of blocks")
                      .Register(registry);
  auto& read = prometheus::BuildCounter()
                   .Name("sparsefill_kv_read_bytes_total")
                   .Help("Block bytes read from the tier")
                   .Register(registry);
  auto& checksum = prometheus::BuildCounter()
                       .Name("sparsefill_kv_checksum_failures_total")
                       .Help("Blocks read from the tier whose xxh64 did not match")
                       .Register(registry);
  auto& evicted = prometheus::BuildCounter()
                      .Name("sparsefill_kv_evicted_blocks_total")
                      .Help("Blocks demoted out of the tier to stay within its budget")
                      .Register(registry);
  auto& budget = prometheus::BuildGauge()
                     .Name("sparsefill_kv_budget_bytes")
                     .Help("Byte budget of the tier; 0 when it is unbounded")
                     .Register(registry);
  for (int t = 0; t < 3; ++t) {
    const std::map<std::string, std::string> labels = {
        {"tier", std::string(kvstore::TierName(static_cast<kvstore::Tier>(t)))}};
    tiers_[t] = {&bytes.Add(labels), &blocks.Add(labels),   &offload.Add(labels),
                 &read.Add(labels),  &checksum.Add(labels), &evicted.Add(labels),
                 &budget.Add(labels)};
  }
}

KvStoreMetricSet::PerTier* KvStoreMetricSet::Of(kvstore::Tier tier) {
  const auto i = static_cast<size_t>(tier);
  return i < tiers_.size() ? &tiers_[i] : nullptr;
}

void KvStoreMetricSet::OnBlocksStored(kvstore::Tier tier, int64_t blocks, uint64_t bytes) {
  if (PerTier* t = Of(tier)) {
    t->blocks->Increment(static_cast<double>(blocks));
    t->bytes->Increment(static_cast<double>(bytes));
  }
}

void KvStoreMetricSet::OnBlocksRemoved(kvstore::Tier tier, int64_t blocks, uint64_t bytes) {
  if (PerTier* t = Of(tier)) {
    t->blocks->Decrement(static_cast<double>(blocks));
    t->bytes->Decrement(static_cast<double>(bytes));
  }
}

void KvStoreMetricSet::OnOffload(kvstore::Tier tier, uint64_t bytes) {
  if (PerTier* t = Of(tier)) t->offload_bytes->Increment(static_cast<double>(bytes));
}

void KvStoreMetricSet::OnRead(kvstore::Tier tier, uint64_t bytes) {
  if (PerTier* t = Of(tier)) t->read_bytes->Increment(static_cast<double>(bytes));
}

void KvStoreMetricSet::OnChecksumFailure(kvstore::Tier tier) {
  if (PerTier* t = Of(tier)) t->checksum_failures->Increment();
}

void KvStoreMetricSet::SetBudget(kvstore::Tier tier, uint64_t bytes) {
  if (PerTier* t = Of(tier)) t->budget_bytes->Set(static_cast<double>(bytes));
}

void KvStoreMetricSet::OnEviction(kvstore::Tier tier, int64_t blocks) {
  if (PerTier* t = Of(tier)) t->evicted_blocks->Increment(static_cast<double>(blocks));
}

}  // namespace sparsefill::metrics
