// Host pool: plain host memory under a byte budget. (Pinned allocations come with the CUDA
// engine, which owns the device allocator; the budget and the semantics are the same.)
#include <map>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/kvstore/block_key_order.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kvstore/tier.h"

namespace sparsefill::kvstore {
namespace {

class HostTier final : public BlockTier {
 public:
  explicit HostTier(uint64_t budget_bytes) : budget_bytes_(budget_bytes) {}

  TierCapabilities Capabilities() const override {
    return TierCapabilities{.tier = Tier::kHost,
                            .persistent = false,
                            .atomic_batches = true,
                            .budget_bytes = budget_bytes_};
  }

  absl::Status PutBlocks(std::span<const BlockWrite> blocks, bool sync) override {
    std::lock_guard<std::mutex> lock(mu_);
    // Net growth counts replaced blocks once, so rewriting a block never spuriously fails.
    uint64_t add = 0, freed = 0;
    for (const BlockWrite& w : blocks) {
      add += w.data.size();
      if (auto it = blocks_.find(w.key); it != blocks_.end()) freed += it->second.size();
    }
    if (budget_bytes_ != 0 && used_bytes_ - freed + add > budget_bytes_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("host tier budget ", budget_bytes_, " bytes: ", used_bytes_, " used, ",
                       blocks.size(), " blocks of ", add, " bytes do not fit"));
    }
    for (const BlockWrite& w : blocks) {
      std::vector<uint8_t>& slot = blocks_[w.key];
      used_bytes_ -= slot.size();
      slot.assign(w.data.begin(), w.data.end());
      used_bytes_ += slot.size();
    }
    return absl::OkStatus();
  }

  absl::Status Get(const BlockKey& key, std::span<uint8_t> out) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(key);
    if (it == blocks_.end()) {
      return absl::NotFoundError(absl::StrCat("host tier has no ", key.ToString()));
    }
    if (it->second.size() != out.size()) {
      return absl::InvalidArgumentError(absl::StrCat("host tier ", key.ToString(), " holds ",
                                                     it->second.size(), " bytes, the buffer has ",
                                                     out.size()));
    }
    std::copy(it->second.begin(), it->second.end(), out.begin());
    return absl::OkStatus();
  }

  absl::Status Erase(const BlockKey& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(key);
    if (it == blocks_.end()) {
      return absl::NotFoundError(absl::StrCat("host tier has no ", key.ToString()));
    }
    used_bytes_ -= it->second.size();
    blocks_.erase(it);
    return absl::OkStatus();
  }

  absl::Status DeleteCache(const CacheId& cache) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.lower_bound(
        BlockKey{.cache = cache, .layer = INT32_MIN, .head = INT32_MIN, .block = INT64_MIN});
    while (it != blocks_.end() && it->first.cache == cache) {
      used_bytes_ -= it->second.size();
      it = blocks_.erase(it);
    }
    return absl::OkStatus();
  }

  uint64_t used_bytes() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return used_bytes_;
  }
  int64_t used_blocks() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(blocks_.size());
  }

 private:
  const uint64_t budget_bytes_;
  mutable std::mutex mu_;
  std::map<BlockKey, std::vector<uint8_t>, BlockKeyLess> blocks_;
  uint64_t used_bytes_ = 0;
};

}  // namespace

std::unique_ptr<BlockTier> NewHostTier(uint64_t budget_bytes) {
  return std::make_unique<HostTier>(budget_bytes);
}

}  // namespace sparsefill::kvstore
