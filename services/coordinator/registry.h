// The cache registry (DESIGN §1.2, §7): one entry per cache with its tenant, state, layout, shard
// map and expiry, persisted in a RecordStore so it survives restarts. Entries left PENDING by a
// crashed coordinator come back FAILED with their shards marked for deletion on the workers.
// Tenancy is enforced here: another tenant's cache is NOT_FOUND, exactly like a missing one.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/coordinator/cancellation.h"
#include "services/coordinator/shard_plan.h"
#include "sparsefill/common/clock.h"
#include "sparsefill/kvstore/layout.h"
#include "sparsefill/kvstore/record_store.h"

namespace sparsefill::coordinator {

enum class CacheState : uint8_t { kPending, kReady, kFailed };
std::string_view CacheStateName(CacheState state);  // "PENDING", "READY", "FAILED"

struct CacheEntry {
  kvstore::CacheId id;
  std::string tenant;
  std::string model;
  CacheState state = CacheState::kPending;
  // num_layers, kv_heads, head_dim, block_size and num_tokens are known at admission; the dtype
  // once the first worker reported its shard manifest (dtype_known).
  kvstore::CacheLayout layout;
  bool dtype_known = false;
  std::string policy;
  int64_t created_unix_ms = 0;
  int64_t expires_unix_ms = 0;
  int32_t layers_ready = 0;
  int64_t hot_blocks = 0;
  int64_t cold_blocks = 0;
  uint64_t bytes = 0;
  std::vector<ShardRange> shards;  // rank order
  std::string failure;             // why it is FAILED
  // Deleted or expired: invisible to tenants; its shards still have to go from the workers.
  bool deleted = false;
  // Shards that still have to be deleted on the workers (FAILED, deleted or expired entries).
  bool cleanup_pending = false;
};

// JSON, so an operator can read the registry with ldb.
std::string SerializeEntry(const CacheEntry& entry);
absl::StatusOr<CacheEntry> ParseEntry(std::string_view bytes, std::string_view key);

class CacheRegistry {
 public:
  // Loads every entry from `store` (not owned). PENDING entries become FAILED ("coordinator
  // restarted during prefill") with cleanup_pending, persisted before this returns.
  static absl::StatusOr<std::unique_ptr<CacheRegistry>> Open(kvstore::RecordStore* store,
                                                             Clock* clock);

  // Adds a new entry (synced). AlreadyExists for a duplicate id.
  absl::Status Create(const CacheEntry& entry);
  // The entry, when it exists, is not deleted, not expired and belongs to `tenant`; else
  // NOT_FOUND naming the id (the same message whether or not another tenant owns it).
  absl::StatusOr<CacheEntry> Get(const kvstore::CacheId& id, std::string_view tenant) const;
  // Applies `fn` to the entry and persists it (`sync`: durably). NOT_FOUND when absent.
  absl::Status Update(const kvstore::CacheId& id, bool sync,
                      const std::function<void(CacheEntry&)>& fn);
  // Raises layers_ready (never lowers it) and wakes streams waiting for it. Not synced: a
  // PENDING entry becomes FAILED after a crash anyway.
  absl::Status SetLayersReady(const kvstore::CacheId& id, int32_t layers_ready);
  // Waits until `layer` is ready (returns the entry), the cache is FAILED (FAILED_PRECONDITION with
  // the cause), gone (NOT_FOUND), the deadline passes (DEADLINE_EXCEEDED) or `cancel` fires.
  absl::StatusOr<CacheEntry> WaitForLayer(const kvstore::CacheId& id, std::string_view tenant,
                                          int32_t layer, Deadline deadline,
                                          const Cancellation* cancel) const;
  // Removes the entry (synced). Removing an absent entry is OK.
  absl::Status Remove(const kvstore::CacheId& id);

  // Every entry, tombstones included (maintenance).
  std::vector<CacheEntry> Snapshot() const;
  // Number of entries, tombstones included.
  size_t size() const;

 private:
  CacheRegistry(kvstore::RecordStore* store, Clock* clock) : store_(store), clock_(clock) {}
  bool VisibleLocked(const CacheEntry& e, std::string_view tenant) const;
  absl::Status PersistLocked(const CacheEntry& e, bool sync);

  kvstore::RecordStore* store_;
  Clock* clock_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<kvstore::CacheId, CacheEntry> entries_;
};

// "cache/<32 hex digits>"
std::string RegistryKey(const kvstore::CacheId& id);

}  // namespace sparsefill::coordinator
