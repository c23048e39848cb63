// The measured phases of `bench kvstore`, each on the same synthetic cache and the same disk:
// the plain-file limit, the RocksDB tier through KvStore (nothing hot: every read from disk),
// the host tier through KvStore (everything hot), the raw host tier, and the fp32 -> bf16
// conversion on its own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/bench/harness/page_cache.h"
#include "tools/bench/harness/plain_file.h"
#include "tools/bench/harness/timing.h"
#include "tools/bench/kvstore/kv_data.h"

namespace sparsefill::bench {

// A cache written through KvStore and read back block by block.
struct StoreRunResult {
  uint64_t bytes = 0;
  int64_t blocks = 0;
  double begin_seconds = 0;           // BeginCache (manifest synced)
  std::vector<double> layer_seconds;  // WriteLayer, per layer
  double commit_seconds = 0;          // Commit (synced)
  double write_seconds = 0;           // BeginCache .. Commit
  double close_seconds = 0;           // store destructor (waits for background flushes)
  double reopen_seconds = 0;          // KvStore::Open before the cold read (disk tier)
  Residency before_read;              // of the DB directory, right before the read
  bool read_from_disk = false;        // < 1% of the DB files cached when the read began
  double read_seconds = 0;            // ReadBlock calls only
  int64_t reads_from_tier = 0;        // the store's own count for the tier under test
  uint64_t db_bytes_on_disk = 0;      // size of the DB directory after the write
  double write_gbps() const { return GBps(bytes, write_seconds); }
  double write_through_close_gbps() const { return GBps(bytes, write_seconds + close_seconds); }
  double read_gbps() const { return GBps(bytes, read_seconds); }
  nlohmann::json ToJson() const;
};

// (a) Plain file: the converted cache, layer after layer, to `path` (removed afterwards).
absl::StatusOr<PlainFileResult> RunPlainPhase(SyntheticKv& kv, const std::string& path,
                                              size_t chunk_bytes);

// (b) RocksDB tier: hot_blocks = 0; write, close, evict the DB files, reopen, read every block.
// `db_dir` is created fresh and removed afterwards.
absl::StatusOr<StoreRunResult> RunDiskTierPhase(SyntheticKv& kv, const std::string& db_dir);

// (c) Host tier: every block hot, a host budget for the whole cache; writes are write-through
// (they include the RocksDB write); reads come from host memory.
absl::StatusOr<StoreRunResult> RunHostTierPhase(SyntheticKv& kv, const std::string& db_dir);

// The raw NewHostTier: PutBlocks per layer and Get of every block (already bf16).
struct RawTierResult {
  uint64_t bytes = 0;
  double put_seconds = 0;
  double get_seconds = 0;
  nlohmann::json ToJson() const;
};
absl::StatusOr<RawTierResult> RunRawHostTier(SyntheticKv& kv);

// fp32 -> bf16 gather + conversion of one layer, seconds per layer (median over `repeats`).
absl::StatusOr<Samples> TimeConversion(SyntheticKv& kv, int repeats);

}  // namespace sparsefill::bench
