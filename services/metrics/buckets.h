// Histogram buckets shared by the metric sets, so dashboards can compare latencies.
#pragma once

#include <prometheus/histogram.h>

namespace sparsefill::metrics {

// 1 ms .. ~17 min, doubling: covers a health probe and a 1M-token prefill alike.
inline prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (double s = 0.001; s < 1100; s *= 2) b.push_back(s);
  return b;
}

}  // namespace sparsefill::metrics
