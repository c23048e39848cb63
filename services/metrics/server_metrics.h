// The smaller per-server metric sets: admission (queue depth, rejections), worker health as the
// coordinator sees it, KV stream volume, and the build-info gauge.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

namespace sparsefill::metrics {

// sparsefill_admission_queue_depth, sparsefill_admission_inflight_tokens,
// sparsefill_admission_running_requests, sparsefill_admission_rejections_total{reason}.
class AdmissionMetricSet {
 public:
  explicit AdmissionMetricSet(prometheus::Registry& registry);
  void SetState(int64_t queued, int64_t running, int64_t inflight_tokens);
  // reason: "over_budget", "queue_full", "deadline", "cancelled".
  void RecordRejection(std::string_view reason);

 private:
  prometheus::Gauge& queue_depth_;
  prometheus::Gauge& inflight_tokens_;
  prometheus::Gauge& running_;
  prometheus::Family<prometheus::Counter>& rejections_;
};

// sparsefill_coordinator_worker_healthy{worker}: 1 while the worker is in plans, else 0.
class WorkerHealthMetricSet {
 public:
  explicit WorkerHealthMetricSet(prometheus::Registry& registry);
  void Set(std::string_view worker_address, bool healthy);

 private:
  prometheus::Family<prometheus::Gauge>& healthy_;
};

// sparsefill_stream_bytes_total and sparsefill_stream_chunks_total{kind="hot"|"cold"}: KV block
// bytes the coordinator passed on to decode nodes (StreamCache and FetchBlocks), and on a worker
// what it streamed to decode nodes directly (StreamShard, on a coordinator-issued ticket);
// sparsefill_stream_open_streams: StreamCache calls in progress (on a worker: StreamShard calls),
// so that a stream that is open but moves no bytes can be told apart from no stream at all (the
// stalled-stream alert).
class StreamMetricSet {
 public:
  explicit StreamMetricSet(prometheus::Registry& registry);
  void RecordChunk(uint64_t bytes, bool hot);
  void StreamOpened();
  void StreamClosed();

 private:
  prometheus::Gauge& open_streams_;
  prometheus::Counter& bytes_;
  prometheus::Family<prometheus::Counter>& chunks_;
  prometheus::Counter& hot_chunks_;
  prometheus::Counter& cold_chunks_;
};

// sparsefill_build_info{component,version,commit} = 1. Version and commit are this build's.
void RegisterBuildInfo(prometheus::Registry& registry, std::string_view component);
std::string_view BuildVersion();
std::string_view BuildCommit();

}  // namespace sparsefill::metrics
