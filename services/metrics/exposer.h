// Serves one server's registry as the Prometheus text format on GET /metrics, on its own HTTP
// port (apart from gRPC, so scraping needs no TLS client certificate or bearer token).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace sparsefill::metrics {

class MetricsExposer {
 public:
  // `address` is "host:port"; port 0 picks a free one. InvalidArgument for a malformed address,
  // Unavailable when it cannot be bound. The exposer keeps `registry` alive.
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Start(
      std::string_view address, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsExposer();
  MetricsExposer(const MetricsExposer&) = delete;
  MetricsExposer& operator=(const MetricsExposer&) = delete;

  int port() const { return port_; }
  // "host:port" with the bound port: what mains print as "metrics on ADDR".
  const std::string& address() const { return address_; }

 private:
  MetricsExposer() = default;

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::string address_;
};

}  // namespace sparsefill::metrics
