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

absl::StatusOr<std::unique_ptr<client::CoordinatorClient>> ConnectTo(
    const std::string& address, std::chrono::milliseconds timeout);

// What a load or soak run starts from: the cluster up and serving "tiny", a client of its
// coordinator, the model as the coordinator describes it, and the novel (its text left empty when
// the model has no tokenizer, since text requests would then be malformed).
struct StartedCluster {
  std::unique_ptr<tools::LocalCluster> cluster;
  std::unique_ptr<client::CoordinatorClient> probe;  // call deadline `timeout` of StartCluster
  client::ModelInfo model;
  std::vector<int32_t> novel_ids;
  std::string novel_text;
};

// Reads the novel's token ids (`novel_tokens`, .u32) and text (`novel_text`; empty: none), starts
// the cluster and waits up to a minute for the coordinator to list the model.
absl::StatusOr<StartedCluster> StartCluster(const ClusterSetup& setup,
                                            const std::string& novel_tokens,
                                            const std::string& novel_text,
                                            std::chrono::milliseconds timeout);

}  // namespace sparsefill::bench
