#include "tools/bench/load/cluster_setup.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::bench {

absl::StatusOr<std::unique_ptr<tools::LocalCluster>> StartSetupCluster(const ClusterSetup& s) {
  tools::LocalClusterOptions o;
  o.bin_dir = s.bin_dir;
  o.model_dir = s.model_dir;
  o.model_name = "tiny";
  o.workers = s.workers;
  o.work_dir = s.work_dir;
  o.threads_per_worker = s.threads_per_worker;
  o.worker_flags = s.worker_flags;
  o.coordinator_flags = s.coordinator_flags;
  return tools::LocalCluster::Start(o);
}

absl::StatusOr<std::unique_ptr<client::CoordinatorClient>> ConnectTo(
    const std::string& address, std::chrono::milliseconds timeout) {
  client::ConnectionOptions o;
  o.address = address;
  o.default_timeout = timeout;
  return client::CoordinatorClient::Connect(o);
}

absl::StatusOr<client::ModelInfo> AwaitModel(client::CoordinatorClient& client,
                                             const std::string& name,
                                             std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  absl::Status last = absl::DeadlineExceededError("no answer");
  while (std::chrono::steady_clock::now() < end) {
    auto models = client.ListModels({.timeout = std::chrono::seconds(5)});
    if (models.ok()) {
      for (const client::ModelInfo& m : *models) {
        if (m.name == name) return m;
      }
      last = absl::NotFoundError(absl::StrCat("model '", name, "' is not listed (yet)"));
    } else {
      last = models.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::Status(last.code(),
                      absl::StrCat("waiting for model '", name, "': ", last.message()));
}

}  // namespace sparsefill::bench
