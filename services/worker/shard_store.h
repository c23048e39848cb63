// A worker's KV store holds only its shard of each cache: the cache is created with
// layout.num_tokens = shard length, so local block b is global block b + token_begin / block_size.
// The mapping (and the whole prompt's length) is kept in a small record per cache next to the
// store, written before the cache exists, so ShardManifest answers survive restarts.
#pragma once

#include <functional>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/engine/engine.h"
#include "sparsefill/kvstore/kv_store.h"

namespace sparsefill::worker {

struct ShardRecord {
  kvstore::CacheId id;
  int64_t token_begin = 0;  // a multiple of the block size
  int64_t token_end = 0;
  int64_t num_tokens = 0;  // the whole prompt
  int32_t rank = 0;
  int32_t world_size = 0;
  std::string policy;  // "dense", "phsa", ...
};

// One JSON file per cache under a directory; thread-safe.
class ShardRecords {
 public:
  // Creates `dir` when missing and reads every record in it. A malformed file is DataLoss naming
  // it.
  static absl::StatusOr<std::unique_ptr<ShardRecords>> Open(const std::string& dir);

  // Durable before returning (written to a temporary file, fsynced, renamed).
  absl::Status Put(const ShardRecord& record);
  absl::StatusOr<ShardRecord> Get(const kvstore::CacheId& id) const;  // NotFound
  absl::Status Erase(const kvstore::CacheId& id);                     // OK when absent
  std::vector<ShardRecord> List() const;

 private:
  explicit ShardRecords(std::string dir) : dir_(std::move(dir)) {}
  std::string PathOf(const kvstore::CacheId& id) const;

  const std::string dir_;
  mutable std::mutex mu_;
  std::map<kvstore::CacheId, ShardRecord> records_;
};

// Writes each finished layer of the local shard into the KV store (engine::LayerKv ->
// kvstore::LayerData at local token 0; the shard's own block importance places hot blocks).
class StoreLayerSink final : public engine::LayerSink {
 public:
  // `store` is not owned. `shard_begin` is the absolute position of the shard's first token.
  // `on_stored` runs right after each layer is stored (the worker streams its ShardLayerDone
  // from there, so decode nodes can start on a layer while later ones are computed).
  using OnStored = std::function<absl::Status(const engine::LayerKv&)>;
  StoreLayerSink(kvstore::KvStore* store, kvstore::CacheId id, int64_t shard_begin,
                 int64_t shard_tokens, OnStored on_stored = nullptr)
      : store_(store),
        id_(id),
        shard_begin_(shard_begin),
        shard_tokens_(shard_tokens),
        on_stored_(std::move(on_stored)) {}

  absl::Status OnLayer(const engine::LayerKv& kv) override;
  // Layers stored so far, in the order they came.
  const std::vector<int32_t>& stored() const { return stored_; }

 private:
  kvstore::KvStore* store_;
  kvstore::CacheId id_;
  int64_t shard_begin_;
  int64_t shard_tokens_;
  OnStored on_stored_;
  std::vector<int32_t> stored_;
};

}  // namespace sparsefill::worker
