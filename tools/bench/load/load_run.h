// The load test (issue 9, item 3) as a library, so `bench load` and the integration test run the
// same code: N concurrent clients on loopback send a mix of valid and malformed prefills to the
// embedded cluster; every valid request must end READY or RESOURCE_EXHAUSTED, every malformed one
// INVALID_ARGUMENT; every READY cache is streamed and verified right away, verified again later
// (after other requests ran) and then deleted, so the store stays bounded; the coordinator's
// admission gauges are watched against their limits; server RSS is compared after warm-up and
// after the run.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/bench/load/cluster_setup.h"

namespace sparsefill::bench {

struct LoadOptions {
  ClusterSetup cluster;      // coordinator admission flags are added from the fields below
  std::string novel_tokens;  // the novel's token ids (.u32); required
  std::string novel_text;    // the novel's text; empty: token-id requests only
  int32_t clients = 64;
  int64_t requests = 2000;
  // Requests run before the RSS baseline is taken, each with the pool's longest prompt so the
  // servers reach their peak footprint first (counted in the totals). -1: 10% of requests, at
  // least 2 per client.
  int64_t warmup_requests = -1;
  int64_t min_tokens = 64;
  int64_t max_tokens = 8192;  // also the coordinator's --max-tokens
  double malformed_fraction = 0.05;
  int32_t max_queue = 16;           // the coordinator's --max-queue
  int64_t max_inflight_tokens = 0;  // --max-inflight-tokens; 0: 2 x max_tokens
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};  // each call's deadline
  // A call that finds no connection to the coordinator is retried every 250 ms while the outage
  // (from the first such failure of any client to the next call that gets through) is shorter
  // than this; after that it fails as it is, so a dead coordinator ends the run quickly. Reported
  // as undelivered_calls (calls retried at least once) and undelivered_attempts.
  std::chrono::milliseconds unreachable_limit{std::chrono::seconds(30)};
  int32_t keep_per_client = 2;  // READY caches a client holds before re-verifying the oldest
  double rss_tolerance = 0.10;  // after-run RSS vs after-warm-up, per server process
  uint64_t seed = 0;
  std::function<void(const std::string&)> log;  // progress lines; may be empty
};

struct LoadResult {
  nlohmann::json json;                  // config, counts, latencies, memory, violations
  std::vector<std::string> violations;  // empty: every property held
  int64_t requests = 0;
  int64_t ready = 0;
  int64_t resource_exhausted = 0;
  int64_t invalid_argument = 0;
  int64_t malformed = 0;
  int64_t verified_caches = 0;  // READY caches streamed and verified twice, then deleted
  double seconds = 0;
};

// Starts the cluster in options.cluster.work_dir, runs the load, stops the cluster. A non-OK
// status means the test could not run (no binaries, cluster did not start); property failures
// are in `violations`.
absl::StatusOr<LoadResult> RunLoadTest(const LoadOptions& options);

// A call the client could not even deliver: its channel found no connection to the coordinator
// (gRPC's own UNAVAILABLE, "failed to connect to all addresses"), so the server never saw it.
// gRPC fails such calls at once while the channel waits out its reconnect backoff (1 s, then
// longer), and a client that sends its next request right away burns through a whole run in that
// second. A real client retries them; the load test does too, and counts them. Anything else is
// not retried: the server answering UNAVAILABLE (the coordinator passes on a worker it could not
// reach with the same words, prefixed with what it was doing), a stream broken midway.
bool IsUndeliveredCall(const absl::Status& status);

// p50/p99/mean/max of a set of seconds, as JSON.
nlohmann::json LatencySummary(std::vector<double> seconds);

}  // namespace sparsefill::bench
