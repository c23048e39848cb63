// `bench load` and `bench soak` (issue 9 items 3-4): the embedded cluster (real processes on
// loopback) under many clients, and under kills and injected write errors. Included by
// tools/bench/commands.h when SPARSEFILL_BENCH_LOAD=1.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "tools/bench/commands.h"
#include "tools/bench/load/cluster_setup.h"
#include "tools/sparsefill/child_process.h"

namespace sparsefill::bench {

// Where the cluster comes from (both commands).
struct ClusterArgs {
  std::string model;    // --model: checkpoint dir (default <build>/models/tiny, made if missing)
  std::string dir;      // --dir: scratch for stores and logs (default <build>/bench-data)
  int32_t workers = 2;  // --workers
  int32_t threads = 1;  // --threads-per-worker
  std::string novel;    // --novel-tokens (default tests/fixtures/tokenizer/...qwen3.u32)
  std::string text;     // --text (default ../shared/data/pride_and_prejudice.txt when present)
  uint64_t seed = 0;    // --seed (0: from the clock)
  // --worker-flag / --coordinator-flag (repeatable): extra flags of every worker / of the
  // coordinator, e.g. --worker-flag=--heap-trim-ms=0 for glibc's own heap behaviour.
  std::vector<std::string> worker_flags, coordinator_flags;
};

// Shared by both commands: registers the ClusterArgs flags; turns them into a cluster setup with a
// fresh work directory (removed by `work`), the novel's files and the seed.
void AddClusterFlags(CLI::App& sub, ClusterArgs& a);
absl::Status PrepareCluster(const ClusterArgs& a, ClusterSetup* setup, std::string* novel,
                            std::string* text, uint64_t* seed,
                            std::unique_ptr<tools::TempDir>* work);

struct LoadArgs {
  CommonArgs common;
  ClusterArgs cluster;
  int32_t clients = 64;       // --clients
  int64_t requests = 2000;    // --requests
  int64_t min_tokens = 64;    // --min-tokens
  int64_t max_tokens = 8192;  // --max-tokens
  double malformed = 0.05;    // --malformed
  int32_t max_queue = 16;     // --max-queue (the coordinator's)
  int64_t max_inflight = 0;   // --max-inflight-tokens (0: 2 x max-tokens)
  double timeout_s = 300;     // --timeout-s (each call)
};
CLI::App* AddLoadCommand(CLI::App& app, LoadArgs& args);
int RunLoad(const LoadArgs& args);

struct SoakArgs {
  CommonArgs common;
  ClusterArgs cluster;
  double seconds = 600;        // --seconds
  int32_t clients = 4;         // --clients
  int64_t min_tokens = 64;     // --min-tokens
  int64_t max_tokens = 2048;   // --max-tokens
  double chaos_min_s = 20;     // --chaos-min-s
  double chaos_max_s = 60;     // --chaos-max-s
  double write_errors = 0.02;  // --write-error-rate
  double deadline_s = 30;      // --deadline-s
  double grace_s = 5;          // --grace-s
};
CLI::App* AddSoakCommand(CLI::App& app, SoakArgs& args);
int RunSoak(const SoakArgs& args);

}  // namespace sparsefill::bench
