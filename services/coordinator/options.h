// Options of the coordinator's domain class (flags live only in main, STYLE §10).
#pragma once

#include <chrono>
#include <cstdint>

#include "absl/status/status.h"
#include "services/coordinator/admission.h"
#include "services/metrics/prefill_metrics.h"
#include "services/metrics/server_metrics.h"
#include "sparsefill/common/clock.h"

namespace sparsefill::coordinator {

struct CoordinatorOptions {
  // Longest prompt in tokens; the model's own max_tokens also applies when smaller. Default 1M.
  int64_t max_tokens = int64_t{1} << 20;
  // Bounded queue + in-flight token budget.
  AdmissionController::Options admission;
  // TTL of caches whose request says 0. Default 1 hour.
  int64_t default_ttl_s = 3600;
  // Longest TTL a request may ask for. Default 7 days.
  int64_t max_ttl_s = 7 * 24 * 3600;
  // Deadline of requests that carry none (every worker call has one). Default 10 minutes.
  std::chrono::milliseconds default_deadline{std::chrono::minutes(10)};
  // Kept back from a request's deadline for worker calls, so the coordinator can still report
  // the worker's failure before its own deadline. Default 100 ms.
  std::chrono::milliseconds deadline_margin{100};
  // DescribeModels probe timeout; a worker that does not answer within it is unhealthy.
  // Default 2 s.
  std::chrono::milliseconds health_timeout{std::chrono::seconds(2)};
  // Background health refresh period. Default 5 s.
  std::chrono::milliseconds health_interval{std::chrono::seconds(5)};
  // TTL sweep and shard clean-up period. Default 1 s.
  std::chrono::milliseconds maintenance_interval{std::chrono::seconds(1)};
  // Deadline of each background DeleteShard. Default 5 s.
  std::chrono::milliseconds cleanup_timeout{std::chrono::seconds(5)};
  // How long a stream ticket of a direct plan (StreamCache with allow_direct) stays valid on its
  // worker; 0 turns direct plans off (every stream is relayed). Default 10 s; at most 60 s (the
  // workers' own limit).
  std::chrono::milliseconds direct_ticket_ttl{std::chrono::seconds(10)};
  // Expiry is judged on this clock (tests inject a FakeClock). Not owned. Default: real time.
  Clock* clock = Clock::Real();
  // Metric sets (admission's are in `admission.metrics`). Default null: not recorded. Not owned;
  // must outlive the coordinator.
  metrics::PrefillMetricSet* prefill_metrics = nullptr;
  metrics::WorkerHealthMetricSet* worker_health = nullptr;
  metrics::StreamMetricSet* stream_metrics = nullptr;

  absl::Status Validate() const;  // InvalidArgument naming the field
};

}  // namespace sparsefill::coordinator
