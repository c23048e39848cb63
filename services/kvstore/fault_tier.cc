#include "sparsefill/kvstore/fault_tier.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace sparsefill::kvstore {

FaultInjectingTier::FaultInjectingTier(std::shared_ptr<BlockTier> inner)
    : inner_(std::move(inner)) {}

void FaultInjectingTier::FailNthPut(int64_t n, absl::Status error) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_put_at_ = n > 0 ? puts_ + n : 0;
  put_error_ = std::move(error);
}
void FaultInjectingTier::FailPutsOverBudget(uint64_t budget_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  put_budget_ = budget_bytes;
}
void FaultInjectingTier::FailPutsAtRate(double rate, uint64_t seed, absl::Status error) {
  std::lock_guard<std::mutex> lock(mu_);
  put_error_rate_ = rate > 0.0 ? rate : 0.0;
  rate_state_ = seed;
  rate_error_ = std::move(error);
}
void FaultInjectingTier::CorruptOnPut(KeyPredicate which) {
  std::lock_guard<std::mutex> lock(mu_);
  corrupt_on_put_ = std::move(which);
}
void FaultInjectingTier::CorruptOnRead(KeyPredicate which) {
  std::lock_guard<std::mutex> lock(mu_);
  corrupt_on_read_ = std::move(which);
}
void FaultInjectingTier::FailGets(KeyPredicate which, absl::Status error) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_gets_ = std::move(which);
  get_error_ = std::move(error);
}
int64_t FaultInjectingTier::puts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return puts_;
}
int64_t FaultInjectingTier::injected_faults() const {
  std::lock_guard<std::mutex> lock(mu_);
  return injected_;
}

absl::Status FaultInjectingTier::PutBlocks(std::span<const BlockWrite> blocks, bool sync) {
  // Held across the inner put so the budget check and the write are one step.
  std::lock_guard<std::mutex> lock(mu_);
  ++puts_;
  if (fail_put_at_ != 0 && puts_ == fail_put_at_) {
    ++injected_;
    return put_error_;
  }
  if (put_error_rate_ > 0.0) {
    // splitmix64: a fixed, seedable sequence without pulling a generator into the header.
    uint64_t z = (rate_state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    if (static_cast<double>(z >> 11) * 0x1.0p-53 < put_error_rate_) {
      ++injected_;
      return rate_error_;
    }
  }
  if (put_budget_ != 0) {
    uint64_t add = 0;
    for (const BlockWrite& w : blocks) add += w.data.size();
    if (inner_->used_bytes() + add > put_budget_) {
      ++injected_;
      return absl::ResourceExhaustedError(absl::StrCat("injected budget of ", put_budget_,
                                                       " bytes: ", inner_->used_bytes(), " used, ",
                                                       add, " more do not fit"));
    }
  }
  if (!corrupt_on_put_) return inner_->PutBlocks(blocks, sync);
  std::vector<std::vector<uint8_t>> copies;
  std::vector<BlockWrite> writes(blocks.begin(), blocks.end());
  copies.reserve(blocks.size());
  for (BlockWrite& w : writes) {
    if (w.data.empty() || !corrupt_on_put_(w.key)) continue;
    copies.emplace_back(w.data.begin(), w.data.end());
    copies.back()[copies.back().size() / 2] ^= 0x10;
    w.data = copies.back();
    ++injected_;
  }
  return inner_->PutBlocks(writes, sync);
}

absl::Status FaultInjectingTier::Get(const BlockKey& key, std::span<uint8_t> out) {
  KeyPredicate corrupt, fail;
  absl::Status error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    corrupt = corrupt_on_read_;
    fail = fail_gets_;
    error = get_error_;
  }
  if (fail && fail(key)) {
    std::lock_guard<std::mutex> lock(mu_);
    ++injected_;
    return error;
  }
  absl::Status s = inner_->Get(key, out);
  if (s.ok() && corrupt && !out.empty() && corrupt(key)) {
    out[out.size() / 3] ^= 0x01;
    std::lock_guard<std::mutex> lock(mu_);
    ++injected_;
  }
  return s;
}

}  // namespace sparsefill::kvstore
