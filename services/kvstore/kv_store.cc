// KvStore: the domain class over the tiers. Every block is written through to RocksDB (the
// durable copy); placement keeps the hot ones in the device or host tier as well, and budget
// pressure only drops those in-memory copies.
//
// Locking: `mu_` guards the cache map, every CacheEntry's metadata and the stats; it is held
// for in-memory tier operations (memcpy-sized). Disk I/O runs outside `mu_`. Operations that
// change one cache (write, commit, abort, delete) also hold that entry's `op_mu`, so they are
// ordered per cache while different caches proceed in parallel.
#include "sparsefill/kvstore/kv_store.h"

#include <algorithm>
#include <array>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "services/kvstore/placement.h"
#include "services/kvstore/rocksdb/rocksdb_tier.h"
#include "sparsefill/common/status.h"

namespace sparsefill::kvstore {
namespace {

constexpr int kTiers = 3;
size_t TierIndex(Tier t) { return static_cast<size_t>(t); }

struct CacheEntry {
  std::mutex op_mu;  // serialises write/commit/abort/delete of this cache
  Manifest manifest;
  std::vector<float> priority;                  // [total_blocks] eviction priority of a hot copy
  std::vector<uint8_t> written;                 // [total_blocks] while PENDING; empty once READY
  std::vector<int64_t> layer_blocks_written;    // [num_layers] while PENDING
  std::array<int64_t, 3> resident = {0, 0, 0};  // blocks per tier (eviction skips empty caches)
  uint64_t seq = 0;       // creation order: the oldest caches give up hot copies first
  bool removing = false;  // being deleted: invisible to readers
};

class KvStoreImpl final : public KvStore {
 public:
  KvStoreImpl(const KvStoreOptions& options, std::unique_ptr<RocksDbTier> disk,
              std::shared_ptr<BlockTier> device, std::shared_ptr<BlockTier> host)
      : options_(options),
        clock_(options.clock ? options.clock : Clock::Real()),
        metrics_(options.metrics),
        disk_(std::move(disk)),
        device_(std::move(device)),
        host_(std::move(host)) {
    if (options.wrap_disk_writes) {
      // Not owning: disk_ is declared first, so it outlives the wrapper.
      disk_writes_ =
          options.wrap_disk_writes(std::shared_ptr<BlockTier>(disk_.get(), [](auto*) {}));
    }
  }

  absl::Status Recover();

  absl::Status BeginCache(const CacheId& id, const CacheSpec& spec) override;
  absl::Status WriteLayer(const CacheId& id, const LayerData& data) override;
  absl::Status Commit(const CacheId& id) override;
  absl::Status Abort(const CacheId& id) override;
  absl::StatusOr<Manifest> GetManifest(const CacheId& id) const override;
  std::vector<Manifest> ListCaches(bool include_pending) const override;
  absl::Status ReadBlock(const BlockKey& key, std::span<uint8_t> out) override;
  absl::Status ReadBlocks(std::span<const BlockKey> keys, std::span<const std::span<uint8_t>> outs,
                          std::span<absl::Status> statuses) override;
  absl::Status DeleteCache(const CacheId& id) override;
  absl::StatusOr<int64_t> ExpireCaches() override;
  KvStoreStats Stats() const override;

 private:
  using EntryPtr = std::shared_ptr<CacheEntry>;

  bool Live(const CacheEntry& e, int64_t now) const {
    return !e.removing && (e.manifest.expires_unix_ms == 0 || now < e.manifest.expires_unix_ms);
  }
  // The live entry or NotFound naming the id (expired caches are gone for readers).
  absl::StatusOr<EntryPtr> FindLocked(const CacheId& id) const;
  BlockTier* TierPtr(Tier t) const {
    return t == Tier::kDevice ? device_.get() : t == Tier::kHost ? host_.get() : disk_.get();
  }
  BlockKey KeyOf(const CacheEntry& e, int64_t index) const;
  // Where a block to read lives, checked against the cache's layout and `out_bytes`.
  struct Located {
    EntryPtr e;  // null: not located
    Tier tier = Tier::kDisk;
    uint64_t checksum = 0;
    int64_t x = 0;  // manifest index
  };
  absl::StatusOr<Located> LocateLocked(const BlockKey& key, size_t out_bytes) const;
  // Serves the block from its hottest intact copy (ReadBlock's contract). `disk_result`, when
  // given, is the outcome of a disk fetch already made into `out`.
  absl::Status ReadLocated(const Located& r, const BlockKey& key, std::span<uint8_t> out,
                           const absl::Status* disk_result);
  // Removes the in-memory copy of block `index` (tier `t`) and accounts for it.
  void DropCopyLocked(CacheEntry& e, int64_t index, bool eviction);
  // Frees at least `bytes` in tier `t` by dropping hot copies, oldest cache and lowest priority
  // first, never from (skip, skip_layer). Returns the bytes freed.
  uint64_t EvictLocked(Tier t, uint64_t bytes, const CacheEntry* skip, int32_t skip_layer);
  // Places hot copies of `writes` (indices `index`) into the device, then the host tier.
  void PlaceHotLocked(CacheEntry& e, int32_t layer, std::vector<BlockWrite> writes,
                      std::vector<int64_t> index);
  absl::Status RemoveCache(const EntryPtr& e, bool pending_only);
  void AddStored(Tier t, int64_t blocks, uint64_t bytes) {
    stats_.tiers[TierIndex(t)].blocks += blocks;
    stats_.tiers[TierIndex(t)].bytes += bytes;
    if (metrics_) metrics_->OnBlocksStored(t, blocks, bytes);
  }
  void AddRemoved(Tier t, int64_t blocks, uint64_t bytes) {
    stats_.tiers[TierIndex(t)].blocks -= blocks;
    stats_.tiers[TierIndex(t)].bytes -= bytes;
    if (metrics_) metrics_->OnBlocksRemoved(t, blocks, bytes);
  }

  const KvStoreOptions options_;
  Clock* const clock_;
  KvStoreMetrics* const metrics_;
  const std::unique_ptr<RocksDbTier> disk_;
  const std::shared_ptr<BlockTier> device_;  // may be null
  const std::shared_ptr<BlockTier> host_;
  std::shared_ptr<BlockTier> disk_writes_;  // options.wrap_disk_writes' tier; null: disk_

  mutable std::mutex mu_;
  std::map<CacheId, EntryPtr> caches_;
  uint64_t next_seq_ = 0;
  KvStoreStats stats_;
};

absl::StatusOr<KvStoreImpl::EntryPtr> KvStoreImpl::FindLocked(const CacheId& id) const {
  auto it = caches_.find(id);
  if (it == caches_.end() || !Live(*it->second, clock_->NowUnixMillis())) {
    return absl::NotFoundError(absl::StrCat("cache ", id.ToHex(), " is not in the store",
                                            it == caches_.end() ? "" : " (expired or deleted)"));
  }
  return it->second;
}

BlockKey KvStoreImpl::KeyOf(const CacheEntry& e, int64_t index) const {
  const CacheLayout& l = e.manifest.layout;
  const int64_t nb = l.num_blocks();
  return BlockKey{.cache = e.manifest.id,
                  .layer = static_cast<int32_t>(index / (int64_t{l.kv_heads} * nb)),
                  .head = static_cast<int32_t>((index / nb) % l.kv_heads),
                  .block = index % nb};
}

absl::Status KvStoreImpl::Recover() {
  SF_ASSIGN_OR_RETURN(auto manifests, disk_->ListManifests());
  std::vector<std::pair<int64_t, EntryPtr>> ready;
  std::vector<CacheId> doomed;
  for (auto& [id, bytes] : manifests) {
    absl::StatusOr<Manifest> m = Manifest::Parse(bytes);
    // PENDING: a writer died before Commit. Unparseable: it cannot be served. Both go, blocks
    // included, so no space leaks.
    if (!m.ok() || m->state != CacheState::kReady || m->id != id) {
      doomed.push_back(id);
      continue;
    }
    auto e = std::make_shared<CacheEntry>();
    e->manifest = *std::move(m);
    for (BlockMeta& b : e->manifest.blocks) b.tier = Tier::kDisk;
    e->priority.assign(e->manifest.blocks.size(), 0.0f);
    ready.emplace_back(e->manifest.created_unix_ms, std::move(e));
  }
  std::stable_sort(ready.begin(), ready.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [created, e] : ready) {
    e->seq = next_seq_++;
    AddStored(Tier::kDisk, e->manifest.layout.total_blocks(), e->manifest.layout.total_bytes());
    ++stats_.ready_caches;
    caches_.emplace(e->manifest.id, std::move(e));
  }
  // Blocks whose cache has no READY manifest (defence in depth: BeginCache syncs the manifest
  // before any block and deletes are one batch, so this finds nothing unless files were lost).
  SF_ASSIGN_OR_RETURN(std::vector<CacheId> with_blocks, disk_->ListBlockCaches());
  for (const CacheId& id : with_blocks) {
    if (!caches_.contains(id) && std::find(doomed.begin(), doomed.end(), id) == doomed.end()) {
      doomed.push_back(id);
    }
  }
  for (const CacheId& id : doomed) SF_RETURN_IF_ERROR(disk_->DeleteCache(id));
  return absl::OkStatus();
}

absl::Status KvStoreImpl::BeginCache(const CacheId& id, const CacheSpec& spec) {
  if (absl::Status s = spec.layout.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cache ", id.ToHex(), ": ", s.message()));
  }
  if (spec.ttl_ms < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cache ", id.ToHex(), ": ttl_ms must be -1, 0 or positive, got ", spec.ttl_ms));
  }
  auto e = std::make_shared<CacheEntry>();
  Manifest& m = e->manifest;
  m.id = id;
  m.model = spec.model;
  m.tenant = spec.tenant;
  m.layout = spec.layout;
  m.state = CacheState::kPending;
  m.created_unix_ms = clock_->NowUnixMillis();
  const int64_t ttl = spec.ttl_ms < 0 ? options_.default_ttl_ms : spec.ttl_ms;
  m.expires_unix_ms = ttl == 0 ? 0 : m.created_unix_ms + ttl;
  // Only the header is persisted now: recovery needs just the id to clean a PENDING cache up.
  const std::string header = m.Serialize();
  m.blocks.assign(spec.layout.total_blocks(), BlockMeta{});
  m.layers_written.assign(spec.layout.num_layers, 0);
  e->priority.assign(m.blocks.size(), 0.0f);
  e->written.assign(m.blocks.size(), 0);
  e->layer_blocks_written.assign(spec.layout.num_layers, 0);

  std::lock_guard<std::mutex> op(e->op_mu);  // nobody can write before the manifest is durable
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (caches_.contains(id)) {
      return absl::AlreadyExistsError(absl::StrCat("cache ", id.ToHex(), " already exists"));
    }
    e->seq = next_seq_++;
    caches_.emplace(id, e);
    ++stats_.pending_caches;
  }
  absl::Status s = disk_->PutManifest(id, header, /*sync=*/true);
  if (!s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    e->removing = true;  // a WriteLayer already waiting on this entry must not write orphans
    caches_.erase(id);
    --stats_.pending_caches;
  }
  return s;
}

absl::Status KvStoreImpl::WriteLayer(const CacheId& id, const LayerData& data) {
  EntryPtr e;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SF_ASSIGN_OR_RETURN(e, FindLocked(id));
  }
  std::lock_guard<std::mutex> op(e->op_mu);
  const std::string where = absl::StrCat("cache ", id.ToHex(), " layer ", data.layer);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (e->removing) return absl::NotFoundError(absl::StrCat(AsAbsl(where), ": cache was deleted"));
    if (e->manifest.state != CacheState::kPending) {
      return absl::FailedPreconditionError(
          absl::StrCat(AsAbsl(where), ": the cache is already READY and immutable"));
    }
  }
  const CacheLayout& l = e->manifest.layout;  // immutable after BeginCache
  if (data.layer < 0 || data.layer >= l.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(where), ": layer is outside [0, ", l.num_layers, ")"));
  }
  if (data.token_begin < 0 || data.token_begin % l.block_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(where), ": token_begin ", data.token_begin,
                     " is not a non-negative multiple of block_size ", l.block_size));
  }
  if (data.num_tokens <= 0 || data.num_tokens > l.num_tokens - data.token_begin) {
    return absl::InvalidArgumentError(absl::StrCat(
        AsAbsl(where), ": tokens [", data.token_begin, ", ", data.token_begin + data.num_tokens,
        ") are empty or exceed the cache's ", l.num_tokens, " tokens"));
  }
  const int64_t token_end = data.token_begin + data.num_tokens;
  if (token_end != l.num_tokens && token_end % l.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(where), ": token end ", token_end,
                                                   " is neither block-aligned (block_size ",
                                                   l.block_size, ") nor the prompt's end"));
  }
  if (data.k == nullptr || data.v == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(where), ": k and v must be non-null"));
  }
  const int64_t nb = l.num_blocks();
  if (data.importance != nullptr && data.importance_blocks != nb) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(where), ": importance covers ",
                                                   data.importance_blocks,
                                                   " blocks; the prompt has ", nb));
  }

  // Convert into one buffer: per head, per block, K [tokens, head_dim] then V [tokens, head_dim].
  const int64_t b0 = data.token_begin / l.block_size;
  const int64_t b1 = (token_end + l.block_size - 1) / l.block_size;
  const size_t elem = DTypeSize(l.dtype);
  const size_t row_bytes = static_cast<size_t>(l.head_dim) * elem;
  std::vector<uint8_t> buffer(static_cast<size_t>(data.num_tokens) * l.kv_heads * row_bytes * 2);
  std::vector<BlockWrite> writes;
  std::vector<int64_t> index;
  std::vector<uint64_t> sums;
  writes.reserve((b1 - b0) * l.kv_heads);
  size_t offset = 0;
  for (int32_t h = 0; h < l.kv_heads; ++h) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t tokens = l.BlockTokens(b);
      uint8_t* dst = buffer.data() + offset;
      for (int kv = 0; kv < 2; ++kv) {
        const float* src = kv == 0 ? data.k : data.v;
        for (int64_t t = 0; t < tokens; ++t) {
          const int64_t token = b * l.block_size + t - data.token_begin;  // row in this shard
          ConvertFromF32(src + (token * l.kv_heads + h) * l.head_dim, l.dtype,
                         dst + (kv * tokens + t) * row_bytes, l.head_dim);
        }
      }
      const size_t bytes = l.BlockBytes(b);
      writes.push_back(BlockWrite{.key = {.cache = id, .layer = data.layer, .head = h, .block = b},
                                  .data = {dst, bytes}});
      index.push_back(l.Index(data.layer, h, b));
      sums.push_back(BlockChecksum(dst, bytes));
      offset += bytes;
    }
  }
  BlockTier* block_writer = disk_writes_ ? disk_writes_.get() : disk_.get();
  SF_RETURN_IF_ERROR(block_writer->PutBlocks(writes, /*sync=*/false));

  std::lock_guard<std::mutex> lock(mu_);
  Manifest& m = e->manifest;
  int64_t fresh = 0;
  uint64_t fresh_bytes = 0, all_bytes = 0;
  for (size_t i = 0; i < writes.size(); ++i) {
    const int64_t x = index[i];
    if (m.blocks[x].tier != Tier::kDisk) DropCopyLocked(*e, x, /*eviction=*/false);  // rewrite
    m.blocks[x].checksum = sums[i];
    m.blocks[x].hot = false;
    all_bytes += writes[i].data.size();
    if (!e->written[x]) {
      e->written[x] = 1;
      ++e->layer_blocks_written[data.layer];
      ++fresh;
      fresh_bytes += writes[i].data.size();
    }
  }
  if (e->layer_blocks_written[data.layer] == int64_t{l.kv_heads} * nb) {
    m.layers_written[data.layer] = 1;
  }
  AddStored(Tier::kDisk, fresh, fresh_bytes);
  stats_.tiers[TierIndex(Tier::kDisk)].offload_bytes += all_bytes;
  if (metrics_) metrics_->OnOffload(Tier::kDisk, all_bytes);

  // Placement is decided over the whole prompt per (layer, head), so shards agree on it.
  std::vector<BlockWrite> hot_writes;
  std::vector<int64_t> hot_index;
  size_t w = 0;
  for (int32_t h = 0; h < l.kv_heads; ++h) {
    const HeadPlacement p =
        PlaceHead(nb, options_.placement,
                  data.importance ? data.importance + static_cast<size_t>(h) * nb : nullptr);
    for (int64_t b = b0; b < b1; ++b, ++w) {
      if (!p.hot[b]) continue;
      m.blocks[index[w]].hot = true;
      e->priority[index[w]] = p.priority[b];
      hot_writes.push_back(writes[w]);
      hot_index.push_back(index[w]);
    }
  }
  PlaceHotLocked(*e, data.layer, std::move(hot_writes), std::move(hot_index));
  return absl::OkStatus();
}

void KvStoreImpl::DropCopyLocked(CacheEntry& e, int64_t index, bool eviction) {
  BlockMeta& meta = e.manifest.blocks[index];
  const Tier t = meta.tier;
  if (t == Tier::kDisk) return;
  const BlockKey key = KeyOf(e, index);
  IgnoreError(TierPtr(t)->Erase(key),
              "dropping an in-memory copy; NotFound means it is already gone, and the durable "
              "copy on disk keeps serving the block");
  meta.tier = Tier::kDisk;
  --e.resident[TierIndex(t)];
  AddRemoved(t, 1, e.manifest.layout.BlockBytes(key.block));
  if (eviction) {
    ++stats_.tiers[TierIndex(t)].evictions;
    if (metrics_) metrics_->OnEviction(t, 1);
  }
}

uint64_t KvStoreImpl::EvictLocked(Tier t, uint64_t bytes, const CacheEntry* skip,
                                  int32_t skip_layer) {
  std::vector<CacheEntry*> order;
  order.reserve(caches_.size());
  for (auto& [id, e] : caches_) order.push_back(e.get());
  std::sort(order.begin(), order.end(),
            [](const CacheEntry* a, const CacheEntry* b) { return a->seq < b->seq; });
  uint64_t freed = 0;
  for (CacheEntry* e : order) {
    if (freed >= bytes) break;
    if (e->resident[TierIndex(t)] == 0) continue;
    const CacheLayout& l = e->manifest.layout;
    const int64_t per_layer = int64_t{l.kv_heads} * l.num_blocks();
    std::vector<int64_t> held;
    for (int64_t i = 0; i < static_cast<int64_t>(e->manifest.blocks.size()); ++i) {
      if (e->manifest.blocks[i].tier != t) continue;
      if (e == skip && i / per_layer == skip_layer) continue;
      held.push_back(i);
    }
    std::stable_sort(held.begin(), held.end(),
                     [&](int64_t a, int64_t b) { return e->priority[a] < e->priority[b]; });
    for (int64_t i : held) {
      if (freed >= bytes) break;
      freed += l.BlockBytes(i % l.num_blocks());
      DropCopyLocked(*e, i, /*eviction=*/true);
    }
  }
  return freed;
}

void KvStoreImpl::PlaceHotLocked(CacheEntry& e, int32_t layer, std::vector<BlockWrite> writes,
                                 std::vector<int64_t> index) {
  for (Tier t : {Tier::kDevice, Tier::kHost}) {
    BlockTier* tier = TierPtr(t);
    if (tier == nullptr || writes.empty()) continue;
    uint64_t need = 0;
    for (const BlockWrite& w : writes) need += w.data.size();
    const uint64_t budget = tier->Capabilities().budget_bytes;
    if (budget != 0) {
      const uint64_t used = tier->used_bytes();
      if (used + need > budget) EvictLocked(t, used + need - budget, &e, layer);
    }
    std::vector<uint8_t> placed(writes.size(), 0);
    absl::Status s = tier->PutBlocks(writes, false);
    if (absl::IsResourceExhausted(s)) {
      // The tier filled up without saying so (or the budget is tighter than advertised).
      EvictLocked(t, need, &e, layer);
      s = tier->PutBlocks(writes, false);
    }
    if (s.ok()) {
      placed.assign(writes.size(), 1);
    } else {
      // Whatever fits, one block at a time; the rest stays on disk (or tries the next tier).
      // Once the tier is full with nothing left to evict, the remaining blocks cannot fit.
      for (size_t i = 0; i < writes.size(); ++i) {
        absl::Status one = tier->PutBlocks({&writes[i], 1}, false);
        if (absl::IsResourceExhausted(one)) {
          if (EvictLocked(t, writes[i].data.size(), &e, layer) == 0) break;
          one = tier->PutBlocks({&writes[i], 1}, false);
          if (absl::IsResourceExhausted(one)) break;
        }
        placed[i] = one.ok();
        if (!one.ok()) {
          IgnoreError(one,
                      "a hot copy is optional: the block is durable on disk and served "
                      "from there");
        }
      }
    }
    std::vector<BlockWrite> rest;
    std::vector<int64_t> rest_index;
    int64_t n = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < writes.size(); ++i) {
      if (placed[i]) {
        e.manifest.blocks[index[i]].tier = t;
        ++e.resident[TierIndex(t)];
        ++n;
        bytes += writes[i].data.size();
      } else {
        rest.push_back(writes[i]);
        rest_index.push_back(index[i]);
      }
    }
    AddStored(t, n, bytes);
    if (t == Tier::kHost && device_ != nullptr) {
      // Hot blocks that did not fit on the device are offloaded to host memory.
      stats_.tiers[TierIndex(t)].offload_bytes += bytes;
      if (metrics_ && bytes > 0) metrics_->OnOffload(t, bytes);
    }
    writes = std::move(rest);
    index = std::move(rest_index);
  }
}

absl::Status KvStoreImpl::Commit(const CacheId& id) {
  EntryPtr e;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SF_ASSIGN_OR_RETURN(e, FindLocked(id));
  }
  std::lock_guard<std::mutex> op(e->op_mu);
  std::string bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (e->removing) return absl::NotFoundError(absl::StrCat("cache ", id.ToHex(), " was deleted"));
    if (e->manifest.state == CacheState::kReady) {
      return absl::FailedPreconditionError(absl::StrCat("cache ", id.ToHex(), " is already READY"));
    }
    for (int64_t i = 0; i < static_cast<int64_t>(e->written.size()); ++i) {
      if (!e->written[i]) {
        const BlockKey k = KeyOf(*e, i);
        return absl::FailedPreconditionError(absl::StrCat(
            "cache ", id.ToHex(), " cannot be committed: layer ", k.layer, " is incomplete (head ",
            k.head, " block ", k.block, " was never written)"));
      }
    }
    Manifest ready = e->manifest;
    ready.state = CacheState::kReady;
    bytes = ready.Serialize();
  }
  // The blocks first (a flush when they bypass the WAL, else a WAL sync), then the synced READY
  // manifest: a READY manifest on disk always means every block is on disk.
  SF_RETURN_IF_ERROR(disk_->MakeBlocksDurable());
  SF_RETURN_IF_ERROR(disk_->PutManifest(id, bytes, /*sync=*/true));
  std::lock_guard<std::mutex> lock(mu_);
  e->manifest.state = CacheState::kReady;
  e->written = {};
  e->layer_blocks_written = {};
  --stats_.pending_caches;
  ++stats_.ready_caches;
  return absl::OkStatus();
}

absl::Status KvStoreImpl::RemoveCache(const EntryPtr& e, bool pending_only) {
  std::lock_guard<std::mutex> op(e->op_mu);
  const CacheId id = e->manifest.id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (e->removing || !caches_.contains(id)) {
      return absl::NotFoundError(absl::StrCat("cache ", id.ToHex(), " was already deleted"));
    }
    if (pending_only && e->manifest.state != CacheState::kPending) {
      return absl::FailedPreconditionError(
          absl::StrCat("cache ", id.ToHex(), " is READY; use DeleteCache, not Abort"));
    }
    e->removing = true;
  }
  absl::Status s = disk_->DeleteCache(id);
  std::lock_guard<std::mutex> lock(mu_);
  if (!s.ok()) {
    e->removing = false;
    return s;
  }
  Manifest& m = e->manifest;
  int64_t disk_blocks = 0;
  uint64_t disk_bytes = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(m.blocks.size()); ++i) {
    DropCopyLocked(*e, i, /*eviction=*/false);
    if (m.state == CacheState::kReady || e->written[i]) {
      ++disk_blocks;
      disk_bytes += m.layout.BlockBytes(i % m.layout.num_blocks());
    }
  }
  AddRemoved(Tier::kDisk, disk_blocks, disk_bytes);
  if (m.state == CacheState::kReady) {
    --stats_.ready_caches;
  } else {
    --stats_.pending_caches;
  }
  caches_.erase(id);
  return absl::OkStatus();
}

absl::Status KvStoreImpl::Abort(const CacheId& id) {
  EntryPtr e;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SF_ASSIGN_OR_RETURN(e, FindLocked(id));
  }
  return RemoveCache(e, /*pending_only=*/true);
}

absl::Status KvStoreImpl::DeleteCache(const CacheId& id) {
  EntryPtr e;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = caches_.find(id);  // expired caches can still be deleted explicitly
    if (it == caches_.end() || it->second->removing) {
      return absl::NotFoundError(absl::StrCat("cache ", id.ToHex(), " is not in the store"));
    }
    e = it->second;
  }
  return RemoveCache(e, /*pending_only=*/false);
}

absl::StatusOr<int64_t> KvStoreImpl::ExpireCaches() {
  std::vector<EntryPtr> expired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = clock_->NowUnixMillis();
    for (auto& [id, e] : caches_) {
      if (!e->removing && e->manifest.expires_unix_ms != 0 && now >= e->manifest.expires_unix_ms) {
        expired.push_back(e);
      }
    }
  }
  // One cache that cannot be removed must not keep the others alive: every expired cache is
  // tried, and the failures are reported together (the next sweep retries them).
  int64_t n = 0;
  absl::Status first;
  int64_t failed = 0;
  std::string failures;
  for (const EntryPtr& e : expired) {
    absl::Status s = RemoveCache(e, /*pending_only=*/false);
    if (absl::IsNotFound(s)) continue;  // deleted concurrently
    if (!s.ok()) {
      if (first.ok()) first = s;
      ++failed;
      absl::StrAppend(&failures, failures.empty() ? "" : "; ", e->manifest.id.ToHex(), ": ",
                      s.message());
      continue;
    }
    ++n;
  }
  if (!first.ok()) {
    return absl::Status(first.code(), absl::StrCat("expired ", n, " caches; ", failed,
                                                   " could not be removed: ", failures));
  }
  return n;
}

absl::StatusOr<Manifest> KvStoreImpl::GetManifest(const CacheId& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  SF_ASSIGN_OR_RETURN(EntryPtr e, FindLocked(id));
  return e->manifest;
}

std::vector<Manifest> KvStoreImpl::ListCaches(bool include_pending) const {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowUnixMillis();
  std::vector<const CacheEntry*> live;
  for (const auto& [id, e] : caches_) {
    if (Live(*e, now) && (include_pending || e->manifest.state == CacheState::kReady)) {
      live.push_back(e.get());
    }
  }
  std::sort(live.begin(), live.end(),
            [](const CacheEntry* a, const CacheEntry* b) { return a->seq < b->seq; });
  std::vector<Manifest> out;
  out.reserve(live.size());
  for (const CacheEntry* e : live) out.push_back(e->manifest);
  return out;
}

absl::StatusOr<KvStoreImpl::Located> KvStoreImpl::LocateLocked(const BlockKey& key,
                                                               size_t out_bytes) const {
  Located r;
  SF_ASSIGN_OR_RETURN(r.e, FindLocked(key.cache));
  const CacheLayout& l = r.e->manifest.layout;
  if (key.layer < 0 || key.layer >= l.num_layers || key.head < 0 || key.head >= l.kv_heads ||
      key.block < 0 || key.block >= l.num_blocks()) {
    return absl::NotFoundError(absl::StrCat(key.ToString(), " is outside the cache's layout (",
                                            l.num_layers, " layers, ", l.kv_heads, " heads, ",
                                            l.num_blocks(), " blocks)"));
  }
  r.x = l.Index(key.layer, key.head, key.block);
  if (r.e->manifest.state == CacheState::kPending && !r.e->written[r.x]) {
    return absl::NotFoundError(absl::StrCat(key.ToString(), " has not been written yet"));
  }
  if (out_bytes != l.BlockBytes(key.block)) {
    return absl::InvalidArgumentError(absl::StrCat(key.ToString(), " has ", l.BlockBytes(key.block),
                                                   " bytes; the buffer has ", out_bytes));
  }
  r.tier = r.e->manifest.blocks[r.x].tier;
  r.checksum = r.e->manifest.blocks[r.x].checksum;
  return r;
}

absl::Status KvStoreImpl::ReadBlock(const BlockKey& key, std::span<uint8_t> out) {
  Located r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SF_ASSIGN_OR_RETURN(r, LocateLocked(key, out.size()));
  }
  return ReadLocated(r, key, out, nullptr);
}

absl::Status KvStoreImpl::ReadBlocks(std::span<const BlockKey> keys,
                                     std::span<const std::span<uint8_t>> outs,
                                     std::span<absl::Status> statuses) {
  if (outs.size() != keys.size() || (!statuses.empty() && statuses.size() != keys.size())) {
    return absl::InvalidArgumentError(absl::StrCat("ReadBlocks: ", keys.size(), " keys, ",
                                                   outs.size(), " buffers and ", statuses.size(),
                                                   " statuses (must be equal, or no statuses)"));
  }
  std::vector<absl::Status> own;
  if (statuses.empty()) {
    own.resize(keys.size());
    statuses = own;
  }
  std::vector<Located> located(keys.size());
  std::vector<size_t> on_disk;  // blocks whose hottest copy is the durable one: fetched together
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
      absl::StatusOr<Located> r = LocateLocked(keys[i], outs[i].size());
      if (!r.ok()) {
        statuses[i] = r.status();
        continue;
      }
      located[i] = *std::move(r);
      if (located[i].tier == Tier::kDisk) on_disk.push_back(i);
    }
  }
  std::vector<BlockKey> disk_keys;
  std::vector<std::span<uint8_t>> disk_outs;
  disk_keys.reserve(on_disk.size());
  disk_outs.reserve(on_disk.size());
  for (size_t i : on_disk) {
    disk_keys.push_back(keys[i]);
    disk_outs.push_back(outs[i]);
  }
  std::vector<absl::Status> fetched(on_disk.size());
  disk_->GetBatch(disk_keys, disk_outs, std::span<absl::Status>(fetched));
  size_t next_disk = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (located[i].e == nullptr) continue;  // failed to locate; status already set
    const bool prefetched = next_disk < on_disk.size() && on_disk[next_disk] == i;
    statuses[i] =
        ReadLocated(located[i], keys[i], outs[i], prefetched ? &fetched[next_disk] : nullptr);
    if (prefetched) ++next_disk;
  }
  for (const absl::Status& s : statuses) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status KvStoreImpl::ReadLocated(const Located& r, const BlockKey& key, std::span<uint8_t> out,
                                      const absl::Status* disk_result) {
  const EntryPtr& e = r.e;
  const Tier tier = r.tier;
  uint64_t checksum = r.checksum;
  const int64_t x = r.x;
  std::string failures;
  auto note = [&](Tier at, std::string_view what) {
    absl::StrAppend(&failures, failures.empty() ? "" : "; ", AsAbsl(TierName(at)), ": ",
                    AsAbsl(what));
  };
  bool rechecked = false;
  std::unique_lock<std::mutex> no_writer;  // held once a PENDING block is read again
  for (int t = static_cast<int>(tier); t < kTiers; ++t) {
    const Tier at = static_cast<Tier>(t);
    BlockTier* source = TierPtr(at);
    if (source == nullptr) continue;
    // The disk copy may already be in `out`, fetched with a batch (ReadBlocks).
    const absl::Status s =
        at == Tier::kDisk && disk_result != nullptr ? *disk_result : source->Get(key, out);
    disk_result = at == Tier::kDisk ? nullptr : disk_result;  // a retry fetches afresh
    const bool hot_tier = at != Tier::kDisk;
    const bool intact = s.ok() && BlockChecksum(out.data(), out.size()) == checksum;
    if (!intact && s.ok() && !rechecked) {
      // A rewrite of a PENDING block puts its new bytes on disk before the manifest learns their
      // checksum, so a reader can pair one version's bytes with another's checksum. Read again
      // holding op_mu (no write can interleave then), against the checksum and tier the last
      // writer left, before calling the copy bad.
      rechecked = true;
      bool pending;
      {
        std::lock_guard<std::mutex> lock(mu_);
        pending = e->manifest.state == CacheState::kPending && !e->removing;
      }
      if (pending) {
        no_writer = std::unique_lock<std::mutex>(e->op_mu);
        std::lock_guard<std::mutex> lock(mu_);
        if (!e->removing) {
          checksum = e->manifest.blocks[x].checksum;
          t = static_cast<int>(e->manifest.blocks[x].tier) - 1;
          continue;
        }
      }
    }
    if (intact) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.tiers[t].reads;
      if (metrics_) metrics_->OnRead(at, out.size());
      return absl::OkStatus();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (s.ok() || absl::IsDataLoss(s)) {
      // A copy that fails its xxh64 (or RocksDB's own checksums) is counted and never served;
      // a bad in-memory copy is also dropped so the next read goes to the colder one directly.
      ++stats_.tiers[t].checksum_failures;
      if (metrics_) metrics_->OnChecksumFailure(at);
      note(at, s.ok() ? std::string_view("copy fails its xxh64 checksum")
                      : std::string_view(s.message().data(), s.message().size()));
      if (hot_tier && e->manifest.blocks[x].tier == at) DropCopyLocked(*e, x, false);
      continue;
    }
    if (hot_tier) {
      // Demoted meanwhile (NotFound) or the tier is unavailable: the colder copy serves.
      if (!absl::IsNotFound(s)) note(at, std::string_view(s.message().data(), s.message().size()));
      continue;
    }
    if (absl::IsNotFound(s)) {
      if (e->removing || !caches_.contains(key.cache)) {
        std::fill(out.begin(), out.end(), 0);
        return absl::NotFoundError(absl::StrCat(key.ToString(), ": the cache was deleted"));
      }
      note(at, "the durable copy is missing");
      break;
    }
    // A transient disk error is not data loss: keep its code so the caller can retry.
    std::fill(out.begin(), out.end(), 0);
    return absl::Status(s.code(), absl::StrCat(key.ToString(), ": ", s.message()));
  }
  // Every failure after a copy was fetched zeroes the buffer: unverified bytes never leak out.
  std::fill(out.begin(), out.end(), 0);
  return absl::DataLossError(
      absl::StrCat(key.ToString(), ": no intact copy is left (", failures, ")"));
}

KvStoreStats KvStoreImpl::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvStore>> KvStore::Open(const KvStoreOptions& options) {
  SF_RETURN_IF_ERROR(options.Validate());
  SF_ASSIGN_OR_RETURN(std::unique_ptr<RocksDbTier> disk,
                      RocksDbTier::Open(options.path, options.rocksdb));
  std::shared_ptr<BlockTier> host =
      options.host_tier ? options.host_tier
                        : std::shared_ptr<BlockTier>(NewHostTier(options.host_budget_bytes));
  auto store =
      std::make_unique<KvStoreImpl>(options, std::move(disk), options.device_tier, std::move(host));
  SF_RETURN_IF_ERROR(store->Recover());
  return std::unique_ptr<KvStore>(std::move(store));
}

}  // namespace sparsefill::kvstore
