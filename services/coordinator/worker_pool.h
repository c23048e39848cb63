// The workers the coordinator knows (--worker), their health and the models they serve. A worker
// is healthy when its last DescribeModels answered within the health timeout; a worker that
// fails a request is probed at once, so the next request is planned over the remaining ones.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/coordinator/worker_api.h"

namespace sparsefill::coordinator {

class WorkerPool {
 public:
  // `workers` in the order given on the command line (the order of ranks in plans).
  WorkerPool(std::vector<std::unique_ptr<WorkerApi>> workers,
             std::chrono::milliseconds health_timeout);

  // Asks every worker (concurrently) for its models; marks each healthy or not.
  void Refresh();
  // Probes only `addresses` (concurrently), each bounded by the health timeout and `deadline`.
  void Probe(const std::vector<std::string>& addresses, Deadline deadline);

  // Takes a worker out of plans until its next successful probe.
  void MarkUnhealthy(const std::string& address, std::string_view why);

  // The model as the workers describe it: from a healthy worker when one serves it, else from
  // the last answer of any worker. InvalidArgument "model: unknown model" when none ever did;
  // UNAVAILABLE while no worker has answered at all (the model may well exist).
  absl::StatusOr<v1::ModelInfo> FindModel(const std::string& name) const;
  // Healthy workers serving `model`, in command-line order.
  std::vector<WorkerApi*> HealthyFor(const std::string& model) const;
  // Models of the healthy workers (first description of each name wins).
  std::vector<v1::ModelInfo> Models() const;
  // The worker with this address, or null.
  WorkerApi* Find(const std::string& address) const;
  bool healthy(const std::string& address) const;
  size_t size() const { return workers_.size(); }
  // Every worker's address, in command-line order.
  std::vector<std::string> addresses() const;

 private:
  struct State {
    bool healthy = false;
    bool described = false;  // answered DescribeModels at least once
    std::vector<v1::ModelInfo> models;
    std::string last_error;
  };
  void ProbeOne(WorkerApi* worker, Deadline deadline);

  const std::vector<std::unique_ptr<WorkerApi>> workers_;
  const std::chrono::milliseconds health_timeout_;
  mutable std::mutex mu_;
  std::map<std::string, State> state_;
};

}  // namespace sparsefill::coordinator
