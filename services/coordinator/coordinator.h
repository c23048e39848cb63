// The coordinator's domain class (DESIGN §1, §7), transport-free: validation, admission, shard
// plans over healthy workers, the persisted cache registry, streaming caches to decode nodes, TTL
// and delete. CoordinatorService adapts it to gRPC; workers are reached through WorkerApi. It
// never loads a model: model facts come from the workers' DescribeModels and text is tokenized
// by a worker.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/coordinator/admission.h"
#include "services/coordinator/cancellation.h"
#include "services/coordinator/options.h"
#include "services/coordinator/registry.h"
#include "services/coordinator/selection_resolver.h"
#include "services/coordinator/worker_pool.h"
#include "sparsefill/kvstore/record_store.h"
#include "sparsefill/v1/coordinator.pb.h"

namespace sparsefill::coordinator {

// Who asks and until when.
struct RequestContext {
  std::string tenant;  // from the bearer token; "" when the server does not authenticate
  Deadline deadline = kNoDeadline;
  Cancellation* cancel = nullptr;  // fires when the client goes away; may be null
};

class Coordinator {
 public:
  using ProgressSink = std::function<absl::Status(const v1::PrefillProgress&)>;
  using ChunkSink = std::function<absl::Status(const v1::KvChunk&)>;
  // Chunks as they pass through: checked, bytes untouched (what the gRPC service forwards).
  using RelaySink = std::function<absl::Status(const RelayChunk&)>;

  // Opens the registry in `store` (not owned; must outlive the coordinator) and probes the
  // workers once. Background loops start with Start().
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const CoordinatorOptions& options,
                                                             std::unique_ptr<WorkerPool> workers,
                                                             kvstore::RecordStore* store);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Health refresh and TTL/clean-up loops on a background thread, until Stop (or destruction).
  void Start();
  void Stop();

  // Sends Admitted first, LayerDone per layer ready on every shard, PrefillDone last. Bad input
  // is INVALID_ARGUMENT naming the field; a full queue or budget RESOURCE_EXHAUSTED; a failing
  // worker fails the request with a status naming the worker and the cause.
  absl::Status Prefill(const RequestContext& rc, const v1::PrefillRequest& request,
                       const ProgressSink& sink);
  absl::StatusOr<v1::CacheInfo> GetCache(const RequestContext& rc, const std::string& cache_id);
  // Each layer as soon as it is ready on every shard: its hot blocks from every shard; then the
  // cold blocks unless hot_only. Chunks carry global block indices and the workers' xxh64.
  absl::Status StreamCache(const RequestContext& rc, const v1::StreamCacheRequest& request,
                           const RelaySink& sink);
  absl::Status FetchBlocks(const RequestContext& rc, const v1::FetchBlocksRequest& request,
                           const RelaySink& sink);
  // For StreamCache with allow_direct: after the same lookup (tenant, existence), a plan of the
  // READY cache's shards, each with its worker's advertised address and a fresh 128-bit ticket
  // registered with that worker (bound to the cache, its tenant and the shard; valid for
  // direct_ticket_ttl, one stream). nullopt when the stream is to be relayed: not asked, direct
  // plans off, the cache not READY, or a worker that could not register its ticket.
  absl::StatusOr<std::optional<v1::DirectStreamPlan>> PlanDirectStream(
      const RequestContext& rc, const v1::StreamCacheRequest& request);
  // The same with every chunk parsed into a message (a copy of its bytes; for in-process
  // callers that want messages, not for the serving path).
  absl::Status StreamCache(const RequestContext& rc, const v1::StreamCacheRequest& request,
                           const ChunkSink& sink);
  absl::Status FetchBlocks(const RequestContext& rc, const v1::FetchBlocksRequest& request,
                           const ChunkSink& sink);
  absl::Status DeleteCache(const RequestContext& rc, const std::string& cache_id);
  v1::ListModelsResponse ListModels() const;

  // One round of each background task (the loops call these; tests call them directly).
  void RefreshWorkers();
  // Sweeps expired caches and deletes the shards of FAILED/deleted/expired ones on their
  // workers; returns the number of registry entries removed.
  int ExpireAndCleanup();

  AdmissionController& admission() { return admission_; }
  CacheRegistry& registry() { return *registry_; }
  WorkerPool& workers() { return *workers_; }

 private:
  struct PreparedPrefill;
  // `sink` counting the chunks' bytes into the stream metrics (`sink` itself when there are none).
  RelaySink CountedSink(const RelaySink& sink) const;
  // Prefill without the metrics (Prefill records what this returns and sends).
  absl::Status RunPrefill(const RequestContext& rc, const v1::PrefillRequest& request,
                          const ProgressSink& sink);

  Coordinator(const CoordinatorOptions& options, std::unique_ptr<WorkerPool> workers,
              std::unique_ptr<CacheRegistry> registry);
  Deadline EffectiveDeadline(const RequestContext& rc) const;
  Deadline WorkerDeadline(Deadline request_deadline) const;
  absl::StatusOr<PreparedPrefill> Validate(const RequestContext& rc,
                                           const v1::PrefillRequest& request);
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& model, const std::string& text,
                                                const RequestContext& rc);
  // Deletes every shard of `entry` on its worker (concurrently); OK when all are gone.
  absl::Status DeleteShards(const CacheEntry& entry, Deadline deadline);
  absl::StatusOr<CacheEntry> Lookup(const RequestContext& rc, const std::string& cache_id) const;
  // ReadBlocks of `ranges` (global indices) from the shard's worker; chunks are checked before
  // `on_chunk`. `hot_pass`: cold runs are announced without their bytes.
  absl::Status ReadShardBlocks(const CacheEntry& entry, const ShardRange& shard,
                               const std::vector<v1::BlockRange>& ranges, Deadline deadline,
                               Cancellation* cancel, bool hot_pass,
                               const WorkerApi::RelayCallback& on_chunk);
  // Makes the background loop refresh worker health now rather than at its next period.
  void RequestRefresh();
  void Loop();

  const CoordinatorOptions options_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<CacheRegistry> registry_;
  AdmissionController admission_;

  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stopping_ = false;
  bool refresh_now_ = false;
  std::thread loop_;
};

// CacheInfo of the public API for a registry entry.
v1::CacheInfo ToCacheInfo(const CacheEntry& entry);

}  // namespace sparsefill::coordinator
