// A fault-injecting wrapper over any BlockTier (STYLE §11), for tests and failure drills:
// fail the Nth put, fail puts over a byte budget the inner tier does not advertise, corrupt
// blocks at rest (as stored) or in flight (as read), fail reads. Thread-safe; faults can be
// (re)configured at any time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "sparsefill/kvstore/tier.h"

namespace sparsefill::kvstore {

class FaultInjectingTier final : public BlockTier {
 public:
  using KeyPredicate = std::function<bool(const BlockKey&)>;

  explicit FaultInjectingTier(std::shared_ptr<BlockTier> inner);

  // The nth PutBlocks call from now (1-based) fails with `error` and stores nothing; 0 disarms.
  void FailNthPut(int64_t n, absl::Status error = absl::UnavailableError("injected put failure"));
  // PutBlocks fails with ResourceExhausted, storing nothing, when the inner tier's used bytes
  // plus the new blocks would exceed `budget_bytes` (0 disarms). The budget is deliberately not
  // advertised in Capabilities(): callers must cope with a tier that fills up unannounced.
  void FailPutsOverBudget(uint64_t budget_bytes);
  // Each PutBlocks call from now fails with `error`, storing nothing, with probability `rate`
  // (pseudo-random from `seed`, so a drill can be repeated); 0 disarms. Models a disk that fails
  // writes now and then (soak tests).
  void FailPutsAtRate(double rate, uint64_t seed,
                      absl::Status error = absl::UnavailableError("injected put failure"));
  // Blocks matching `which` are stored with one bit flipped (corruption at rest); null disarms.
  void CorruptOnPut(KeyPredicate which);
  // Reads of blocks matching `which` return the stored bytes with one bit flipped; null disarms.
  void CorruptOnRead(KeyPredicate which);
  // Reads of blocks matching `which` fail with `error`; null disarms.
  void FailGets(KeyPredicate which,
                absl::Status error = absl::UnavailableError("injected get failure"));

  int64_t puts() const;             // PutBlocks calls seen
  int64_t injected_faults() const;  // faults injected so far (all kinds)

  TierCapabilities Capabilities() const override { return inner_->Capabilities(); }
  absl::Status PutBlocks(std::span<const BlockWrite> blocks, bool sync) override;
  absl::Status Get(const BlockKey& key, std::span<uint8_t> out) override;
  absl::Status Erase(const BlockKey& key) override { return inner_->Erase(key); }
  absl::Status DeleteCache(const CacheId& cache) override { return inner_->DeleteCache(cache); }
  uint64_t used_bytes() const override { return inner_->used_bytes(); }
  int64_t used_blocks() const override { return inner_->used_blocks(); }

 private:
  const std::shared_ptr<BlockTier> inner_;
  mutable std::mutex mu_;
  int64_t puts_ = 0;
  int64_t fail_put_at_ = 0;  // absolute put count that fails; 0: none
  absl::Status put_error_;
  uint64_t put_budget_ = 0;
  double put_error_rate_ = 0.0;
  uint64_t rate_state_ = 0;  // splitmix64 state of FailPutsAtRate
  absl::Status rate_error_;
  KeyPredicate corrupt_on_put_;
  KeyPredicate corrupt_on_read_;
  KeyPredicate fail_gets_;
  absl::Status get_error_;
  int64_t injected_ = 0;
};

}  // namespace sparsefill::kvstore
