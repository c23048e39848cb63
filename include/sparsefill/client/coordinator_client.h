// A thin client of the public Coordinator API (DESIGN §7). Every call has a deadline (the
// call's timeout, else the connection's default), KV chunks are checked (xxh64 of every block,
// ranges against the cache layout) before the callback sees them, and errors come back as the
// server's status code with its message.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/client/types.h"

namespace sparsefill::client {

class CoordinatorClient {
 public:
  using ProgressCallback = std::function<void(const PrefillProgress&)>;
  // A non-OK return cancels the stream; the call then returns that status.
  using ChunkCallback = std::function<absl::Status(const KvChunk&)>;

  // Validates `options` and opens a channel (connecting lazily, on the first call).
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Connect(
      const ConnectionOptions& options);
  ~CoordinatorClient();
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  // Runs a prefill to the end, reporting admission and every finished layer.
  absl::StatusOr<PrefillResult> Prefill(const PrefillRequest& request,
                                        const ProgressCallback& on_progress = {},
                                        const CallOptions& call = {});
  absl::StatusOr<CacheInfo> GetCache(const kvstore::CacheId& id, const CallOptions& call = {});
  // Reads the cache's layout (GetCache) and streams its blocks, hot first; the timeout covers
  // both. DATA_LOSS names the block whose checksum does not match. With
  // ConnectionOptions::direct_streams a READY cache comes straight from its workers, all shards
  // at once, each hot first (so chunks of different shards interleave); blocks a failed direct
  // stream did not deliver come through the coordinator afterwards (StreamStats says how many
  // came which way).
  absl::StatusOr<StreamStats> StreamCache(const kvstore::CacheId& id, bool hot_only,
                                          const ChunkCallback& on_chunk,
                                          const CallOptions& call = {});
  absl::StatusOr<StreamStats> FetchBlocks(const kvstore::CacheId& id,
                                          const std::vector<BlockRange>& ranges,
                                          const ChunkCallback& on_chunk,
                                          const CallOptions& call = {});
  absl::Status DeleteCache(const kvstore::CacheId& id, const CallOptions& call = {});
  absl::StatusOr<std::vector<ModelInfo>> ListModels(const CallOptions& call = {});

 private:
  struct Impl;
  explicit CoordinatorClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparsefill::client
