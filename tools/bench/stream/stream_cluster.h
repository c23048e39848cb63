// The serving path `bench stream` measures, in one process on 127.0.0.1: real Worker services
// (gRPC, KvStore in a scratch directory) and the real Coordinator service over a RecordStore
// registry. A synthetic cache is installed without a prefill: its shards are written straight
// into the workers' stores (with the shard records ExecuteShard would write) and the READY entry
// goes into the coordinator's registry, so StreamCache serves it exactly as a prefilled one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/kvstore/layout.h"
#include "tools/bench/kvstore/kv_data.h"

namespace sparsefill::bench {

struct ClusterOptions {
  std::string dir;        // scratch directory (created; removed by the destructor)
  std::string model_dir;  // checkpoint every worker loads (Worker::Create needs one model)
  int workers = 1;        // the cache is split into this many block-aligned shards
  uint64_t chunk_bytes = 1u << 20;  // the workers' ReadBlocks chunk size
  // true: every block hot in the host tier (budget for the whole cache); false: hot_blocks = 0,
  // every block served from the RocksDB tier.
  bool hot = true;
  uint64_t cache_bytes = 0;  // host budget needed per worker when hot (its shard's bytes)
};

struct InstalledCache {
  kvstore::CacheId id;
  uint64_t bytes = 0;
  int64_t blocks = 0;
  int64_t hot_blocks = 0;    // as the workers' manifests say
  double write_seconds = 0;  // BeginCache .. Commit over every shard
};

class StreamCluster {
 public:
  static absl::StatusOr<std::unique_ptr<StreamCluster>> Start(const ClusterOptions& options);
  ~StreamCluster();
  StreamCluster(const StreamCluster&) = delete;
  StreamCluster& operator=(const StreamCluster&) = delete;

  // Writes `kv`'s cache (every layer) over the workers and registers it READY for tenant "".
  absl::StatusOr<InstalledCache> Install(SyntheticKv& kv, const std::string& model);

  // host:port of the coordinator.
  const std::string& address() const;
  std::vector<std::string> worker_addresses() const;

 private:
  struct Impl;
  explicit StreamCluster(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparsefill::bench
