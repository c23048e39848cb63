// The durable tier: RocksDB with integrated BlobDB for block values and a separate column
// family for manifests. This header stays free of RocksDB types (pimpl) so only this folder
// includes RocksDB (DESIGN §2).
//
// Keys keep one cache contiguous, so a cache is one range (one DeleteRange):
//   blocks CF:    0x01 | cache id (16 bytes, big-endian hi then lo) | layer (u32 BE) |
//                 head (u32 BE) | block (u64 BE)
//   manifests CF: 0x02 | cache id (16 bytes, big-endian)
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/kvstore/kv_store.h"
#include "sparsefill/kvstore/tier.h"

namespace sparsefill::kvstore {

class RocksDbTier final : public BlockTier {
 public:
  // Opens (creating) the database at `path`.
  static absl::StatusOr<std::unique_ptr<RocksDbTier>> Open(const std::string& path,
                                                           const RocksDbOptions& options);
  ~RocksDbTier() override;

  TierCapabilities Capabilities() const override;
  // One WriteBatch for all `blocks`. Unsynced writes become durable with the next synced write
  // (the WAL is sequential and a synced write syncs every live WAL file).
  absl::Status PutBlocks(std::span<const BlockWrite> blocks, bool sync) override;
  // DataLoss naming the key when RocksDB's own checksums (SST/blob records) fail.
  absl::Status Get(const BlockKey& key, std::span<uint8_t> out) override;
  // One MultiGet over the keys in key order (RocksDB then reads the blob values of one blob
  // file together, sorted by offset), in slices of at most kMultiGetSlice keys.
  void GetBatch(std::span<const BlockKey> keys, std::span<const std::span<uint8_t>> outs,
                std::span<absl::Status> statuses) override;
  absl::Status Erase(const BlockKey& key) override;
  // One synced batch: DeleteRange over the cache's blocks plus the delete of its manifest; then
  // a CompactRange over that range so the space (SST entries and blob files) returns.
  absl::Status DeleteCache(const CacheId& cache) override;
  // Physical bytes of the blocks column family: SST files + blob files + memtables.
  uint64_t used_bytes() const override;
  // RocksDB's estimate of live block keys (approximate after deletes until compaction).
  int64_t used_blocks() const override;

  // Manifests: small values in their own column family (no blob files).
  [[nodiscard]] absl::Status PutManifest(const CacheId& id, std::string_view bytes, bool sync);
  // Every stored manifest as (id from the key, raw bytes).
  absl::StatusOr<std::vector<std::pair<CacheId, std::string>>> ListManifests() const;
  // Ids of every cache that has at least one block key (one seek per cache).
  absl::StatusOr<std::vector<CacheId>> ListBlockCaches() const;
  // Number of block keys stored under the cache's prefix (reads them; meant for checks/tests).
  absl::StatusOr<int64_t> CountBlocks(const CacheId& id) const;
  // Makes every block written so far durable: a synced WAL, or (blocks_bypass_wal) a waited
  // flush of the blocks' memtable into synced SST and blob files.
  [[nodiscard]] absl::Status MakeBlocksDurable();
  // Syncs every live WAL file.
  [[nodiscard]] absl::Status SyncWal();
  // Flushes both column families' memtables into SST and blob files (waits for it), so the
  // next open replays less WAL.
  [[nodiscard]] absl::Status Flush();

 private:
  struct Impl;
  explicit RocksDbTier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparsefill::kvstore
