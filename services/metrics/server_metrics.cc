#include "services/metrics/server_metrics.h"

#ifndef SPARSEFILL_VERSION
#define SPARSEFILL_VERSION "unknown"
#endif
#ifndef SPARSEFILL_GIT_COMMIT
#define SPARSEFILL_GIT_COMMIT "unknown"
#endif

namespace sparsefill::metrics {

AdmissionMetricSet::AdmissionMetricSet(prometheus::Registry& registry)
    : queue_depth_(prometheus::BuildGauge()
                       .Name("sparsefill_admission_queue_depth")
                       .Help("Prefill requests waiting for token budget")
                       .Register(registry)
                       .Add({})),
      inflight_tokens_(prometheus::BuildGauge()
                           .Name("sparsefill_admission_inflight_tokens")
                           .Help("Prompt tokens of the running prefills")
                           .Register(registry)
                           .Add({})),
      running_(prometheus::BuildGauge()
                   .Name("sparsefill_admission_running_requests")
                   .Help("Prefills holding token budget")
                   .Register(registry)
                   .Add({})),
      rejections_(prometheus::BuildCounter()
                      .Name("sparsefill_admission_rejections_total")
                      .Help("Prefills refused or given up by admission, by reason")
                      .Register(registry)) {}

void AdmissionMetricSet::SetState(int64_t queued, int64_t running, int64_t inflight_tokens) {
  queue_depth_.Set(static_cast<double>(queued));
  running_.Set(static_cast<double>(running));
  inflight_tokens_.Set(static_cast<double>(inflight_tokens));
}

void AdmissionMetricSet::RecordRejection(std::string_view reason) {
  rejections_.Add({{"reason", std::string(reason)}}).Increment();
}

WorkerHealthMetricSet::WorkerHealthMetricSet(prometheus::Registry& registry)
    : healthy_(prometheus::BuildGauge()
                   .Name("sparsefill_coordinator_worker_healthy")
                   .Help("1 while the worker answers health probes and is used in plans")
                   .Register(registry)) {}

void WorkerHealthMetricSet::Set(std::string_view worker_address, bool healthy) {
  healthy_.Add({{"worker", std::string(worker_address)}}).Set(healthy ? 1 : 0);
}

StreamMetricSet::StreamMetricSet(prometheus::Registry& registry)
    : open_streams_(prometheus::BuildGauge()
                        .Name("sparsefill_stream_open_streams")
                        .Help("KV streams in progress (coordinator: StreamCache calls; worker: direct StreamShard calls)")
                        .Register(registry)
                        .Add({})),
      bytes_(prometheus::BuildCounter()
                 .Name("sparsefill_stream_bytes_total")
                 .Help("KV block bytes streamed to decode nodes")
                 .Register(registry)
                 .Add({})),
      chunks_(prometheus::BuildCounter()
                  .Name("sparsefill_stream_chunks_total")
                  .Help("KV chunks streamed to decode nodes, of hot or cold blocks")
                  .Register(registry)),
      hot_chunks_(chunks_.Add({{"kind", "hot"}})),
      cold_chunks_(chunks_.Add({{"kind", "cold"}})) {}

void StreamMetricSet::RecordChunk(uint64_t bytes, bool hot) {
  bytes_.Increment(static_cast<double>(bytes));
  (hot ? hot_chunks_ : cold_chunks_).Increment();
}

void StreamMetricSet::StreamOpened() { open_streams_.Increment(); }
void StreamMetricSet::StreamClosed() { open_streams_.Decrement(); }

std::string_view BuildVersion() { return SPARSEFILL_VERSION; }
std::string_view BuildCommit() { return SPARSEFILL_GIT_COMMIT; }

void RegisterBuildInfo(prometheus::Registry& registry, std::string_view component) {
  prometheus::BuildGauge()
      .Name("sparsefill_build_info")
      .Help("Always 1; the labels say which build runs")
      .Register(registry)
      .Add({{"component", std::string(component)},
            {"version", std::string(BuildVersion())},
            {"commit", std::string(BuildCommit())}})
      .Set(1);
}

}  // namespace sparsefill::metrics
