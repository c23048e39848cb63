#include "services/metrics/rpc_metrics.h"

#include <string>

#include "services/metrics/buckets.h"

namespace sparsefill::metrics {

RpcMetricSet::RpcMetricSet(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("sparsefill_rpc_requests_total")
                    .Help("Finished gRPC calls by method and status code")
                    .Register(registry)),
      duration_(prometheus::BuildHistogram()
                    .Name("sparsefill_rpc_request_duration_seconds")
                    .Help("Latency of gRPC calls, from admission to the final status")
                    .Register(registry)),
      stream_messages_(prometheus::BuildCounter()
                           .Name("sparsefill_rpc_stream_messages_total")
                           .Help("Messages written on server streams")
                           .Register(registry)),
      stream_bytes_(prometheus::BuildCounter()
                        .Name("sparsefill_rpc_stream_bytes_total")
                        .Help("Serialized bytes written on server streams")
                        .Register(registry)) {}

void RpcMetricSet::RecordCall(std::string_view method, absl::StatusCode code, double seconds) {
  const std::string m(method);
  requests_.Add({{"method", m}, {"code", absl::StatusCodeToString(code)}}).Increment();
  duration_.Add({{"method", m}}, LatencyBuckets()).Observe(seconds);
}

void RpcMetricSet::RecordStreamMessage(std::string_view method, size_t bytes) {
  const std::string m(method);
  stream_messages_.Add({{"method", m}}).Increment();
  stream_bytes_.Add({{"method", m}}).Increment(static_cast<double>(bytes));
}

}  // namespace sparsefill::metrics
