// Coordinator::Prefill: admission, plan, PENDING entry, shards started concurrently, per-layer
// progress, merged stats, READY (or FAILED with the worker and cause).
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "services/coordinator/coordinator.h"
#include "services/coordinator/prepared_prefill.h"
#include "services/rpc/convert.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {
namespace {

struct LayerSums {
  int64_t selected_keys = 0;
  int64_t causal_keys = 0;
  double loss_sum = 0;
  int64_t loss_count = 0;
};

struct ShardState {
  int32_t layers = 0;  // layers this shard reported done
  bool done = false;   // sent its ShardDone
  bool finished = false;
  absl::Status status;
  v1::ShardDone stats;
};

// Shared by the handler thread and one thread per shard.
struct Run {
  explicit Run(size_t shards, int32_t num_layers) : shards(shards), layers(num_layers) {}
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ShardState> shards;
  std::vector<LayerSums> layers;
  absl::Status first_failure;
  int finished = 0;
  Cancellation cancel;  // stops every shard call
};

absl::Status OnShardEvent(Run* run, size_t r, const std::string& address, int32_t num_layers,
                          const v1::ShardEvent& ev) {
  std::lock_guard<std::mutex> lock(run->mu);
  ShardState& s = run->shards[r];
  if (ev.has_layer_done()) {
    const v1::ShardLayerDone& l = ev.layer_done();
    if (l.layer() != s.layers || l.layer() >= num_layers) {
      return absl::InternalError(absl::StrCat("worker ", address, " reported layer ", l.layer(),
                                              " done, expected layer ", s.layers, " of ",
                                              num_layers));
    }
    LayerSums& sums = run->layers[l.layer()];
    sums.selected_keys += l.selected_keys();
    sums.causal_keys += l.causal_keys();
    sums.loss_sum += l.information_loss_sum();
    sums.loss_count += l.information_loss_count();
    ++s.layers;
  } else if (ev.has_done()) {
    if (s.layers != num_layers) {
      return absl::InternalError(absl::StrCat("worker ", address, " finished its shard after ",
                                              s.layers, " of ", num_layers, " layers"));
    }
    s.done = true;
    s.stats = ev.done();
  } else {
    return absl::InternalError(absl::StrCat("worker ", address, " sent an empty shard event"));
  }
  run->cv.notify_all();
  return absl::OkStatus();
}

v1::PrefillStats MergeStats(const Run& run, int64_t num_tokens, double seconds, bool measure,
                            const std::string& policy, int32_t q_heads) {
  v1::PrefillStats st;
  st.set_num_tokens(num_tokens);
  st.set_seconds(seconds);
  st.set_tokens_per_second(seconds > 0 ? static_cast<double>(num_tokens) / seconds : 0);
  int64_t selected = 0, causal = 0, loss_count = 0;
  double loss_sum = 0;
  for (size_t l = 0; l < run.layers.size(); ++l) {
    const LayerSums& s = run.layers[l];
    v1::LayerStats* ls = st.add_layers();
    ls->set_layer(static_cast<int32_t>(l));
    ls->set_selected_keys(s.selected_keys);
    ls->set_causal_keys(s.causal_keys);
    ls->set_information_loss(s.loss_count > 0 ? s.loss_sum / s.loss_count : -1);
    selected += s.selected_keys;
    causal += s.causal_keys;
    loss_sum += s.loss_sum;
    loss_count += s.loss_count;
  }
  st.set_selected_keys(selected);
  st.set_causal_keys(causal);
  st.set_sparsity(causal > 0 ? 1.0 - static_cast<double>(selected) / causal : 0);
  st.set_information_loss(loss_count > 0 ? loss_sum / loss_count : -1);
  // Every query head of each measured position counts once per layer (the positions are the
  // same in every layer).
  if (loss_count > 0 && q_heads > 0 && !run.layers.empty()) {
    st.set_information_loss_queries(run.layers[0].loss_count / q_heads);
  }
  // The rank holding the last token computes the logits-derived measures.
  const v1::ShardDone& last = run.shards.back().stats;
  st.set_hidden_rel_l2(measure ? last.hidden_rel_l2() : -1);
  st.set_next_token_kl(measure ? last.next_token_kl() : -1);
  st.set_workers(static_cast<int32_t>(run.shards.size()));
  int64_t hot = 0, cold = 0;
  for (const ShardState& s : run.shards) {
    hot += s.stats.hot_blocks();
    cold += s.stats.cold_blocks();
  }
  st.set_hot_blocks(hot);
  st.set_cold_blocks(cold);
  st.set_policy(policy);
  return st;
}

// The dtype (unknown to ModelInfo) and a consistency check of the plan, from rank 0's manifest.
absl::Status LearnLayout(WorkerApi* w, CacheEntry* e, const CallControl& call) {
  SF_ASSIGN_OR_RETURN(const v1::ShardManifest m, w->GetShardManifest(e->id, call));
  absl::StatusOr<kvstore::CacheLayout> l = rpc::CacheLayoutFromProto(m.layout(), "manifest.layout");
  if (!l.ok()) {
    return absl::InternalError(absl::StrCat("worker ", w->address(), ": ", l.status().message()));
  }
  const kvstore::CacheLayout& p = e->layout;
  if (l->num_layers != p.num_layers || l->kv_heads != p.kv_heads || l->head_dim != p.head_dim ||
      l->block_size != p.block_size || l->num_tokens != p.num_tokens) {
    return absl::InternalError(absl::StrCat(
        "worker ", w->address(), " stores cache ", e->id.ToHex(), " with layout layers ",
        l->num_layers, " heads ", l->kv_heads, " head_dim ", l->head_dim, " block ", l->block_size,
        " tokens ", l->num_tokens, ", but the plan says layers ", p.num_layers, " heads ",
        p.kv_heads, " head_dim ", p.head_dim, " block ", p.block_size, " tokens ", p.num_tokens));
  }
  e->layout.dtype = l->dtype;
  e->dtype_known = true;
  return absl::OkStatus();
}

}  // namespace

absl::Status Coordinator::Prefill(const RequestContext& rc, const v1::PrefillRequest& request,
                                  const ProgressSink& sink) {
  metrics::PrefillMetricSet* m = options_.prefill_metrics;
  if (m == nullptr) return RunPrefill(rc, request, sink);
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  // The final stats carry the merged per-layer counters of every shard; a layer's measured loss
  // arrives as its mean, so it counts as one sample per prefill.
  const absl::Status status = RunPrefill(rc, request, [&](const v1::PrefillProgress& p) {
    if (p.has_done()) {
      const v1::PrefillStats& st = p.done().stats();
      tokens = st.num_tokens();
      for (const v1::LayerStats& l : st.layers()) {
        const bool measured = l.information_loss() >= 0;
        m->RecordLayer(l.layer(), l.selected_keys(), l.causal_keys(),
                       measured ? l.information_loss() : 0, measured ? 1 : 0);
      }
    }
    return sink(p);
  });
  m->RecordPrefill(status.code(), tokens,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return status;
}

absl::Status Coordinator::RunPrefill(const RequestContext& rc, const v1::PrefillRequest& request,
                                     const ProgressSink& sink) {
  const auto start = std::chrono::steady_clock::now();
  const Deadline deadline = EffectiveDeadline(rc);
  SF_ASSIGN_OR_RETURN(PreparedPrefill p, Validate(rc, request));
  const int64_t n = static_cast<int64_t>(p.tokens.size());
  SF_ASSIGN_OR_RETURN(AdmissionController::Slot slot, admission_.Admit(n, deadline, rc.cancel));

  std::vector<WorkerApi*> healthy = workers_->HealthyFor(request.model());
  std::vector<std::string> addresses;
  for (WorkerApi* w : healthy) addresses.push_back(w->address());
  if (addresses.empty()) {
    return absl::UnavailableError(
        absl::StrCat("no healthy worker serves model '", request.model(), "'"));
  }
  SF_ASSIGN_OR_RETURN(std::vector<ShardRange> plan,
                      PlanShards(n, p.selection.block_size, addresses));

  CacheEntry entry;
  entry.id = kvstore::CacheId::Random();
  entry.tenant = rc.tenant;
  entry.model = request.model();
  entry.state = CacheState::kPending;
  if (p.model.kv_dtype() != v1::DTYPE_UNSPECIFIED) {
    SF_ASSIGN_OR_RETURN(entry.layout.dtype,
                        rpc::DTypeFromProto(p.model.kv_dtype(), "model.kv_dtype"));
    entry.dtype_known = true;  // rank 0's manifest still confirms it after layer 0
  }
  entry.layout.num_layers = p.model.num_layers();
  entry.layout.kv_heads = p.model.kv_heads();
  entry.layout.head_dim = p.model.head_dim();
  entry.layout.block_size = p.selection.block_size;
  entry.layout.num_tokens = n;
  entry.policy = p.selection.policy;
  entry.created_unix_ms = options_.clock->NowUnixMillis();
  entry.expires_unix_ms = entry.created_unix_ms + p.ttl_s * 1000;
  entry.shards = plan;
  SF_RETURN_IF_ERROR(registry_->Create(entry));
  const int32_t num_layers = entry.layout.num_layers;

  // Every exit from here on ends the entry READY or FAILED.
  auto fail = [&](absl::Status why) -> absl::Status {
    IgnoreError(registry_->Update(entry.id, /*sync=*/true,
                                  [&](CacheEntry& e) {
                                    e.state = CacheState::kFailed;
                                    e.failure = std::string(why.message());
                                    e.cleanup_pending = true;
                                  }),
                "the entry stays PENDING and becomes FAILED at the next start-up");
    loop_cv_.notify_all();  // clean the shards up now rather than at the next tick
    return why;
  };

  v1::PrefillProgress admitted;
  admitted.mutable_admitted()->set_cache_id(rpc::CacheIdToBytes(entry.id));
  admitted.mutable_admitted()->set_num_tokens(n);
  admitted.mutable_admitted()->set_workers(static_cast<int32_t>(plan.size()));
  admitted.mutable_admitted()->set_num_layers(num_layers);
  if (absl::Status s = sink(admitted); !s.ok()) return fail(s);

  Run run(plan.size(), num_layers);
  auto client_gone = Cancellation::OnCancel(rc.cancel, [&run] { run.cancel.Cancel(); });
  const Deadline worker_deadline = WorkerDeadline(deadline);
  std::vector<std::thread> threads;
  threads.reserve(plan.size());
  for (size_t r = 0; r < plan.size(); ++r) {
    v1::ShardRequest req;
    req.set_job_id(rpc::CacheIdToBytes(entry.id));
    req.set_model(request.model());
    req.set_rank(static_cast<int32_t>(r));
    for (const ShardRange& s : plan) {
      v1::ShardPeer* peer = req.add_peers();
      peer->set_rank(s.rank);
      peer->set_address(s.address);
      peer->set_token_begin(s.token_begin);
      peer->set_token_end(s.token_end);
    }
    req.set_num_tokens(n);
    req.mutable_tokens()->mutable_ids()->Assign(p.tokens.begin() + plan[r].token_begin,
                                                p.tokens.begin() + plan[r].token_end);
    *req.mutable_selection() = p.selection.config;
    req.set_measure(request.measure());
    req.set_information_loss_queries(request.information_loss_queries());  // 0: the workers'
    req.set_ttl_seconds(p.ttl_s);
    req.set_tenant(rc.tenant);
    WorkerApi* w = healthy[r];
    threads.emplace_back([&run, r, w, num_layers, worker_deadline, req = std::move(req)] {
      absl::Status s = w->ExecuteShard(
          req,
          [&](const v1::ShardEvent& ev) {
            return OnShardEvent(&run, r, w->address(), num_layers, ev);
          },
          CallControl{worker_deadline, &run.cancel});
      // A call cancelled by the worker's side (a server shutting down), not by us.
      if (s.code() == absl::StatusCode::kCancelled && !run.cancel.cancelled()) {
        s = absl::UnavailableError(s.message());
      }
      bool first = false;
      {
        std::lock_guard<std::mutex> lock(run.mu);
        ShardState& st = run.shards[r];
        if (s.ok() && !st.done) {
          s = absl::UnavailableError(absl::StrCat("worker ", w->address(),
                                                  " ended its shard stream after ", st.layers,
                                                  " of ", num_layers, " layers without a result"));
        }
        st.finished = true;
        st.status = s;
        ++run.finished;
        first = !s.ok() && run.first_failure.ok();
        if (first) run.first_failure = s;
      }
      if (first) run.cancel.Cancel();  // the other shards stop now, not at their deadline
      run.cv.notify_all();
    });
  }

  // Forward layers as they become ready everywhere; stop at the first failure.
  absl::Status status;
  int32_t forwarded = 0;
  while (true) {
    int32_t ready = 0;
    bool all_finished = false;
    {
      std::unique_lock<std::mutex> lock(run.mu);
      run.cv.wait_for(lock, std::chrono::milliseconds(20));
      if (!run.first_failure.ok()) {
        status = run.first_failure;
        break;
      }
      ready = num_layers;
      for (const ShardState& s : run.shards) ready = std::min(ready, s.layers);
      all_finished = run.finished == static_cast<int>(plan.size());
    }
    for (; forwarded < ready && status.ok(); ++forwarded) {
      if (!entry.dtype_known) {
        status = LearnLayout(healthy[0], &entry, CallControl{worker_deadline, &run.cancel});
        if (!status.ok()) break;
        const kvstore::CacheLayout layout = entry.layout;
        status = registry_->Update(entry.id, /*sync=*/false, [&](CacheEntry& e) {
          e.layout = layout;
          e.dtype_known = true;
        });
        if (!status.ok()) break;
      }
      status = registry_->SetLayersReady(entry.id, forwarded + 1);
      if (!status.ok()) break;
      v1::PrefillProgress layer;
      layer.mutable_layer_done()->set_layer(forwarded);
      layer.mutable_layer_done()->set_layers_total(num_layers);
      status = sink(layer);
    }
    if (!status.ok()) break;
    if (all_finished) break;
    if (IsCancelled(rc.cancel)) {
      status = absl::CancelledError("prefill: the client cancelled");
      break;
    }
    if (!registry_->Get(entry.id, rc.tenant).ok()) {
      status = absl::AbortedError(absl::StrCat("cache ", entry.id.ToHex(), " was deleted"));
      break;
    }
    if (std::chrono::system_clock::now() >= deadline) {
      status = absl::DeadlineExceededError(absl::StrCat("prefill: deadline passed with ", forwarded,
                                                        " of ", num_layers, " layers ready"));
      break;
    }
  }
  if (!status.ok()) run.cancel.Cancel();
  for (std::thread& t : threads) t.join();
  // A call of this thread (the manifest) cut short because a shard failed: the shard's failure
  // is the cause to report.
  if (status.code() == absl::StatusCode::kCancelled && !IsCancelled(rc.cancel)) {
    std::lock_guard<std::mutex> lock(run.mu);
    if (!run.first_failure.ok()) status = run.first_failure;
  }

  if (!status.ok()) {
    // A worker that could not be reached leaves the plans now, so the next request runs on the
    // others without waiting for a probe; the background refresh (asked for now) takes back any
    // that answer again and finds the ones that stopped answering (deadline exceeded; which may
    // also be a slow worker, so it is not taken out on that alone).
    bool suspects = false;
    for (size_t r = 0; r < plan.size(); ++r) {
      const absl::Status& s = run.shards[r].status;
      if (s.code() == absl::StatusCode::kUnavailable) {
        workers_->MarkUnhealthy(plan[r].address, std::string(s.message()));
      }
      if (!s.ok() && s.code() != absl::StatusCode::kCancelled) suspects = true;
    }
    if (suspects) RequestRefresh();
    return fail(absl::Status(status.code(), absl::StrCat("prefill of cache ", entry.id.ToHex(),
                                                         ": ", status.message())));
  }

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const v1::PrefillStats stats =
      MergeStats(run, n, seconds, request.measure(), entry.policy, p.model.q_heads());
  absl::Status commit = registry_->Update(entry.id, /*sync=*/true, [&](CacheEntry& e) {
    e.state = CacheState::kReady;
    e.layers_ready = num_layers;
    e.hot_blocks = stats.hot_blocks();
    e.cold_blocks = stats.cold_blocks();
    e.bytes = e.layout.total_bytes();
    entry = e;
  });
  if (!commit.ok()) return fail(commit);
  if (entry.deleted) {
    return fail(absl::AbortedError(absl::StrCat("cache ", entry.id.ToHex(), " was deleted")));
  }
  slot.Release();
  v1::PrefillProgress done;
  *done.mutable_done()->mutable_cache() = ToCacheInfo(entry);
  *done.mutable_done()->mutable_stats() = stats;
  return sink(done);
}

}  // namespace sparsefill::coordinator
