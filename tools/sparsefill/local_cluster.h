// N sparsefill-worker processes and one sparsefill-coordinator on loopback, every one a real
// binary from the same bin directory, all in one process group (so one killpg ends them all).
// Ports are picked by the servers (port 0) and read from their "listening on" line; stores, the
// registry and logs live under a work directory. Used by `sparsefill demo` and the integration
// tests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/sparsefill/child_process.h"

namespace sparsefill::tools {

struct LocalClusterOptions {
  // Directory holding sparsefill-worker and sparsefill-coordinator. Required.
  std::string bin_dir;
  // The checkpoint every worker serves, under this name. Required.
  std::string model_dir;
  std::string model_name = "tiny";
  // Number of workers. Default 2.
  int32_t workers = 2;
  // Existing directory for worker stores (worker<i>/), the registry (registry/) and logs
  // (logs/<process>.log). Required.
  std::string work_dir;
  // Extra flags of every worker / of the coordinator (e.g. --tokens FILE, --deadline-ms 5000).
  std::vector<std::string> worker_flags;
  std::vector<std::string> coordinator_flags;
  // OpenMP and OpenBLAS threads of each worker (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS); 0: the
  // environment's. Workers sharing few cores run much faster with cores / workers each than
  // with every worker spinning a thread per core. Default 0.
  int32_t threads_per_worker = 0;
  // How long a server may take to print "listening on". Default 60 s (workers load the model).
  std::chrono::milliseconds start_timeout{std::chrono::seconds(60)};
  // Serves /metrics (--metrics-listen) on 127.0.0.1: the coordinator on this port and worker i on
  // metrics_port_base + 1 + i, fixed up front so that a Prometheus config can name them before
  // the cluster starts. 0: no metrics endpoints. Default 0.
  int32_t metrics_port_base = 0;
};

class LocalCluster {
 public:
  // Starts the workers (in parallel), then the coordinator pointing at them.
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(const LocalClusterOptions& options);
  // Stops every process still running (SIGTERM to the group, then SIGKILL).
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  const std::string& coordinator_address() const { return coordinator_address_; }
  const std::vector<std::string>& worker_addresses() const { return worker_addresses_; }
  // The group every process of the cluster (and Spawn) joins.
  pid_t process_group() const { return group_; }
  ChildProcess& coordinator() { return *coordinator_; }
  ChildProcess& worker(int32_t i) { return *workers_[static_cast<size_t>(i)]; }
  const LocalClusterOptions& options() const { return options_; }
  // "127.0.0.1:PORT" of each server's /metrics; empty when metrics_port_base is 0.
  std::string coordinator_metrics_address() const;
  std::string worker_metrics_address(int32_t i) const;

  // Restart* and Spawn must be called from a thread that lives as long as the process should:
  // children die (PR_SET_PDEATHSIG) when the thread that forked them exits.
  // Starts worker i again on its old address and store (after it was killed).
  absl::Status RestartWorker(int32_t i);
  // Starts the coordinator again on its old address and registry (after it was killed).
  absl::Status RestartCoordinator();
  // Another process of the group (a decode sink, a client); stderr goes to logs/<log_name>.log.
  absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::string& program,
                                                      const std::vector<std::string>& args,
                                                      const std::string& log_name);
  // SIGTERM to the whole group, SIGKILL after `grace`, and reaps the cluster's own processes.
  // Restarting a process afterwards starts a new group.
  void StopAll(std::chrono::milliseconds grace = std::chrono::seconds(3));
  // The last lines of a process's log, for error messages.
  std::string LogTail(const std::string& log_name, size_t max_bytes = 2000) const;

 private:
  explicit LocalCluster(const LocalClusterOptions& options) : options_(options) {}
  absl::StatusOr<std::unique_ptr<ChildProcess>> SpawnServer(const std::string& program,
                                                            std::vector<std::string> args,
                                                            const std::string& log_name,
                                                            std::vector<std::string> env = {});
  std::vector<std::string> WorkerEnv() const;
  std::vector<std::string> WorkerArgs(int32_t i, const std::string& listen) const;
  std::vector<std::string> CoordinatorArgs(const std::string& listen) const;

  LocalClusterOptions options_;
  pid_t group_ = 0;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
  std::vector<std::string> worker_addresses_;
  std::unique_ptr<ChildProcess> coordinator_;
  std::string coordinator_address_;
};

}  // namespace sparsefill::tools
