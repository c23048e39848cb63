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

  // Connection hygiene: a peer that stalls or vanishes must not hold a connection (and the
  // calls, threads and buffers on it) forever. Durations in milliseconds; 0 turns one off.
  //
  // The server pings a connection after this long without traffic and closes it when no answer
  // comes within keepalive_timeout_ms: ends connections of crashed or unplugged peers, which
  // TCP alone notices only after hours. Default 60 s / 20 s.
  int64_t keepalive_time_ms = 60'000;
  int64_t keepalive_timeout_ms = 20'000;
  // A connection without any call for this long is closed (GOAWAY; clients reconnect on their
  // next call). Default 10 minutes.
  int64_t max_connection_idle_ms = 600'000;
  // A connection older than this is told to go away (GOAWAY: no new calls on it; clients open
  // a new one transparently); its running calls get max_connection_age_grace_ms more, then are
  // cancelled. The only limit that ends a call whose client keeps its connection alive but
  // never reads and set no deadline. Default 2 hours + 1 hour grace: a call of up to an hour
  // (long prefills and streams run for many minutes) is never cut, a stalled one is held at
  // most 3 hours.
  int64_t max_connection_age_ms = 7'200'000;
  int64_t max_connection_age_grace_ms = 3'600'000;
  // A new connection must finish its TLS handshake and send the HTTP/2 preface and SETTINGS
  // within this long, else it is closed (a client that stalls mid-preface). gRPC's own default
  // is 120 s. Default 20 s.
  int64_t handshake_timeout_ms = 20'000;

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
