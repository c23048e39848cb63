// Starting a sparsefill gRPC server: credentials, message sizes, grpc.health.v1 and reflection
// (DESIGN §7), bound port reported back so tests and embedded mode can listen on port 0.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/codegen/service_type.h>
#include <grpcpp/server.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/common/auth_tls.h"

namespace sparsefill::rpc {

struct ServerOptions {
  // host:port to listen on; port 0 picks a free one. Default "127.0.0.1:0".
  std::string address = "127.0.0.1:0";
  // Default: insecure (loopback tests).
  auth::ServerSecurityOptions security;
  // Largest message in either direction. KV chunks are >= 1 MiB (DESIGN §7). Default 64 MiB.
  int max_message_bytes = 64 << 20;
  // grpc.health.v1.Health, for Kubernetes probes. Default on.
  bool health = true;
  // grpc.reflection.v1alpha.ServerReflection, for grpcurl. Default on.
  bool reflection = true;
  // Threads serving synchronous calls: 0 keeps gRPC's default. Default 0.
  int max_threads = 0;

  absl::Status Validate() const;
};

class RunningServer {
 public:
  RunningServer(std::unique_ptr<grpc::Server> server, int port)
      : server_(std::move(server)), port_(port) {}
  ~RunningServer() { Shutdown(std::chrono::milliseconds(0)); }
  RunningServer(const RunningServer&) = delete;
  RunningServer& operator=(const RunningServer&) = delete;

  int port() const { return port_; }
  grpc::Server* server() const { return server_.get(); }
  // Marks every service (and the server as a whole) SERVING or NOT_SERVING on the health
  // service; no-op when health is off.
  void SetServing(bool serving);
  // Stops accepting calls, waits up to `grace` for running ones, then cancels them.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

// Builds and starts a server for `services` (not owned; they must outlive the server).
// UNAVAILABLE names the address when it cannot be bound.
absl::StatusOr<std::unique_ptr<RunningServer>> StartServer(
    const ServerOptions& options, const std::vector<grpc::Service*>& services);

}  // namespace sparsefill::rpc
