#include "tools/bench/load/cluster_setup.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "tools/sparsefill/token_file.h"

namespace sparsefill::bench {
namespace {

// The model as the coordinator describes it (waits up to `timeout` for the workers to answer).
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

}  // namespace

absl::StatusOr<std::unique_ptr<client::CoordinatorClient>> ConnectTo(
    const std::string& address, std::chrono::milliseconds timeout) {
  client::ConnectionOptions o;
  o.address = address;
  o.default_timeout = timeout;
  return client::CoordinatorClient::Connect(o);
}

absl::StatusOr<StartedCluster> StartCluster(const ClusterSetup& s, const std::string& novel_tokens,
                                            const std::string& novel_text,
                                            std::chrono::milliseconds timeout) {
  StartedCluster r;
  SF_ASSIGN_OR_RETURN(r.novel_ids, tools::ReadTokenFile(novel_tokens));
  if (!novel_text.empty()) {
    SF_ASSIGN_OR_RETURN(r.novel_text, tools::ReadFileBytes(novel_text));
  }
  tools::LocalClusterOptions o;
  o.bin_dir = s.bin_dir;
  o.model_dir = s.model_dir;
  o.model_name = "tiny";
  o.workers = s.workers;
  o.work_dir = s.work_dir;
  o.threads_per_worker = s.threads_per_worker;
  o.worker_flags = s.worker_flags;
  o.coordinator_flags = s.coordinator_flags;
  SF_ASSIGN_OR_RETURN(r.cluster, tools::LocalCluster::Start(o));
  SF_ASSIGN_OR_RETURN(r.probe, ConnectTo(r.cluster->coordinator_address(), timeout));
  SF_ASSIGN_OR_RETURN(r.model, AwaitModel(*r.probe, "tiny", std::chrono::seconds(60)));
  if (!r.model.has_tokenizer) r.novel_text.clear();
  return r;
}

}  // namespace sparsefill::bench
