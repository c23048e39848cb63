// The worker (DESIGN §1 steps 3-4, §8), transport-free: loaded models, the KV store holding this
// worker's shards, the peer mailbox, and the operations the Worker gRPC service exposes. The
// service adapter (worker_service.h) converts proto <-> these types; the peer transport comes in
// through ShardExchangeFactory (GrpcShardExchange in the process, anything in tests).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/worker/chunk_buffer.h"
#include "services/worker/job_mailbox.h"
#include "services/worker/shard_store.h"
#include "sparsefill/common/clock.h"
#include "sparsefill/engine/engine.h"
#include "sparsefill/engine/selection.h"
#include "sparsefill/engine/shard.h"
#include "sparsefill/kvstore/kv_store.h"

namespace sparsefill::worker {

struct ModelSpec {
  std::string name;  // what requests call it
  std::string dir;   // Hugging Face checkpoint directory
};

struct WorkerOptions {
  // Models loaded once at start. At least one; names unique and non-empty.
  std::vector<ModelSpec> models;
  // Engine backend: "cpu" (default).
  std::string backend = "cpu";
  // Directory of the worker's state: the KV store in <store_dir>/kv, shard records in
  // <store_dir>/shards. Required.
  std::string store_dir;
  // Hot blocks in host memory (default 1 GiB).
  uint64_t host_budget_bytes = 1ull << 30;
  // Hot/cold placement per (layer, KV head) of each shard (default: init 1, local 32, hot 64).
  kvstore::PlacementOptions placement;
  // TTL of caches whose request gives none (default 24 h; 0 never expires).
  int64_t default_ttl_ms = 24 * 3600 * 1000;
  // Peer mailbox (lingering of finished jobs, job limit).
  PeerMailbox::Options mailbox;
  // Default Clock::Real(). Not owned.
  Clock* clock = nullptr;
  // The KV store's hooks (bytes and blocks per tier, offload, reads). Default null: none. Not
  // owned; must outlive the worker.
  kvstore::KvStoreMetrics* kv_metrics = nullptr;
  // Wraps the KV store's RocksDB block writes (KvStoreOptions::wrap_disk_writes), e.g. a
  // FaultInjectingTier for write-error drills. Default empty: none.
  std::function<std::shared_ptr<kvstore::BlockTier>(std::shared_ptr<kvstore::BlockTier>)>
      wrap_disk_writes;

  absl::Status Validate() const;
};

// One rank's part of a job, as ExecuteShard receives it (validated by Worker::ExecuteShard).
struct ShardJob {
  kvstore::CacheId id;
  std::string model;
  int32_t rank = 0;
  // The ranks' token ranges: bounds[r] .. bounds[r + 1]; [world_size + 1] values.
  std::vector<int64_t> bounds;
  // host:port of every rank (what the peer transport dials), [world_size].
  std::vector<std::string> peer_addresses;
  int64_t num_tokens = 0;       // the whole prompt
  std::vector<int32_t> tokens;  // this rank's shard only
  engine::SelectionConfig selection;
  bool measure = false;
  // engine::PrefillOptions::information_loss_queries (measure).
  int32_t information_loss_queries = engine::kDefaultInformationLossQueries;
  int64_t ttl_ms = -1;  // -1: the store's default
  std::string tenant;
  // When the caller gives up (the RPC's deadline); max() for none.
  std::chrono::system_clock::time_point deadline = std::chrono::system_clock::time_point::max();
  // True once the caller went away; polled while waiting for peers. May be empty.
  std::function<bool()> cancelled;
};

// Builds the peer exchange of one job (after the job passed validation).
class ShardExchangeFactory {
 public:
  virtual ~ShardExchangeFactory() = default;
  virtual absl::StatusOr<std::unique_ptr<engine::ShardExchange>> Create(
      const ShardJob& job, const engine::ShardLayout& layout,
      std::shared_ptr<JobMailbox> mailbox) = 0;
  // Tells the job's other ranks (job.peer_addresses but job.rank) that this rank failed before
  // its exchange existed (bad input, a store error), so they fail fast naming this rank instead
  // of waiting for their deadline. Best effort; returns once every notice was answered or timed
  // out.
  virtual void AbortPeers(const ShardJob& job, const absl::Status& why) = 0;
};

// This shard's part of one layer (engine counters plus its placement).
struct ShardLayerEvent {
  int32_t layer = 0;
  int64_t selected_keys = 0;
  int64_t causal_keys = 0;
  double information_loss_sum = 0.0;
  int64_t information_loss_count = 0;
  int64_t hot_blocks = 0;
  int64_t cold_blocks = 0;
};

struct ShardOutcome {
  double seconds = 0.0;
  int64_t hot_blocks = 0;
  int64_t cold_blocks = 0;
  bool holds_last_token = false;
  // Set on the rank holding the last token of a measured run; -1 otherwise.
  double hidden_rel_l2 = -1.0;
  double next_token_kl = -1.0;
  // The whole prompt's result as the engine returned it on this rank (tests compare it).
  engine::ShardPrefillResult result;
};

// A shard of a stored cache, with its place in the whole cache.
struct ShardInfo {
  kvstore::CacheId id;
  std::string model;
  std::string tenant;
  kvstore::CacheLayout layout;  // the whole cache's (num_tokens = the prompt's)
  int64_t token_begin = 0;
  int64_t token_end = 0;
  int32_t layers_written = 0;
  bool ready = false;
  int64_t hot_blocks = 0;
  int64_t cold_blocks = 0;
};

// Consecutive blocks of one (layer, KV head), served from one tier with one hot flag.
struct BlockRun {
  int32_t layer = 0;
  int32_t kv_head = 0;
  int64_t first_block = 0;  // global block index (the whole cache's)
  int32_t num_blocks = 0;
};
struct BlockChunk {
  BlockRun run;
  kvstore::Tier tier = kvstore::Tier::kDisk;
  bool hot = false;
  std::vector<uint64_t> checksums;  // one xxh64 per block, from the manifest
  ChunkBuffer data;                 // the blocks' bytes, K then V per block
};

struct ModelInfo {
  std::string name;
  engine::ModelConfig config;
  bool has_tokenizer = false;
};

class Worker {
 public:
  // Loads every model and opens the store (recovering it). InvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(const WorkerOptions& options);
  ~Worker();

  // Runs this rank's shard: validates the job (InvalidArgument naming the field), registers the
  // PENDING cache, prefills through the exchange with each layer written into the store, commits.
  // `on_layer` gets one event per stored layer (in layer order) before this returns. On any
  // failure the exchange is aborted (peers fail fast naming this rank), the PENDING cache
  // dropped, and the cause returned.
  absl::StatusOr<ShardOutcome> ExecuteShard(
      const ShardJob& job, ShardExchangeFactory& exchanges,
      const std::function<absl::Status(const ShardLayerEvent&)>& on_layer);

  // Streams blocks of stored layers: chunks of consecutive blocks of one (layer, head), cut once a
  // chunk holds >= chunk_bytes (and where the hot flag changes, so a chunk is all hot or all
  // cold). `tier` is the coldest tier a chunk's blocks came from. Ranges use global block
  // indices and must lie inside this worker's shard. `emit` may take the chunk's data (it is
  // handed over mutable so the bytes need not be copied again). With `hot_pass`, cold blocks
  // are not read: each cold run comes as a chunk with its place and no data or checksums.
  absl::Status ReadBlocks(const kvstore::CacheId& id, std::span<const BlockRun> ranges,
                          uint64_t chunk_bytes,
                          const std::function<absl::Status(BlockChunk&)>& emit,
                          bool hot_pass = false);
  absl::StatusOr<ShardInfo> GetShard(const kvstore::CacheId& id) const;
  absl::Status DeleteShard(const kvstore::CacheId& id);
  std::vector<ShardInfo> ListShards() const;
  // Deletes the shards whose TTL has passed (with their records) and returns how many; also
  // drops the records of caches that are gone and collects idle peer mailboxes. One shard or
  // record that cannot be removed does not stop the others: every one is tried, and the
  // failures are returned together, naming each cache (the next sweep retries them).
  absl::StatusOr<int64_t> ExpireCaches();

  std::vector<ModelInfo> Models() const;
  // NotFound names the model and the ones served.
  absl::StatusOr<engine::Engine*> FindModel(std::string_view name) const;
  // FailedPrecondition when the model has no tokenizer; InvalidArgument for bad UTF-8.
  absl::StatusOr<std::vector<int32_t>> Tokenize(std::string_view model,
                                                std::string_view text) const;

  PeerMailbox& mailbox() { return mailbox_; }
  kvstore::KvStore& store() { return *store_; }
  // The shard records next to the store: tools that install a cache without a prefill (bench
  // stream) put its record here before BeginCache, as ExecuteShard does.
  ShardRecords& records() { return *records_; }

 private:
  explicit Worker(const PeerMailbox::Options& mailbox) : mailbox_(mailbox) {}
  absl::StatusOr<ShardInfo> InfoOf(const kvstore::Manifest& m, const ShardRecord& r) const;

  WorkerOptions options_;
  std::map<std::string, std::unique_ptr<engine::Engine>, std::less<>> models_;
  std::unique_ptr<kvstore::KvStore> store_;
  std::unique_ptr<ShardRecords> records_;
  PeerMailbox mailbox_;
  // ReadBlocks' chunk buffers, reused across chunks and streams.
  std::shared_ptr<ChunkBufferPool> chunk_buffers_ =
      ChunkBufferPool::Create(ChunkBufferPool::Options{});
  std::mutex running_mu_;
  std::set<kvstore::CacheId> running_;  // jobs in ExecuteShard here (their records are kept)
};

}  // namespace sparsefill::worker
