#include "tools/sparsefill/local_cluster.h"

#include <signal.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::tools {
namespace {

namespace fs = std::filesystem;

absl::Status MakeDir(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", path, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(
    const LocalClusterOptions& options) {
  if (options.bin_dir.empty()) return absl::InvalidArgumentError("bin_dir: required");
  if (options.model_dir.empty()) return absl::InvalidArgumentError("model_dir: required");
  if (options.work_dir.empty()) return absl::InvalidArgumentError("work_dir: required");
  if (options.workers < 1) {
    return absl::InvalidArgumentError(absl::StrCat("workers: ", options.workers, " < 1"));
  }
  if (options.metrics_port_base < 0 ||
      static_cast<int64_t>(options.metrics_port_base) + options.workers > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics_port_base: ", options.metrics_port_base,
                                                   " with ", options.workers,
                                                   " workers leaves 1..65535"));
  }
  SF_RETURN_IF_ERROR(MakeDir(options.work_dir + "/logs"));
  std::unique_ptr<LocalCluster> c(new LocalCluster(options));
  // All workers load the model at once; then each one's address is read in turn.
  for (int32_t i = 0; i < options.workers; ++i) {
    SF_RETURN_IF_ERROR(MakeDir(absl::StrCat(options.work_dir, "/worker", i)));
    SF_ASSIGN_OR_RETURN(auto w, c->SpawnServer("sparsefill-worker", c->WorkerArgs(i, "127.0.0.1:0"),
                                               absl::StrCat("worker", i), c->WorkerEnv()));
    c->workers_.push_back(std::move(w));
  }
  for (auto& w : c->workers_) {
    SF_ASSIGN_OR_RETURN(std::string address, w->WaitForListening(options.start_timeout));
    c->worker_addresses_.push_back(std::move(address));
  }
  SF_ASSIGN_OR_RETURN(
      c->coordinator_,
      c->SpawnServer("sparsefill-coordinator", c->CoordinatorArgs("127.0.0.1:0"), "coordinator"));
  SF_ASSIGN_OR_RETURN(c->coordinator_address_,
                      c->coordinator_->WaitForListening(options.start_timeout));
  return c;
}

LocalCluster::~LocalCluster() { StopAll(); }

std::vector<std::string> LocalCluster::WorkerArgs(int32_t i, const std::string& listen) const {
  std::vector<std::string> args = {
      "--listen", listen,
      "--model",  absl::StrCat(options_.model_name, "=", options_.model_dir),
      "--store",  absl::StrCat(options_.work_dir, "/worker", i)};
  if (options_.metrics_port_base > 0) {
    args.push_back("--metrics-listen");
    args.push_back(worker_metrics_address(i));
  }
  args.insert(args.end(), options_.worker_flags.begin(), options_.worker_flags.end());
  return args;
}

std::string LocalCluster::coordinator_metrics_address() const {
  if (options_.metrics_port_base <= 0) return "";
  return absl::StrCat("127.0.0.1:", options_.metrics_port_base);
}

std::string LocalCluster::worker_metrics_address(int32_t i) const {
  if (options_.metrics_port_base <= 0) return "";
  return absl::StrCat("127.0.0.1:", options_.metrics_port_base + 1 + i);
}

std::vector<std::string> LocalCluster::CoordinatorArgs(const std::string& listen) const {
  std::vector<std::string> args = {"--listen", listen, "--registry",
                                   options_.work_dir + "/registry"};
  for (const std::string& w : worker_addresses_) {
    args.push_back("--worker");
    args.push_back(w);
  }
  if (options_.metrics_port_base > 0) {
    args.push_back("--metrics-listen");
    args.push_back(coordinator_metrics_address());
  }
  args.insert(args.end(), options_.coordinator_flags.begin(), options_.coordinator_flags.end());
  return args;
}

std::vector<std::string> LocalCluster::WorkerEnv() const {
  if (options_.threads_per_worker <= 0) return {};
  const std::string n = std::to_string(options_.threads_per_worker);
  return {"OMP_NUM_THREADS=" + n, "OPENBLAS_NUM_THREADS=" + n};
}

absl::StatusOr<std::unique_ptr<ChildProcess>> LocalCluster::SpawnServer(
    const std::string& program, std::vector<std::string> args, const std::string& log_name,
    std::vector<std::string> env) {
  ChildOptions o;
  o.program = options_.bin_dir + "/" + program;
  o.env = std::move(env);
  o.args = std::move(args);
  o.stderr_path = absl::StrCat(options_.work_dir, "/logs/", log_name, ".log");
  o.process_group = group_;
  SF_ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> child, ChildProcess::Spawn(o));
  if (group_ == 0) group_ = child->pid();  // the first child leads the group
  return child;
}

absl::StatusOr<std::unique_ptr<ChildProcess>> LocalCluster::Spawn(
    const std::string& program, const std::vector<std::string>& args, const std::string& log_name) {
  return SpawnServer(program, args, log_name);
}

absl::Status LocalCluster::RestartWorker(int32_t i) {
  if (i < 0 || i >= static_cast<int32_t>(workers_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("worker ", i, " of ", workers_.size()));
  }
  auto& w = workers_[static_cast<size_t>(i)];
  if (w->Running()) return absl::FailedPreconditionError(absl::StrCat("worker ", i, " runs"));
  const std::string& address = worker_addresses_[static_cast<size_t>(i)];
  SF_ASSIGN_OR_RETURN(w, SpawnServer("sparsefill-worker", WorkerArgs(i, address),
                                     absl::StrCat("worker", i), WorkerEnv()));
  SF_ASSIGN_OR_RETURN(const std::string now, w->WaitForListening(options_.start_timeout));
  if (now != address) {
    return absl::InternalError(
        absl::StrCat("worker ", i, " came back on ", now, ", not ", address));
  }
  return absl::OkStatus();
}

absl::Status LocalCluster::RestartCoordinator() {
  if (coordinator_->Running()) return absl::FailedPreconditionError("the coordinator runs");
  SF_ASSIGN_OR_RETURN(
      coordinator_,
      SpawnServer("sparsefill-coordinator", CoordinatorArgs(coordinator_address_), "coordinator"));
  SF_ASSIGN_OR_RETURN(const std::string now,
                      coordinator_->WaitForListening(options_.start_timeout));
  if (now != coordinator_address_) {
    return absl::InternalError(
        absl::StrCat("the coordinator came back on ", now, ", not ", coordinator_address_));
  }
  return absl::OkStatus();
}

void LocalCluster::StopAll(std::chrono::milliseconds grace) {
  if (group_ > 0) ::killpg(group_, SIGTERM);
  const auto end = std::chrono::steady_clock::now() + grace;
  auto stop = [&](std::unique_ptr<ChildProcess>& p) {
    if (p == nullptr) return;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (!p->Wait(std::max(left, std::chrono::milliseconds(0))).ok()) {
      p->Signal(SIGKILL);
      (void)p->Wait(std::chrono::seconds(5));
    }
  };
  stop(coordinator_);
  for (auto& w : workers_) stop(w);
  // Anything else of the group (sinks a caller did not stop) goes too. Then the id is
  // forgotten: once the group is empty the number may be reused by an unrelated process group.
  if (group_ > 0) ::killpg(group_, SIGKILL);
  group_ = 0;
}

std::string LocalCluster::LogTail(const std::string& log_name, size_t max_bytes) const {
  std::ifstream in(absl::StrCat(options_.work_dir, "/logs/", log_name, ".log"), std::ios::binary);
  if (!in) return "";
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > max_bytes ? text.substr(text.size() - max_bytes) : text;
}

}  // namespace sparsefill::tools
