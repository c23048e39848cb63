// Reads gauges from a server's Prometheus endpoint (GET /metrics over loopback), so the load
// test can watch the coordinator's own admission gauges while it runs.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace sparsefill::bench {

// The metrics address a server printed ("metrics on HOST:PORT") in `stdout_text`; NotFound when
// it printed none.
absl::StatusOr<std::string> MetricsAddress(const std::string& stdout_text);

// Every sample line without labels, by metric name ("sparsefill_admission_queue_depth" -> 3).
absl::StatusOr<std::map<std::string, double>> ScrapeMetrics(const std::string& address,
                                                            std::chrono::milliseconds timeout);

}  // namespace sparsefill::bench
