// The plain-file baseline run side by side with a storage benchmark: the same bytes written
// sequentially to one file on the same disk (write() in large chunks, fsync), evicted from the
// page cache, read back sequentially and checked. Its GB/s are the physical limit the storage
// under test is compared against.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/bench/harness/page_cache.h"

namespace sparsefill::bench {

struct PlainFileOptions {
  std::string path;    // the file; created, and removed afterwards unless keep_file
  int64_t pieces = 0;  // the file is `pieces` pieces of piece_bytes each
  size_t piece_bytes = 0;
  size_t chunk_bytes = 16 << 20;  // the most one write()/read() moves (default 16 MiB)
  bool keep_file = false;
};

// Fills piece i (untimed). The same function must give the same bytes when called again for
// the check.
using PieceFn = std::function<absl::Status(int64_t piece, std::span<uint8_t> out)>;

struct PlainFileResult {
  uint64_t bytes = 0;
  double write_seconds = 0;          // write() calls + fsync
  double read_seconds = 0;           // read() calls
  uint64_t cached_before_evict = 0;  // /proc/meminfo Cached
  uint64_t cached_after_evict = 0;
  Residency before_read;        // mincore of the file right before the read
  bool read_from_disk = false;  // less than 1% of the file was cached when the read began
  double write_gbps() const;
  double read_gbps() const;
  nlohmann::json ToJson() const;
};

// Writes, evicts, reads back and compares every piece with `fill`'s bytes (DataLoss naming the
// first differing piece). Checking and filling are not timed.
absl::StatusOr<PlainFileResult> RunPlainFile(const PlainFileOptions& options, const PieceFn& fill);

}  // namespace sparsefill::bench
