// Serves one server's registry as the Prometheus text format on GET /metrics, on its own HTTP
// port (apart from gRPC, so scraping needs no TLS client certificate or bearer token).
//
// The HTTP side is our own small poll() loop rather than prometheus-cpp's civetweb exposer:
// Debian's civetweb runs its threads on fixed 100 KiB stacks, and glibc carves the static TLS of
// every library loaded at start-up out of each thread's stack. OpenBLAS (60 KiB of TLS) plus the
// CUDA runtime left civetweb too little stack to answer (every scrape got an empty reply), and
// cuBLASLt (94 KiB) stopped it from starting, which kept the CUDA backend out of the servers.
// One thread with the default stack serves every connection, non-blocking, each with a deadline,
// so a slow or silent client cannot hold the endpoint.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace sparsefill::metrics {

struct ExposerLimits {
  int max_connections = 64;          // more at once are closed on accept
  size_t max_request_bytes = 8192;   // request line + headers; more gets 431
  int connection_timeout_ms = 5000;  // the whole exchange; a slower client is dropped
};

class MetricsExposer {
 public:
  // `address` is "host:port" (host: an IPv4/IPv6 literal, "[v6]", or a name; "0.0.0.0" for all
  // interfaces); port 0 picks a free one. InvalidArgument for a malformed address, Unavailable
  // when it cannot be bound. The exposer keeps `registry` alive.
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Start(
      std::string_view address, std::shared_ptr<prometheus::Registry> registry,
      ExposerLimits limits = {});
  ~MetricsExposer();
  MetricsExposer(const MetricsExposer&) = delete;
  MetricsExposer& operator=(const MetricsExposer&) = delete;

  int port() const { return port_; }
  // "host:port" with the bound port: what mains print as "metrics on ADDR".
  const std::string& address() const { return address_; }
  // Scrapes answered with 200 since start (tests, and the endpoint's own health).
  int64_t scrapes() const { return scrapes_.load(std::memory_order_relaxed); }

 private:
  MetricsExposer() = default;
  void Loop();
  std::string Render(std::string_view request, bool* is_scrape) const;

  std::shared_ptr<prometheus::Registry> registry_;
  ExposerLimits limits_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: the destructor's stop signal
  int port_ = 0;
  std::string address_;
  std::atomic<int64_t> scrapes_{0};
  std::thread thread_;
};

}  // namespace sparsefill::metrics
