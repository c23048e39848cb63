// Memory of a server process from /proc/<pid>/status: resident now (VmRSS) and its peak
// (VmHWM), the numbers the load test bounds.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace sparsefill::bench {

struct ProcMemory {
  int64_t rss_kib = 0;  // VmRSS
  int64_t hwm_kib = 0;  // VmHWM: the peak resident set since the process started
};

// NotFound when the process is gone; DataLoss when the file lacks the fields.
absl::StatusOr<ProcMemory> ReadProcMemory(pid_t pid);

}  // namespace sparsefill::bench
