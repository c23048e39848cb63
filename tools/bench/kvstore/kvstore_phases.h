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
#include "sparsefill/kvstore/kv_store.h"
#include "tools/bench/harness/page_cache.h"
#include "tools/bench/harness/plain_file.h"
#include "tools/bench/harness/timing.h"
#include "tools/bench/kvstore/kv_data.h"

namespace sparsefill::bench {

enum class ReadMode { kBlockByBlock, kBatched };  // ReadBlock per block / ReadBlocks per run

// One cold read of the whole cache: the store reopened, its files evicted from the page cache.
struct ColdRead {
  ReadMode mode = ReadMode::kBatched;
  int threads = 1;              // readers, each taking whole (layer, head) runs
  Residency before_read;        // of the DB directory, right before the read
  bool read_from_disk = false;  // < 1% of the DB files cached when the read began
  double seconds = 0;           // one reader: its store calls; several: wall clock of all
  int64_t reads_from_tier = 0;  // the store's own count for the tier under test
  uint64_t bytes = 0;
  double gbps() const { return GBps(bytes, seconds); }
  nlohmann::json ToJson() const;
};

// A cache written through KvStore and read back.
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
  double read_seconds = 0;            // the main read: ReadBlocks per (layer, head), 1 thread
  std::vector<ColdRead> reads;        // every cold read made (disk tier), the main one included
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
// Cold reads made: ReadBlock per block, ReadBlocks per (layer, head) run (the main figure),
// and ReadBlocks with `read_threads` readers when > 1; each after a reopen and an eviction.
struct DiskTierOptions {
  int read_threads = 1;
  kvstore::RocksDbOptions rocksdb;
};
absl::StatusOr<StoreRunResult> RunDiskTierPhase(SyntheticKv& kv, const std::string& db_dir,
                                                const DiskTierOptions& options);

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
