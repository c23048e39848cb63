// Page-cache control for disk benchmarks: a read only measures the disk when the file is not
// already in memory. Eviction is fdatasync + posix_fadvise(DONTNEED) (no root needed, unlike
// drop_caches); residency is measured with mincore so a result can say whether it really read
// from the disk.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace sparsefill::bench {

struct Residency {
  int64_t files = 0;
  uint64_t bytes = 0;           // total size of the regular files
  uint64_t resident_bytes = 0;  // of which in the page cache (page granularity)
  double fraction() const {
    return bytes == 0 ? 0.0 : static_cast<double>(resident_bytes) / static_cast<double>(bytes);
  }
  nlohmann::json ToJson() const;
};

// Flushes and drops every regular file under `path` (a file, or a directory recursively) from
// the page cache. Files must be closed by their writers or at least synced for DONTNEED to
// drop dirty pages; this syncs them first.
absl::Status EvictFromPageCache(const std::string& path);

// How much of `path` (file or directory tree) is in the page cache now.
absl::StatusOr<Residency> MeasureResidency(const std::string& path);

// Evicts, then measures; the returned residency is what a following read will find.
absl::StatusOr<Residency> EvictAndMeasure(const std::string& path);

// Sum of the sizes of the regular files under `path`.
uint64_t DiskUsageBytes(const std::string& path);

}  // namespace sparsefill::bench
