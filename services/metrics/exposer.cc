#include "services/metrics/exposer.h"

#include <exception>
#include <vector>

#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::metrics {

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::Start(
    std::string_view address, std::shared_ptr<prometheus::Registry> registry) {
  if (registry == nullptr) return absl::InvalidArgumentError("metrics registry: null");
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(AsAbsl(address.substr(colon + 1)), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-listen: \"", AsAbsl(address),
                                                   "\" is not HOST:PORT with a port in 0..65535"));
  }
  std::unique_ptr<MetricsExposer> e(new MetricsExposer());
  e->registry_ = std::move(registry);
  // civetweb reports bind failures by throwing; nothing may escape (STYLE: no exceptions across
  // library boundaries).
  try {
    e->exposer_ = std::make_unique<prometheus::Exposer>(std::string(address), /*num_threads=*/2);
    e->exposer_->RegisterCollectable(e->registry_);
    const std::vector<int> ports = e->exposer_->GetListeningPorts();
    if (ports.empty()) {
      return absl::UnavailableError(
          absl::StrCat("--metrics-listen ", AsAbsl(address), ": no port bound"));
    }
    e->port_ = ports.front();
  } catch (const std::exception& ex) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen ", AsAbsl(address), ": cannot serve: ", ex.what()));
  } catch (...) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen ", AsAbsl(address), ": cannot serve"));
  }
  e->address_ = absl::StrCat(AsAbsl(address.substr(0, colon)), ":", e->port_);
  return e;
}

MetricsExposer::~MetricsExposer() = default;

}  // namespace sparsefill::metrics
