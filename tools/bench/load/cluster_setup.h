// The embedded cluster the load and soak tests run against: real sparsefill-worker and
// sparsefill-coordinator processes on loopback (LocalCluster), the tiny model, plus what both
// tests need from the novel.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/client/coordinator_client.h"
#include "tools/sparsefill/local_cluster.h"

namespace sparsefill::bench {

struct ClusterSetup {
  std::string bin_dir;    // sparsefill-worker, sparsefill-coordinator; required
  std::string model_dir;  // the checkpoint served as "tiny"; required
  std::string work_dir;   // existing directory for stores, registry and logs; required
  int32_t workers = 2;
  int32_t threads_per_worker = 1;  // OpenMP/BLAS threads of each worker
  std::vector<std::string> worker_flags;
  std::vector<std::string> coordinator_flags;
};

absl::StatusOr<std::unique_ptr<tools::LocalCluster>> StartSetupCluster(const ClusterSetup& setup);

absl::StatusOr<std::unique_ptr<client::CoordinatorClient>> ConnectTo(
    const std::string& address, std::chrono::milliseconds timeout);

// The model as the coordinator describes it (waits up to `timeout` for the workers to answer).
absl::StatusOr<client::ModelInfo> AwaitModel(client::CoordinatorClient& client,
                                             const std::string& name,
                                             std::chrono::milliseconds timeout);

}  // namespace sparsefill::bench
