// The soak test with faults (issue 9, item 4) as a library, shared by `bench soak` and the
// integration test: clients keep prefilling, streaming (every block's xxh64 recomputed) and
// deleting while a chaos loop SIGKILLs and restarts a random worker or the coordinator, and the
// workers fail RocksDB block writes at a given rate. Properties: no call outlives its deadline
// by more than a grace period, no READY cache is ever served corrupt (and the same prompt always
// gives the same cache), and after every restart a request succeeds again.
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

struct SoakOptions {
  ClusterSetup cluster;      // fault and deadline flags are added from the fields below
  std::string novel_tokens;  // required
  std::string novel_text;    // empty: token-id requests only
  double seconds = 600;      // how long the clients run
  int32_t clients = 4;
  int64_t min_tokens = 64;
  int64_t max_tokens = 2048;
  double chaos_min_s = 20;  // pause between the end of one recovery and the next kill
  double chaos_max_s = 60;
  double write_error_rate = 0.02;  // per RocksDB block batch, on every worker
  std::chrono::milliseconds deadline{std::chrono::seconds(30)};  // of every call
  std::chrono::milliseconds grace{std::chrono::seconds(5)};      // allowed past it
  std::chrono::milliseconds recovery_timeout{std::chrono::seconds(120)};
  uint64_t seed = 0;
  std::function<void(const std::string&)> log;
};

struct SoakResult {
  nlohmann::json json;
  std::vector<std::string> violations;
  int64_t requests = 0;
  int64_t ready = 0;
  int64_t verified = 0;  // READY caches streamed back intact
  int64_t restarts = 0;
  int64_t recoveries = 0;
  int64_t failed_on_injected_writes = 0;  // prefills whose status named an injected write error
};

absl::StatusOr<SoakResult> RunSoakTest(const SoakOptions& options);

}  // namespace sparsefill::bench
