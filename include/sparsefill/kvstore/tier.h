// Tiers hold blocks; each says what it can do (STYLE §7). Implementations: host pool (byte
// budget), RocksDB (durable; BlobDB values), device pool (interface now; CUDA comes with the GPU
// engine), and a fault-injecting wrapper for tests. All are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/kvstore/layout.h"

namespace sparsefill::kvstore {

struct TierCapabilities {
  Tier tier = Tier::kHost;
  bool persistent = false;      // survives a process restart (and a kill -9 once synced)
  bool atomic_batches = false;  // PutBlocks is all-or-nothing
  uint64_t budget_bytes = 0;    // 0: unbounded
};

struct BlockWrite {
  BlockKey key;
  std::span<const uint8_t> data;
};

class BlockTier {
 public:
  virtual ~BlockTier() = default;
  virtual TierCapabilities Capabilities() const = 0;
  // Stores blocks (typically one layer of one cache). ResourceExhausted, storing nothing, when
  // the budget cannot hold them. `sync`: durable before returning (persistent tiers).
  [[nodiscard]] virtual absl::Status PutBlocks(std::span<const BlockWrite> blocks, bool sync) = 0;
  // Copies the block into `out`, whose size must equal the stored size (InvalidArgument
  // otherwise); NotFound naming the key when absent.
  [[nodiscard]] virtual absl::Status Get(const BlockKey& key, std::span<uint8_t> out) = 0;
  // Get of many blocks in one call: statuses[i] is what Get(keys[i], outs[i]) would return.
  // All three spans have the same length (the caller checks). Tiers that can batch their I/O
  // override it (RocksDB: one MultiGet); the default reads block by block.
  virtual void GetBatch(std::span<const BlockKey> keys, std::span<const std::span<uint8_t>> outs,
                        std::span<absl::Status> statuses) {
    for (size_t i = 0; i < keys.size(); ++i) statuses[i] = Get(keys[i], outs[i]);
  }
  [[nodiscard]] virtual absl::Status Erase(const BlockKey& key) = 0;
  // Removes every block of the cache (RocksDB: one DeleteRange).
  [[nodiscard]] virtual absl::Status DeleteCache(const CacheId& cache) = 0;
  virtual uint64_t used_bytes() const = 0;
  virtual int64_t used_blocks() const = 0;
};

// Pinned-or-plain host memory with a byte budget.
std::unique_ptr<BlockTier> NewHostTier(uint64_t budget_bytes);

}  // namespace sparsefill::kvstore
