#include "services/worker/worker.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sparsefill/common/status.h"

namespace sparsefill::worker {
namespace {

// Prefixes a status message with the request field it is about, keeping the code.
absl::Status Field(const absl::Status& s, std::string_view field) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(AsAbsl(field), ": ", s.message()));
}

}  // namespace

absl::Status WorkerOptions::Validate() const {
  if (models.empty()) return absl::InvalidArgumentError("models: at least one model is required");
  for (size_t i = 0; i < models.size(); ++i) {
    if (models[i].name.empty() || models[i].dir.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("models[", i, "]: name and directory must be non-empty"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (models[j].name == models[i].name) {
        return absl::InvalidArgumentError(
            absl::StrCat("models[", i, "]: the name \"", models[i].name, "\" is used twice"));
      }
    }
  }
  if (store_dir.empty()) return absl::InvalidArgumentError("store_dir: required");
  if (default_ttl_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_ttl_ms: must be >= 0, got ", default_ttl_ms));
  }
  SF_RETURN_IF_ERROR(Field(placement.Validate(), "placement"));
  return Field(mailbox.Validate(), "mailbox");
}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(const WorkerOptions& options) {
  SF_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<Worker> w(new Worker(options.mailbox));
  w->options_ = options;
  if (w->options_.clock == nullptr) w->options_.clock = Clock::Real();
  for (const ModelSpec& m : options.models) {
    auto engine = engine::Engine::Create(m.dir, {.backend = options.backend});
    if (!engine.ok()) {
      return absl::Status(engine.status().code(), absl::StrCat("model \"", m.name, "\" (", m.dir,
                                                               "): ", engine.status().message()));
    }
    w->models_.emplace(m.name, *std::move(engine));
  }
  kvstore::KvStoreOptions so;
  so.path = options.store_dir + "/kv";
  so.host_budget_bytes = options.host_budget_bytes;
  so.placement = options.placement;
  so.default_ttl_ms = options.default_ttl_ms;
  so.clock = w->options_.clock;
  so.metrics = options.kv_metrics;
  so.wrap_disk_writes = options.wrap_disk_writes;
  SF_ASSIGN_OR_RETURN(w->store_, kvstore::KvStore::Open(so));
  SF_ASSIGN_OR_RETURN(w->records_, ShardRecords::Open(options.store_dir + "/shards"));
  // Open() dropped PENDING caches of a crash: their records go too. A cache without a record
  // cannot be placed in its prompt, so nobody could read it; it goes as well.
  for (const ShardRecord& r : w->records_->List()) {
    if (!w->store_->GetManifest(r.id).ok()) SF_RETURN_IF_ERROR(w->records_->Erase(r.id));
  }
  for (const kvstore::Manifest& m : w->store_->ListCaches(/*include_pending=*/true)) {
    if (!w->records_->Get(m.id).ok()) SF_RETURN_IF_ERROR(w->store_->DeleteCache(m.id));
  }
  return w;
}

Worker::~Worker() = default;

absl::StatusOr<engine::Engine*> Worker::FindModel(std::string_view name) const {
  auto it = models_.find(name);
  if (it == models_.end()) {
    std::vector<std::string> names;
    for (const auto& [n, e] : models_) names.push_back(n);
    return absl::InvalidArgumentError(absl::StrCat("model: unknown model \"", AsAbsl(name),
                                                   "\"; this worker serves ",
                                                   absl::StrJoin(names, ", ")));
  }
  return it->second.get();
}

std::vector<ModelInfo> Worker::Models() const {
  std::vector<ModelInfo> out;
  for (const auto& [name, e] : models_) {
    out.push_back(
        {.name = name, .config = e->config(), .has_tokenizer = e->tokenizer() != nullptr});
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> Worker::Tokenize(std::string_view model,
                                                      std::string_view text) const {
  SF_ASSIGN_OR_RETURN(engine::Engine * e, FindModel(model));
  if (e->tokenizer() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model \"", AsAbsl(model), "\" has no tokenizer.json"));
  }
  auto ids = e->tokenizer()->Encode(text);
  if (!ids.ok()) return Field(ids.status(), "text");
  return ids;
}

absl::StatusOr<ShardOutcome> Worker::ExecuteShard(
    const ShardJob& job, ShardExchangeFactory& exchanges,
    const std::function<absl::Status(const ShardLayerEvent&)>& on_layer) {
  const auto t0 = std::chrono::steady_clock::now();
  // ---- Validation: every problem names the request field.
  const int32_t world = static_cast<int32_t>(job.peer_addresses.size());
  if (world < 1 || job.bounds.size() != static_cast<size_t>(world) + 1) {
    return absl::InvalidArgumentError("peers: at least one peer (this worker) is required");
  }
  if (job.rank < 0 || job.rank >= world) {
    return absl::InvalidArgumentError(absl::StrCat("rank: ", job.rank, " is outside [0, ", world,
                                                   ") (the job has ", world, " peers)"));
  }
  // From here the peers are known: a rank that cannot take part tells them at once, or they
  // would wait for it until their deadline.
  auto refuse = [&](absl::Status why) -> absl::Status {
    exchanges.AbortPeers(job, why);
    return why;
  };
  auto engine_or = FindModel(job.model);
  if (!engine_or.ok()) return refuse(engine_or.status());
  engine::Engine* engine = *engine_or;
  const engine::ModelConfig& c = engine->config();
  if (job.num_tokens <= 0) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat("num_tokens: must be positive, got ", job.num_tokens)));
  }
  if (job.bounds.back() != job.num_tokens) {
    return refuse(absl::InvalidArgumentError(absl::StrCat("peers: the last shard ends at token ",
                                                          job.bounds.back(), " but num_tokens is ",
                                                          job.num_tokens)));
  }
  auto layout_or = engine::ShardLayout::FromBounds(job.bounds, job.selection.block_size);
  if (!layout_or.ok()) return refuse(Field(layout_or.status(), "peers"));
  const engine::ShardLayout layout = *std::move(layout_or);
  const engine::TokenRange mine = layout.range(job.rank);
  if (static_cast<int64_t>(job.tokens.size()) != mine.size()) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat("tokens: ", job.tokens.size(), " ids, but rank ", job.rank, "'s shard [",
                     mine.begin, ", ", mine.end, ") holds ", mine.size(), " tokens")));
  }
  if (job.ttl_ms < -1) {
    return refuse(
        absl::InvalidArgumentError(absl::StrCat("ttl_seconds: negative (", job.ttl_ms, " ms)")));
  }
  auto plan_or = engine->Plan(job.num_tokens, job.selection);
  if (!plan_or.ok()) return refuse(Field(plan_or.status(), "selection"));
  const engine::PrefillPlan plan = *std::move(plan_or);

  // ---- The job runs: from here every failure aborts the exchange and drops the cache.
  const std::string job_name = job.id.ToHex();
  // A second ExecuteShard of a job that runs here is refused without telling the peers: the job
  // itself is fine.
  SF_ASSIGN_OR_RETURN(std::shared_ptr<JobMailbox> box, mailbox_.Attach(job_name));
  // While the job runs its record may exist without its cache: expiry must leave it alone.
  {
    std::lock_guard<std::mutex> lock(running_mu_);
    running_.insert(job.id);
  }
  struct NotRunning {
    Worker* w;
    kvstore::CacheId id;
    ~NotRunning() {
      std::lock_guard<std::mutex> lock(w->running_mu_);
      w->running_.erase(id);
    }
  } not_running{this, job.id};
  std::unique_ptr<engine::ShardExchange> exchange;
  bool cache_begun = false, record_written = false;
  auto fail = [&](absl::Status why) -> absl::Status {
    if (exchange != nullptr) {
      exchange->Abort(why);
    } else {
      exchanges.AbortPeers(job, why);
    }
    box->Abort(DecodeAbort(EncodeAbort(why), job.rank));
    if (cache_begun) {
      IgnoreError(store_->Abort(job.id),
                  "the job already failed with its own cause; a cache that cannot be aborted is "
                  "PENDING and is dropped when the store reopens");
    }
    if (record_written) {
      IgnoreError(records_->Erase(job.id), "an orphan record is removed when the worker restarts");
    }
    mailbox_.Detach(job_name, why);
    return why;
  };
  if (store_->GetManifest(job.id).ok()) {
    return fail(absl::AlreadyExistsError(
        absl::StrCat("job_id: cache ", job_name, " already exists on this worker")));
  }
  auto made = exchanges.Create(job, layout, box);
  if (!made.ok()) return fail(made.status());
  exchange = *std::move(made);

  ShardRecord record;
  record.id = job.id;
  record.token_begin = mine.begin;
  record.token_end = mine.end;
  record.num_tokens = job.num_tokens;
  record.rank = job.rank;
  record.world_size = world;
  record.policy =
      std::string(engine::PolicyName(plan.dense ? engine::Policy::kDense : plan.selection.policy));
  if (absl::Status s = records_->Put(record); !s.ok()) return fail(s);
  record_written = true;
  kvstore::CacheSpec spec;
  spec.model = job.model;
  spec.tenant = job.tenant;
  spec.layout.dtype = c.dtype;
  spec.layout.num_layers = c.num_layers;
  spec.layout.kv_heads = c.num_kv_heads;
  spec.layout.head_dim = c.head_dim;
  spec.layout.block_size = plan.selection.block_size;
  spec.layout.num_tokens = mine.size();
  spec.ttl_ms = job.ttl_ms;
  if (absl::Status s = store_->BeginCache(job.id, spec); !s.ok()) return fail(s);
  cache_begun = true;

  // Per-layer events as soon as each layer is stored: this shard's counters (from the engine)
  // and the store's placement of the layer.
  ShardOutcome out;
  auto on_stored = [&](const engine::LayerKv& kv) -> absl::Status {
    if (kv.part == nullptr) return absl::InternalError("the engine gave no layer counters");
    SF_ASSIGN_OR_RETURN(kvstore::Manifest manifest, store_->GetManifest(job.id));
    const kvstore::CacheLayout& l = manifest.layout;
    ShardLayerEvent ev;
    ev.layer = kv.layer;
    ev.selected_keys = kv.part->selected_keys;
    ev.causal_keys = kv.part->causal_keys;
    ev.information_loss_sum = kv.part->information_loss_sum;
    ev.information_loss_count = kv.part->information_loss_count;
    for (int32_t h = 0; h < l.kv_heads; ++h) {
      for (int64_t b = 0; b < l.num_blocks(); ++b) {
        (manifest.blocks[static_cast<size_t>(l.Index(kv.layer, h, b))].hot ? ev.hot_blocks
                                                                           : ev.cold_blocks)++;
      }
    }
    out.hot_blocks += ev.hot_blocks;
    out.cold_blocks += ev.cold_blocks;
    return on_layer(ev);
  };
  StoreLayerSink sink(store_.get(), job.id, mine.begin, mine.size(), on_stored);
  engine::PrefillOptions po;
  po.measure = job.measure;
  po.information_loss_queries = job.information_loss_queries;
  auto result = engine->PrefillShard(plan, job.tokens, *exchange, po, &sink);
  if (!result.ok()) return fail(result.status());
  if (static_cast<int32_t>(sink.stored().size()) != c.num_layers ||
      static_cast<int32_t>(result->layers.size()) != c.num_layers) {
    return fail(absl::InternalError(absl::StrCat("the engine stored ", sink.stored().size(),
                                                 " and counted ", result->layers.size(), " of ",
                                                 c.num_layers, " layers")));
  }
  if (absl::Status s = store_->Commit(job.id); !s.ok()) return fail(s);
  mailbox_.Detach(job_name, absl::OkStatus());

  out.holds_last_token = mine.end == job.num_tokens;
  if (out.holds_last_token && result->prompt.measured) {
    out.hidden_rel_l2 = result->prompt.quality.hidden_rel_l2;
    out.next_token_kl = result->prompt.quality.next_token_kl;
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.result = *std::move(result);
  return out;
}

absl::StatusOr<ShardInfo> Worker::InfoOf(const kvstore::Manifest& m, const ShardRecord& r) const {
  ShardInfo info;
  info.id = m.id;
  info.model = m.model;
  info.tenant = m.tenant;
  info.layout = m.layout;
  info.layout.num_tokens = r.num_tokens;
  info.token_begin = r.token_begin;
  info.token_end = r.token_end;
  for (uint8_t w : m.layers_written) info.layers_written += w != 0;
  info.ready = m.state == kvstore::CacheState::kReady;
  for (const kvstore::BlockMeta& b : m.blocks) (b.hot ? info.hot_blocks : info.cold_blocks)++;
  return info;
}

absl::StatusOr<ShardInfo> Worker::GetShard(const kvstore::CacheId& id) const {
  SF_ASSIGN_OR_RETURN(ShardRecord r, records_->Get(id));
  SF_ASSIGN_OR_RETURN(kvstore::Manifest m, store_->GetManifest(id));
  return InfoOf(m, r);
}

std::vector<ShardInfo> Worker::ListShards() const {
  std::vector<ShardInfo> out;
  for (const ShardRecord& r : records_->List()) {
    auto m = store_->GetManifest(r.id);
    if (!m.ok()) continue;  // deleted or aborted meanwhile
    auto info = InfoOf(*m, r);
    if (info.ok()) out.push_back(*std::move(info));
  }
  return out;
}

absl::Status Worker::DeleteShard(const kvstore::CacheId& id) {
  auto record = records_->Get(id);
  absl::Status deleted = store_->DeleteCache(id);
  if (!record.ok() && !deleted.ok()) return deleted;
  if (!deleted.ok() && deleted.code() != absl::StatusCode::kNotFound) return deleted;
  return records_->Erase(id);
}

absl::StatusOr<int64_t> Worker::ExpireCaches() {
  // Peer mailboxes of finished (or never started) jobs go on the same schedule, not only when a
  // new job happens to open one.
  mailbox_.CollectGarbage();
  // Every expired cache and record is tried even when one fails; the failures are reported
  // together and the next sweep retries them.
  absl::StatusOr<int64_t> expired = store_->ExpireCaches();
  absl::Status first = expired.status();
  std::string failures;
  if (!expired.ok()) failures = std::string(expired.status().message());
  // A record whose cache the store no longer serves goes too (expired caches are invisible to
  // the store's readers at once, removed or not), except the records of jobs still running
  // here: they are written before their cache exists.
  for (const ShardRecord& r : records_->List()) {
    {
      std::lock_guard<std::mutex> lock(running_mu_);
      if (running_.contains(r.id)) continue;
    }
    if (store_->GetManifest(r.id).status().code() != absl::StatusCode::kNotFound) continue;
    absl::Status s = records_->Erase(r.id);
    if (s.ok()) continue;
    if (first.ok()) first = s;
    absl::StrAppend(&failures, failures.empty() ? "" : "; ", "record of cache ", r.id.ToHex(), ": ",
                    s.message());
  }
  if (!first.ok()) {
    return absl::Status(first.code(), absl::StrCat("expiring caches: ", failures));
  }
  return *expired;
}

absl::Status Worker::ReadBlocks(const kvstore::CacheId& id, std::span<const BlockRun> ranges,
                                uint64_t chunk_bytes,
                                const std::function<absl::Status(BlockChunk&)>& emit,
                                bool hot_pass) {
  SF_ASSIGN_OR_RETURN(ShardRecord r, records_->Get(id));
  SF_ASSIGN_OR_RETURN(kvstore::Manifest m, store_->GetManifest(id));
  const kvstore::CacheLayout& l = m.layout;  // the shard's
  const int64_t b0 = r.token_begin / l.block_size;
  const int64_t b1 = b0 + l.num_blocks();
  // Check every range before streaming a byte, so a bad request fails cleanly.
  for (size_t i = 0; i < ranges.size(); ++i) {
    const BlockRun& x = ranges[i];
    const std::string where = absl::StrCat("ranges[", i, "]");
    if (x.layer < 0 || x.layer >= l.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".layer: ", x.layer, " is outside [0, ", l.num_layers, ")"));
    }
    if (x.kv_head < 0 || x.kv_head >= l.kv_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".kv_head: ", x.kv_head, " is outside [0, ", l.kv_heads, ")"));
    }
    if (x.num_blocks <= 0 || x.first_block < b0 || x.first_block > b1 - x.num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": blocks [", x.first_block, ", ", x.first_block + x.num_blocks,
                       ") are empty or outside this worker's blocks [", b0, ", ", b1, ") of cache ",
                       id.ToHex()));
    }
    if (!m.layers_written[static_cast<size_t>(x.layer)]) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, ": layer ", x.layer, " of cache ", id.ToHex(), " is not stored yet"));
    }
  }
  for (const BlockRun& x : ranges) {
    BlockChunk chunk;
    std::vector<kvstore::BlockKey> keys;
    std::vector<size_t> sizes;
    size_t chunk_size = 0;
    auto flush = [&]() -> absl::Status {
      if (chunk.run.num_blocks == 0) return absl::OkStatus();
      // One batched read per chunk: the disk tier fetches its blocks together. (An announced
      // cold run has no keys: nothing is read.)
      // Every byte is written by the store (or the read fails and the chunk is dropped).
      chunk.data = chunk_buffers_->Take(chunk_size);
      std::vector<std::span<uint8_t>> outs;
      outs.reserve(sizes.size());
      size_t at = 0;
      for (size_t n : sizes) {
        outs.emplace_back(reinterpret_cast<uint8_t*>(chunk.data.data()) + at, n);
        at += n;
      }
      if (!keys.empty()) SF_RETURN_IF_ERROR(store_->ReadBlocks(keys, outs));
      SF_RETURN_IF_ERROR(emit(chunk));
      chunk.run.num_blocks = 0;
      chunk.checksums.clear();
      chunk.data = ChunkBuffer();
      keys.clear();
      sizes.clear();
      chunk_size = 0;
      return absl::OkStatus();
    };
    for (int64_t g = x.first_block; g < x.first_block + x.num_blocks; ++g) {
      const int64_t local = g - b0;
      const kvstore::BlockMeta& meta =
          m.blocks[static_cast<size_t>(l.Index(x.layer, x.kv_head, local))];
      // Not cut where the tier changes: a hot block evicted to disk in the middle of a run would
      // otherwise split it into small chunks (each one a message, a syscall and a callback more).
      // A cold run of a hot pass is only announced, so it is cut by nothing but hot blocks.
      const bool announce = hot_pass && !meta.hot;
      if (chunk.run.num_blocks > 0 &&
          (meta.hot != chunk.hot || (!announce && chunk_size >= chunk_bytes))) {
        SF_RETURN_IF_ERROR(flush());
      }
      if (chunk.run.num_blocks == 0) {
        chunk.run = {.layer = x.layer, .kv_head = x.kv_head, .first_block = g, .num_blocks = 0};
        chunk.tier = meta.tier;
        chunk.hot = meta.hot;
      }
      chunk.tier = std::max(chunk.tier, meta.tier);  // the coldest: Tier is ordered hot to cold
      ++chunk.run.num_blocks;
      if (announce) continue;
      keys.push_back({.cache = id, .layer = x.layer, .head = x.kv_head, .block = local});
      sizes.push_back(l.BlockBytes(local));
      chunk_size += sizes.back();
      chunk.checksums.push_back(meta.checksum);
    }
    SF_RETURN_IF_ERROR(flush());
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::worker
