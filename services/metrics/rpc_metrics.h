// rpc::RpcMetrics as Prometheus series: calls by method and status code, call latency, and the
// messages and bytes written on server streams.
#pragma once

#include <cstddef>
#include <string_view>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "services/rpc/call_handler.h"

namespace sparsefill::metrics {

// sparsefill_rpc_requests_total{method,code}, sparsefill_rpc_request_duration_seconds{method},
// sparsefill_rpc_stream_messages_total{method}, sparsefill_rpc_stream_bytes_total{method}.
class RpcMetricSet final : public rpc::RpcMetrics {
 public:
  // Registers the families in `registry`, which must outlive this set.
  explicit RpcMetricSet(prometheus::Registry& registry);

  void RecordCall(std::string_view method, absl::StatusCode code, double seconds) override;
  void RecordStreamMessage(std::string_view method, size_t bytes) override;

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Counter>& stream_messages_;
  prometheus::Family<prometheus::Counter>& stream_bytes_;
};

}  // namespace sparsefill::metrics
