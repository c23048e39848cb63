#include "services/coordinator/worker_pool.h"

#include <algorithm>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {

WorkerPool::WorkerPool(std::vector<std::unique_ptr<WorkerApi>> workers,
                       std::chrono::milliseconds health_timeout)
    : workers_(std::move(workers)), health_timeout_(health_timeout) {
  for (const auto& w : workers_) state_[w->address()];
}

void WorkerPool::ProbeOne(WorkerApi* worker, Deadline deadline) {
  Deadline d = std::chrono::system_clock::now() + health_timeout_;
  if (deadline < d) d = deadline;
  absl::StatusOr<v1::ListModelsResponse> models = worker->DescribeModels(CallControl{d, nullptr});
  std::lock_guard<std::mutex> lock(mu_);
  State& s = state_[worker->address()];
  s.healthy = models.ok();
  if (models.ok()) {
    s.described = true;
    s.models.assign(models->models().begin(), models->models().end());
    s.last_error.clear();
  } else {
    s.last_error = std::string(models.status().message());
  }
}

void WorkerPool::Probe(const std::vector<std::string>& addresses, Deadline deadline) {
  std::vector<std::thread> threads;
  for (const std::string& a : addresses) {
    WorkerApi* w = Find(a);
    if (w != nullptr) threads.emplace_back([this, w, deadline] { ProbeOne(w, deadline); });
  }
  for (std::thread& t : threads) t.join();
}

void WorkerPool::Refresh() {
  std::vector<std::string> all;
  for (const auto& w : workers_) all.push_back(w->address());
  Probe(all, kNoDeadline);
}

absl::StatusOr<v1::ModelInfo> WorkerPool::FindModel(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  const v1::ModelInfo* fallback = nullptr;
  std::set<std::string> known;
  for (const auto& w : workers_) {
    const State& s = state_.at(w->address());
    for (const v1::ModelInfo& m : s.models) {
      known.insert(m.name());
      if (m.name() != name) continue;
      if (s.healthy) return m;
      if (fallback == nullptr) fallback = &m;
    }
  }
  if (fallback != nullptr) return *fallback;
  const bool any_described =
      std::any_of(state_.begin(), state_.end(), [](const auto& kv) { return kv.second.described; });
  if (!any_described) {
    return absl::UnavailableError(absl::StrCat("model '", name,
                                               "': no worker has answered DescribeModels yet (",
                                               workers_.size(), " configured)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("model: unknown model '", name, "' (served: ", absl::StrJoin(known, ", "), ")"));
}

std::vector<WorkerApi*> WorkerPool::HealthyFor(const std::string& model) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerApi*> out;
  for (const auto& w : workers_) {
    const State& s = state_.at(w->address());
    if (!s.healthy) continue;
    if (std::any_of(s.models.begin(), s.models.end(),
                    [&](const v1::ModelInfo& m) { return m.name() == model; })) {
      out.push_back(w.get());
    }
  }
  return out;
}

std::vector<v1::ModelInfo> WorkerPool::Models() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::ModelInfo> out;
  std::set<std::string> seen;
  for (const auto& w : workers_) {
    const State& s = state_.at(w->address());
    if (!s.healthy) continue;
    for (const v1::ModelInfo& m : s.models) {
      if (seen.insert(m.name()).second) out.push_back(m);
    }
  }
  return out;
}

void WorkerPool::MarkUnhealthy(const std::string& address, std::string_view why) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = state_.find(address);
  if (it == state_.end()) return;
  it->second.healthy = false;
  it->second.last_error = std::string(why);
}

WorkerApi* WorkerPool::Find(const std::string& address) const {
  for (const auto& w : workers_) {
    if (w->address() == address) return w.get();
  }
  return nullptr;
}

bool WorkerPool::healthy(const std::string& address) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = state_.find(address);
  return it != state_.end() && it->second.healthy;
}

std::vector<std::string> WorkerPool::addresses() const {
  std::vector<std::string> out;
  out.reserve(workers_.size());
  for (const auto& w : workers_) out.push_back(w->address());
  return out;
}

}  // namespace sparsefill::coordinator
