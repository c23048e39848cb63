// The KV store (DESIGN §6): caches written layer by layer, placed hot or cold by the
// locality-constrained ranking, checksummed, durable, and recovered after a crash.
//
// Durability model: every block is written through to the persistent tier (RocksDB), so a
// READY cache survives restarts and kill -9; the hot blocks are additionally kept in the host
// (and, when present, device) tier, from which they are served. Demoting a hot block therefore
// only drops its in-memory copy: a block of a READY cache is never lost except by deleting the
// whole cache.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/common/clock.h"
#include "sparsefill/kvstore/layout.h"
#include "sparsefill/kvstore/tier.h"

namespace sparsefill::kvstore {

enum class CacheState : uint8_t { kPending = 0, kReady = 1 };
std::string_view CacheStateName(CacheState s);

struct BlockMeta {
  Tier tier = Tier::kDisk;  // the hottest tier holding it now
  bool hot = false;         // placement's decision for decoding (kept hot while budgets allow)
  uint64_t checksum = 0;    // xxh64 of the block's bytes
};

struct Manifest {
  CacheId id;
  std::string model;
  std::string tenant;
  CacheLayout layout;
  CacheState state = CacheState::kPending;
  int64_t created_unix_ms = 0;
  int64_t expires_unix_ms = 0;          // 0: never
  std::vector<BlockMeta> blocks;        // [num_layers, kv_heads, num_blocks] (CacheLayout::Index)
  std::vector<uint8_t> layers_written;  // [num_layers]: 1 once the layer is stored

  std::string Serialize() const;
  // InvalidArgument/DataLoss naming what is malformed.
  static absl::StatusOr<Manifest> Parse(std::string_view bytes);
};

// Which blocks stay hot after each layer (DESIGN §4 NOSA, §6). Per (layer, KV head): the first
// init_blocks, the last local_blocks of the prompt (decoding reads the recent past), then the
// highest query-agnostic importance, up to hot_blocks in total.
struct PlacementOptions {
  int32_t init_blocks = 1;    // default 1
  int32_t local_blocks = 32;  // default 32
  int32_t hot_blocks = 64;    // default 64; 0 keeps nothing hot (everything served from disk)
  absl::Status Validate() const;
};

// RocksDB settings; every field documents its default.
struct RocksDbOptions {
  // Integrated BlobDB: values >= min_blob_size bytes go to blob files (default 4096).
  uint64_t min_blob_size = 4096;
  uint64_t blob_file_size = 256ull << 20;  // default 256 MiB
  // Default 256 MiB: one layer of a 64K-token qwen3-8b cache fits one memtable, so a layer's
  // WriteBatch does not stall on the previous flush.
  uint64_t write_buffer_size = 256ull << 20;
  int32_t max_write_buffer_number = 3;  // default 3: the next layer overlaps a flush
  // Default true: block batches skip the WAL (each value would otherwise be written twice);
  // Commit flushes the blocks' memtable (SST + blob files, synced) before the synced READY
  // manifest, so a READY cache is as durable as with the WAL, and a crash before Commit leaves a
  // PENDING cache that recovery deletes anyway.
  bool blocks_bypass_wal = true;
  // Default false: keep the kernel's readahead on blob files (RocksDB's default of true turns it
  // off and makes every 32 KiB block a separate disk read).
  bool advise_random_on_open = false;
  // Default false: every block already carries an xxh64 that the store verifies on each read;
  // Debian's RocksDB computes its own CRC32C in software, at 20-40% of read CPU.
  bool verify_rocksdb_checksums = false;
  int32_t max_background_jobs = 2;           // default 2 (the CI machine has 2 cores)
  bool blob_garbage_collection = true;       // default on: deleted caches' blob space returns
  uint64_t block_cache_bytes = 64ull << 20;  // default 64 MiB (manifests, index blocks)
  bool use_direct_reads = false;             // default off
  absl::Status Validate() const;
};

// Hooks the metrics component implements (no singletons: the owner passes one in).
class KvStoreMetrics {
 public:
  virtual ~KvStoreMetrics() = default;
  virtual void OnBlocksStored(Tier tier, int64_t blocks, uint64_t bytes) {}
  virtual void OnBlocksRemoved(Tier tier, int64_t blocks, uint64_t bytes) {}
  virtual void OnOffload(Tier tier, uint64_t bytes) {}  // bytes written to a colder tier
  virtual void OnRead(Tier tier, uint64_t bytes) {}
  virtual void OnChecksumFailure(Tier tier) {}
  virtual void OnEviction(Tier tier, int64_t blocks) {}  // demoted for budget
};

struct TierStats {
  uint64_t bytes = 0;
  int64_t blocks = 0;
  uint64_t offload_bytes = 0;  // written into this tier as the colder copy
  int64_t reads = 0;
  int64_t checksum_failures = 0;
  int64_t evictions = 0;
};

struct KvStoreStats {
  std::array<TierStats, 3> tiers;  // indexed by Tier
  int64_t ready_caches = 0;
  int64_t pending_caches = 0;
};

struct KvStoreOptions {
  std::string path;                         // RocksDB directory; required
  uint64_t host_budget_bytes = 1ull << 30;  // default 1 GiB of hot blocks in host memory
  PlacementOptions placement;
  int64_t default_ttl_ms = 24 * 3600 * 1000;  // default 24 h; 0 never expires
  RocksDbOptions rocksdb;
  Clock* clock = nullptr;             // default Clock::Real()
  KvStoreMetrics* metrics = nullptr;  // default none
  // Optional injected tiers (tests pass fault-injecting wrappers; the CUDA engine a device
  // pool). When host_tier is null a NewHostTier(host_budget_bytes) is made.
  std::shared_ptr<BlockTier> device_tier;
  std::shared_ptr<BlockTier> host_tier;
  // Optional: block batches bound for the RocksDB tier are written through the tier this returns
  // (given the RocksDB tier, which outlives it), e.g. a FaultInjectingTier for write-error drills.
  // Manifests, reads and deletes go to RocksDB directly. Default empty: no wrapper.
  std::function<std::shared_ptr<BlockTier>(std::shared_ptr<BlockTier> disk)> wrap_disk_writes;
  absl::Status Validate() const;
};

struct CacheSpec {
  std::string model;
  std::string tenant;
  CacheLayout layout;
  int64_t ttl_ms = -1;  // -1: the store's default; 0: never expires
};

// One layer's KV for a contiguous, block-aligned range of tokens (a worker's shard or the whole
// prompt), as the engine produces it.
struct LayerData {
  int32_t layer = 0;
  int64_t token_begin = 0;  // multiple of block_size
  int64_t num_tokens = 0;
  const float* k = nullptr;  // [num_tokens, kv_heads, head_dim], converted to the layout dtype
  const float* v = nullptr;  // [num_tokens, kv_heads, head_dim]
  // Query-agnostic block ranking [kv_heads, importance_blocks] over the whole prompt's blocks;
  // null: placement by init + local only.
  const float* importance = nullptr;
  int64_t importance_blocks = 0;
};

class KvStore {
 public:
  // Opens (creating) the store and recovers: READY caches are listed again (their blocks on
  // disk); PENDING ones left by a crash are deleted with their blocks.
  static absl::StatusOr<std::unique_ptr<KvStore>> Open(const KvStoreOptions& options);
  virtual ~KvStore() = default;

  // Registers a PENDING cache (its manifest is synced before this returns). AlreadyExists when
  // the id is taken.
  [[nodiscard]] virtual absl::Status BeginCache(const CacheId& id, const CacheSpec& spec) = 0;
  // Stores one layer (or a shard of it): one RocksDB WriteBatch, checksums, placement.
  [[nodiscard]] virtual absl::Status WriteLayer(const CacheId& id, const LayerData& data) = 0;
  // READY once every block of every layer is stored and durable; FailedPrecondition naming the
  // first missing layer/block otherwise.
  [[nodiscard]] virtual absl::Status Commit(const CacheId& id) = 0;
  // Drops a PENDING cache.
  [[nodiscard]] virtual absl::Status Abort(const CacheId& id) = 0;

  [[nodiscard]] virtual absl::StatusOr<Manifest> GetManifest(const CacheId& id) const = 0;
  virtual std::vector<Manifest> ListCaches(bool include_pending) const = 0;
  // Reads one block from its hottest intact copy, verifying the xxh64. A copy that fails the
  // check is counted, dropped and never served; DataLoss naming cache, layer, head and block
  // when no intact copy is left. NotFound for an unknown cache or block.
  [[nodiscard]] virtual absl::Status ReadBlock(const BlockKey& key, std::span<uint8_t> out) = 0;
  // ReadBlock of many blocks (same verification, fallback and accounting for each): outs[i]
  // receives keys[i]. Blocks served from disk are fetched together (RocksDB MultiGet in key
  // order), which costs far fewer disk round trips than one ReadBlock per block. Every block is
  // attempted; `statuses`, when not empty, receives each block's own status. Returns OK when
  // every block was served, else the first failure in `keys` order. InvalidArgument when the
  // spans' sizes differ.
  [[nodiscard]] virtual absl::Status ReadBlocks(std::span<const BlockKey> keys,
                                                std::span<const std::span<uint8_t>> outs,
                                                std::span<absl::Status> statuses) = 0;
  [[nodiscard]] absl::Status ReadBlocks(std::span<const BlockKey> keys,
                                        std::span<const std::span<uint8_t>> outs) {
    return ReadBlocks(keys, outs, std::span<absl::Status>());
  }
  [[nodiscard]] virtual absl::Status DeleteCache(const CacheId& id) = 0;
  // Deletes caches whose TTL has passed on the injected clock; returns how many.
  [[nodiscard]] virtual absl::StatusOr<int64_t> ExpireCaches() = 0;
  virtual KvStoreStats Stats() const = 0;
};

}  // namespace sparsefill::kvstore
