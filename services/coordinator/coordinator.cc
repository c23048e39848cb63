#include "services/coordinator/coordinator.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "services/coordinator/prepared_prefill.h"
#include "services/rpc/convert.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {
namespace {

Deadline Now() { return std::chrono::system_clock::now(); }

}  // namespace

v1::CacheInfo ToCacheInfo(const CacheEntry& e) {
  v1::CacheInfo info;
  info.set_cache_id(rpc::CacheIdToBytes(e.id));
  info.set_model(e.model);
  switch (e.state) {
    case CacheState::kPending:
      info.set_state(v1::CACHE_STATE_PENDING);
      break;
    case CacheState::kReady:
      info.set_state(v1::CACHE_STATE_READY);
      break;
    case CacheState::kFailed:
      info.set_state(v1::CACHE_STATE_FAILED);
      break;
  }
  *info.mutable_layout() = rpc::CacheLayoutToProto(e.layout);
  // Until a worker reported its shard the dtype is unknown: say so rather than guess.
  if (!e.dtype_known) info.mutable_layout()->set_dtype(v1::DTYPE_UNSPECIFIED);
  info.set_created_unix_ms(e.created_unix_ms);
  info.set_expires_unix_ms(e.expires_unix_ms);
  info.set_layers_ready(e.layers_ready);
  info.set_hot_blocks(e.hot_blocks);
  info.set_cold_blocks(e.cold_blocks);
  info.set_bytes(e.bytes);
  info.set_policy(e.policy);
  return info;
}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    const CoordinatorOptions& options, std::unique_ptr<WorkerPool> workers,
    kvstore::RecordStore* store) {
  SF_RETURN_IF_ERROR(options.Validate());
  if (workers == nullptr || workers->size() == 0) {
    return absl::InvalidArgumentError("workers: at least one worker is required");
  }
  if (store == nullptr) return absl::InvalidArgumentError("registry store: null");
  SF_ASSIGN_OR_RETURN(std::unique_ptr<CacheRegistry> registry,
                      CacheRegistry::Open(store, options.clock));
  std::unique_ptr<Coordinator> c(new Coordinator(options, std::move(workers), std::move(registry)));
  c->RefreshWorkers();
  return c;
}

Coordinator::Coordinator(const CoordinatorOptions& options, std::unique_ptr<WorkerPool> workers,
                         std::unique_ptr<CacheRegistry> registry)
    : options_(options),
      workers_(std::move(workers)),
      registry_(std::move(registry)),
      admission_(options.admission) {}

Coordinator::~Coordinator() { Stop(); }

void Coordinator::Start() {
  std::lock_guard<std::mutex> lock(loop_mu_);
  if (loop_.joinable()) return;
  stopping_ = false;
  loop_ = std::thread([this] { Loop(); });
}

void Coordinator::Stop() {
  {
    std::lock_guard<std::mutex> lock(loop_mu_);
    stopping_ = true;
  }
  loop_cv_.notify_all();
  if (loop_.joinable()) loop_.join();
}

void Coordinator::Loop() {
  auto next_health = std::chrono::steady_clock::now() + options_.health_interval;
  auto next_maintenance = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(loop_mu_);
  while (!stopping_) {
    const auto now = std::chrono::steady_clock::now();
    if (refresh_now_) {
      refresh_now_ = false;
      next_health = now;
    }
    if (now >= next_health || now >= next_maintenance) {
      lock.unlock();
      if (now >= next_health) {
        RefreshWorkers();
        next_health = now + options_.health_interval;
      }
      if (now >= next_maintenance) {
        ExpireAndCleanup();
        next_maintenance = now + options_.maintenance_interval;
      }
      lock.lock();
      continue;
    }
    loop_cv_.wait_until(lock, std::min(next_health, next_maintenance));
  }
}

void Coordinator::RefreshWorkers() {
  workers_->Refresh();
  if (options_.worker_health != nullptr) {
    for (const std::string& a : workers_->addresses()) {
      options_.worker_health->Set(a, workers_->healthy(a));
    }
  }
}

void Coordinator::RequestRefresh() {
  {
    std::lock_guard<std::mutex> lock(loop_mu_);
    refresh_now_ = true;
  }
  loop_cv_.notify_all();
}

Deadline Coordinator::EffectiveDeadline(const RequestContext& rc) const {
  const Deadline fallback = Now() + options_.default_deadline;
  return rc.deadline == kNoDeadline ? fallback : rc.deadline;
}

Deadline Coordinator::WorkerDeadline(Deadline request_deadline) const {
  return request_deadline - options_.deadline_margin;
}

absl::StatusOr<std::vector<int32_t>> Coordinator::Tokenize(const std::string& model,
                                                           const std::string& text,
                                                           const RequestContext& rc) {
  std::vector<WorkerApi*> workers = workers_->HealthyFor(model);
  if (workers.empty()) {
    return absl::UnavailableError(
        absl::StrCat("no healthy worker serves model '", model, "' to tokenize the text"));
  }
  const Deadline deadline = WorkerDeadline(EffectiveDeadline(rc));
  absl::Status last;
  // Tokenizing is stateless: a worker that fails to answer is skipped for the next one.
  for (WorkerApi* w : workers) {
    absl::StatusOr<std::vector<int32_t>> ids =
        w->Tokenize(model, text, CallControl{deadline, rc.cancel});
    if (ids.ok()) return ids;
    last = ids.status();
    if (last.code() != absl::StatusCode::kUnavailable) break;
  }
  if (last.code() == absl::StatusCode::kInvalidArgument ||
      last.code() == absl::StatusCode::kFailedPrecondition) {
    return absl::Status(last.code(), absl::StrCat("text: ", last.message()));
  }
  return last;
}

absl::StatusOr<Coordinator::PreparedPrefill> Coordinator::Validate(const RequestContext& rc,
                                                                   const v1::PrefillRequest& req) {
  PreparedPrefill p;
  if (req.model().empty()) return absl::InvalidArgumentError("model: empty");
  SF_ASSIGN_OR_RETURN(p.model, workers_->FindModel(req.model()));
  std::string field;
  switch (req.prompt_case()) {
    case v1::PrefillRequest::kTokens:
      field = "tokens";
      if (req.tokens().ids().empty()) return absl::InvalidArgumentError("tokens: empty prompt");
      p.tokens.assign(req.tokens().ids().begin(), req.tokens().ids().end());
      break;
    case v1::PrefillRequest::kText: {
      field = "text";
      if (req.text().empty()) return absl::InvalidArgumentError("text: empty prompt");
      SF_ASSIGN_OR_RETURN(p.tokens, Tokenize(req.model(), req.text(), rc));
      if (p.tokens.empty()) return absl::InvalidArgumentError("text: tokenizes to no tokens");
      break;
    }
    case v1::PrefillRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt: neither tokens nor text given");
  }
  int64_t limit = options_.max_tokens;
  if (p.model.max_tokens() > 0) limit = std::min(limit, p.model.max_tokens());
  const int64_t n = static_cast<int64_t>(p.tokens.size());
  if (n > limit) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", n, " tokens exceed the maximum of ",
                                                   limit, " for model '", req.model(), "'"));
  }
  const int64_t vocab = p.model.vocab_size();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = p.tokens[i];
    if (id < 0 || (vocab > 0 && id >= vocab)) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "]: token id ", id,
                                                     " is outside the vocabulary [0, ", vocab,
                                                     ") of model '", req.model(), "'"));
    }
  }
  SF_ASSIGN_OR_RETURN(p.selection, ResolveSelection(req.selection(), p.model));
  if (req.ttl_seconds() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_seconds: must not be negative, got ", req.ttl_seconds()));
  }
  if (req.ttl_seconds() > options_.max_ttl_s) {
    return absl::InvalidArgumentError(absl::StrCat("ttl_seconds: ", req.ttl_seconds(),
                                                   " exceeds the maximum of ", options_.max_ttl_s));
  }
  p.ttl_s = req.ttl_seconds() == 0 ? options_.default_ttl_s : req.ttl_seconds();
  if (req.information_loss_queries() < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "information_loss_queries: ", req.information_loss_queries(),
        ", give a positive number of query positions, -1 (every query) or 0 (the default)"));
  }
  if (p.model.num_layers() <= 0 || p.model.kv_heads() <= 0 || p.model.head_dim() <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", req.model(), "': the workers describe it without layers, KV heads or head_dim"));
  }
  return p;
}

absl::StatusOr<CacheEntry> Coordinator::Lookup(const RequestContext& rc,
                                               const std::string& cache_id) const {
  SF_ASSIGN_OR_RETURN(const kvstore::CacheId id, rpc::CacheIdFromBytes(cache_id));
  return registry_->Get(id, rc.tenant);
}

absl::StatusOr<v1::CacheInfo> Coordinator::GetCache(const RequestContext& rc,
                                                    const std::string& cache_id) {
  SF_ASSIGN_OR_RETURN(const CacheEntry e, Lookup(rc, cache_id));
  return ToCacheInfo(e);
}

v1::ListModelsResponse Coordinator::ListModels() const {
  v1::ListModelsResponse out;
  for (const v1::ModelInfo& m : workers_->Models()) *out.add_models() = m;
  return out;
}

absl::Status Coordinator::DeleteShards(const CacheEntry& entry, Deadline deadline) {
  std::vector<absl::Status> results(entry.shards.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < entry.shards.size(); ++i) {
    WorkerApi* w = workers_->Find(entry.shards[i].address);
    // A worker no longer configured is not ours to clean; nothing can reach it.
    if (w == nullptr) continue;
    threads.emplace_back([&, i, w] {
      absl::Status s = w->DeleteShard(entry.id, CallControl{deadline, nullptr});
      if (s.code() == absl::StatusCode::kNotFound) s = absl::OkStatus();  // already gone
      results[i] = s;
    });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) SF_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

absl::Status Coordinator::DeleteCache(const RequestContext& rc, const std::string& cache_id) {
  SF_ASSIGN_OR_RETURN(const CacheEntry e, Lookup(rc, cache_id));
  SF_RETURN_IF_ERROR(registry_->Update(e.id, /*sync=*/true, [](CacheEntry& x) {
    x.deleted = true;
    x.cleanup_pending = true;
  }));
  // A running prefill notices the tombstone, stops its shards and ends FAILED; the maintenance
  // loop then deletes what its workers stored.
  if (e.state == CacheState::kPending) return absl::OkStatus();
  const absl::Status shards = DeleteShards(e, WorkerDeadline(EffectiveDeadline(rc)));
  if (!shards.ok()) {
    // The cache is already gone for every tenant; the maintenance loop retries the workers.
    std::cerr << "coordinator: DeleteCache " << e.id.ToHex()
              << ": shard clean-up deferred: " << shards.message() << "\n";
    return absl::OkStatus();
  }
  return registry_->Remove(e.id);
}

int Coordinator::ExpireAndCleanup() {
  int removed = 0;
  const int64_t now_ms = options_.clock->NowUnixMillis();
  for (const CacheEntry& snap : registry_->Snapshot()) {
    // A running prefill owns its entry until it ends (READY or FAILED).
    if (snap.state == CacheState::kPending) continue;
    CacheEntry e = snap;
    const bool expired = e.expires_unix_ms <= now_ms;
    if (expired && !e.deleted) {
      const absl::Status s = registry_->Update(e.id, /*sync=*/true, [](CacheEntry& x) {
        x.deleted = true;
        x.cleanup_pending = true;
      });
      if (!s.ok()) continue;  // removed concurrently (DeleteCache)
      e.deleted = true;
      e.cleanup_pending = true;
    }
    if (e.cleanup_pending) {
      const absl::Status s = DeleteShards(e, Now() + options_.cleanup_timeout);
      if (!s.ok()) {
        std::cerr << "coordinator: clean-up of cache " << e.id.ToHex()
                  << " deferred: " << s.message() << "\n";
        continue;
      }
      if (!e.deleted) {
        IgnoreError(registry_->Update(e.id, /*sync=*/true,
                                      [](CacheEntry& x) { x.cleanup_pending = false; }),
                    "a failed update retries the (idempotent) clean-up next round");
        continue;
      }
    }
    if (e.deleted) {
      const absl::Status s = registry_->Remove(e.id);
      if (s.ok()) ++removed;
    }
  }
  return removed;
}

}  // namespace sparsefill::coordinator
