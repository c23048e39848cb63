// The metric sets record what their hooks report (read back through the registry's Collect()),
// every name follows sparsefill_<component>_<what>_<unit>, and the exposer serves the text format
// over real HTTP.
// gcc 12 with -fsanitize=address (tools/sanitize asan) reports -Wmaybe-uninitialized inside
// libstdc++'s <regex> (the std::function move in _State), a false positive that -Werror would
// turn into a failed sanitizer build.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include "services/coordinator/admission.h"
#include "services/metrics/exposer.h"
#include "services/metrics/kvstore_metrics.h"
#include "services/metrics/prefill_metrics.h"
#include "services/metrics/rpc_metrics.h"
#include "services/metrics/server_metrics.h"
#include "tests/testing/compare.h"
#include "tests/unit/metrics/http_get.h"

namespace sparsefill::metrics {
namespace {

using ::testing::HasSubstr;
using Labels = std::map<std::string, std::string>;

// The value of the series `name` whose labels include `labels`: a counter's or gauge's value, a
// histogram's sample count. -1 when absent.
double Value(prometheus::Registry& registry, const std::string& name, const Labels& labels = {}) {
  for (const prometheus::MetricFamily& f : registry.Collect()) {
    if (f.name != name) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      bool match = true;
      for (const auto& [k, v] : labels) {
        match = match && std::any_of(m.label.begin(), m.label.end(),
                                     [&](const auto& l) { return l.name == k && l.value == v; });
      }
      if (!match) continue;
      switch (f.type) {
        case prometheus::MetricType::Counter:
          return m.counter.value;
        case prometheus::MetricType::Gauge:
          return m.gauge.value;
        case prometheus::MetricType::Histogram:
          return static_cast<double>(m.histogram.sample_count);
        default:
          return -2;
      }
    }
  }
  return -1;
}

double HistogramSum(prometheus::Registry& registry, const std::string& name, const Labels& l) {
  for (const prometheus::MetricFamily& f : registry.Collect()) {
    if (f.name != name) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      if (l.empty()) return m.histogram.sample_sum;
      for (const auto& lab : m.label) {
        if (l.count(lab.name) && l.at(lab.name) == lab.value) return m.histogram.sample_sum;
      }
    }
  }
  return -1;
}

TEST(RpcMetricSetTest, CountsCallsByMethodAndCodeAndStreamBytes) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  prometheus::Registry registry;
  RpcMetricSet m(registry);
  const int ok_calls = 1 + static_cast<int>(rng() % 5);
  double seconds = 0;
  for (int i = 0; i < ok_calls; ++i) {
    const double s = 0.001 * static_cast<double>(1 + rng() % 1000);
    seconds += s;
    m.RecordCall("Prefill", absl::StatusCode::kOk, s);
  }
  m.RecordCall("Prefill", absl::StatusCode::kResourceExhausted, 0.5);
  const size_t bytes = 1 + rng() % (1 << 20);
  m.RecordStreamMessage("StreamCache", bytes);
  m.RecordStreamMessage("StreamCache", 7);

  EXPECT_EQ(
      Value(registry, "sparsefill_rpc_requests_total", {{"method", "Prefill"}, {"code", "OK"}}),
      ok_calls);
  EXPECT_EQ(Value(registry, "sparsefill_rpc_requests_total",
                  {{"method", "Prefill"}, {"code", "RESOURCE_EXHAUSTED"}}),
            1);
  EXPECT_EQ(Value(registry, "sparsefill_rpc_request_duration_seconds", {{"method", "Prefill"}}),
            ok_calls + 1);
  EXPECT_NEAR(
      HistogramSum(registry, "sparsefill_rpc_request_duration_seconds", {{"method", "Prefill"}}),
      seconds + 0.5, 1e-9);
  EXPECT_EQ(Value(registry, "sparsefill_rpc_stream_messages_total", {{"method", "StreamCache"}}),
            2);
  EXPECT_EQ(Value(registry, "sparsefill_rpc_stream_bytes_total", {{"method", "StreamCache"}}),
            static_cast<double>(bytes + 7));
}

TEST(KvStoreMetricSetTest, TracksBytesAndBlocksPerTier) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  prometheus::Registry registry;
  KvStoreMetricSet m(registry);
  kvstore::KvStoreMetrics& hooks = m;
  const int64_t blocks = 2 + static_cast<int64_t>(rng() % 100);
  const uint64_t block_bytes = 1024 * (1 + rng() % 64);
  hooks.OnBlocksStored(kvstore::Tier::kHost, blocks, blocks * block_bytes);
  hooks.OnBlocksStored(kvstore::Tier::kDisk, blocks, blocks * block_bytes);
  hooks.OnOffload(kvstore::Tier::kDisk, blocks * block_bytes);
  hooks.OnEviction(kvstore::Tier::kHost, 1);
  hooks.OnBlocksRemoved(kvstore::Tier::kHost, 1, block_bytes);
  hooks.OnRead(kvstore::Tier::kDisk, block_bytes);
  hooks.OnChecksumFailure(kvstore::Tier::kDisk);
  hooks.OnBlocksStored(static_cast<kvstore::Tier>(9), 1, 1);  // out of range: ignored, no crash

  EXPECT_EQ(Value(registry, "sparsefill_kv_blocks", {{"tier", "host"}}), blocks - 1);
  EXPECT_EQ(Value(registry, "sparsefill_kv_bytes", {{"tier", "host"}}),
            static_cast<double>((blocks - 1) * block_bytes));
  EXPECT_EQ(Value(registry, "sparsefill_kv_bytes", {{"tier", "disk"}}),
            static_cast<double>(blocks * block_bytes));
  EXPECT_EQ(Value(registry, "sparsefill_kv_bytes", {{"tier", "device"}}), 0);
  EXPECT_EQ(Value(registry, "sparsefill_kv_offload_bytes_total", {{"tier", "disk"}}),
            static_cast<double>(blocks * block_bytes));
  EXPECT_EQ(Value(registry, "sparsefill_kv_evicted_blocks_total", {{"tier", "host"}}), 1);
  EXPECT_EQ(Value(registry, "sparsefill_kv_read_bytes_total", {{"tier", "disk"}}),
            static_cast<double>(block_bytes));
  EXPECT_EQ(Value(registry, "sparsefill_kv_checksum_failures_total", {{"tier", "disk"}}), 1);
}

TEST(PrefillMetricSetTest, RecordsTokensLatencyAndKeysPerLayer) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  prometheus::Registry registry;
  PrefillMetricSet m(registry);
  const int64_t tokens = 1 + static_cast<int64_t>(rng() % 100000);
  m.RecordPrefill(absl::StatusCode::kOk, tokens, 1.5);
  m.RecordPrefill(absl::StatusCode::kUnavailable, 999, 2.0);  // failures add no tokens
  const int64_t causal = 1000 + static_cast<int64_t>(rng() % 100000);
  const int64_t selected = causal / 3;
  m.RecordLayer(0, selected, causal, 0, 0);
  m.RecordLayer(1, selected + 1, causal, 0.25, 2);
  m.RecordLayer(1, selected, causal, 0.5, 1);
  m.RecordLayer(-1, 5, 5, 0, 0);  // malformed: ignored

  EXPECT_EQ(Value(registry, "sparsefill_prefill_tokens_total"), static_cast<double>(tokens));
  EXPECT_EQ(Value(registry, "sparsefill_prefill_requests_total", {{"status", "OK"}}), 1);
  EXPECT_EQ(Value(registry, "sparsefill_prefill_requests_total", {{"status", "UNAVAILABLE"}}), 1);
  EXPECT_EQ(Value(registry, "sparsefill_prefill_duration_seconds"), 1);
  EXPECT_EQ(Value(registry, "sparsefill_attention_selected_keys_total", {{"layer", "0"}}),
            static_cast<double>(selected));
  EXPECT_EQ(Value(registry, "sparsefill_attention_selected_keys_total", {{"layer", "1"}}),
            static_cast<double>(2 * selected + 1));
  EXPECT_EQ(Value(registry, "sparsefill_attention_causal_keys_total", {{"layer", "1"}}),
            static_cast<double>(2 * causal));
  EXPECT_EQ(Value(registry, "sparsefill_attention_information_loss_ratio_sum", {{"layer", "0"}}),
            -1);  // not measured: no series
  EXPECT_DOUBLE_EQ(
      Value(registry, "sparsefill_attention_information_loss_ratio_sum", {{"layer", "1"}}), 0.75);
  EXPECT_EQ(Value(registry, "sparsefill_attention_information_loss_ratio_count", {{"layer", "1"}}),
            3);
  EXPECT_EQ(Value(registry, "sparsefill_attention_selected_keys_total", {{"layer", "-1"}}), -1);
}

// The real admission controller reports its queue and rejections through the set.
TEST(AdmissionMetricSetTest, AdmissionControllerPublishesQueueAndRejections) {
  prometheus::Registry registry;
  AdmissionMetricSet m(registry);
  coordinator::AdmissionController::Options o;
  o.max_queue = 1;
  o.max_inflight_tokens = 100;
  o.metrics = &m;
  coordinator::AdmissionController admission(o);

  auto too_big = admission.Admit(101, coordinator::kNoDeadline, nullptr);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Value(registry, "sparsefill_admission_rejections_total", {{"reason", "over_budget"}}),
            1);

  auto first = admission.Admit(80, coordinator::kNoDeadline, nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(Value(registry, "sparsefill_admission_inflight_tokens"), 80);
  EXPECT_EQ(Value(registry, "sparsefill_admission_running_requests"), 1);

  // One waits (the queue's only place), the next is refused at once.
  std::thread waiter([&] {
    auto s =
        admission.Admit(50, std::chrono::system_clock::now() + std::chrono::seconds(10), nullptr);
    EXPECT_TRUE(s.ok()) << s.status();
  });
  while (admission.queued() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(Value(registry, "sparsefill_admission_queue_depth"), 1);
  auto full = admission.Admit(50, coordinator::kNoDeadline, nullptr);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Value(registry, "sparsefill_admission_rejections_total", {{"reason", "queue_full"}}),
            1);
  first->Release();
  waiter.join();
  EXPECT_EQ(Value(registry, "sparsefill_admission_queue_depth"), 0);
  EXPECT_EQ(Value(registry, "sparsefill_admission_inflight_tokens"), 0);  // the waiter's slot ended
}

TEST(ServerMetricsTest, HealthStreamAndBuildInfo) {
  prometheus::Registry registry;
  WorkerHealthMetricSet health(registry);
  StreamMetricSet stream(registry);
  RegisterBuildInfo(registry, "worker");
  health.Set("127.0.0.1:1", true);
  health.Set("127.0.0.1:2", true);
  health.Set("127.0.0.1:2", false);
  stream.RecordChunk(1 << 20, true);
  stream.RecordChunk(100, false);
  EXPECT_EQ(Value(registry, "sparsefill_coordinator_worker_healthy", {{"worker", "127.0.0.1:1"}}),
            1);
  EXPECT_EQ(Value(registry, "sparsefill_coordinator_worker_healthy", {{"worker", "127.0.0.1:2"}}),
            0);
  EXPECT_EQ(Value(registry, "sparsefill_stream_bytes_total"), (1 << 20) + 100);
  EXPECT_EQ(Value(registry, "sparsefill_stream_chunks_total", {{"kind", "hot"}}), 1);
  EXPECT_EQ(Value(registry, "sparsefill_stream_chunks_total", {{"kind", "cold"}}), 1);
  EXPECT_FALSE(BuildVersion().empty());
  EXPECT_FALSE(BuildCommit().empty());
  EXPECT_EQ(Value(registry, "sparsefill_build_info",
                  {{"component", "worker"},
                   {"version", std::string(BuildVersion())},
                   {"commit", std::string(BuildCommit())}}),
            1);
}

// The two gauges the alerts of deploy/prometheus need: open streams (stalled streams) and each
// tier's budget (tier near its budget).
TEST(ServerMetricsTest, OpenStreamsAndTierBudgets) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  prometheus::Registry registry;
  StreamMetricSet stream(registry);
  KvStoreMetricSet kv(registry);
  EXPECT_EQ(Value(registry, "sparsefill_stream_open_streams"), 0);
  const int opened = 2 + static_cast<int>(rng() % 8);
  for (int i = 0; i < opened; ++i) stream.StreamOpened();
  stream.StreamClosed();
  EXPECT_EQ(Value(registry, "sparsefill_stream_open_streams"), opened - 1);
  const uint64_t budget = 1 + rng() % (1ull << 40);
  kv.SetBudget(kvstore::Tier::kHost, budget);
  kv.SetBudget(static_cast<kvstore::Tier>(9), 1);  // out of range: ignored, no crash
  EXPECT_EQ(Value(registry, "sparsefill_kv_budget_bytes", {{"tier", "host"}}),
            static_cast<double>(budget));
  EXPECT_EQ(Value(registry, "sparsefill_kv_budget_bytes", {{"tier", "disk"}}), 0);
}

// DESIGN §7: sparsefill_<component>_<what>_<unit>; counters end in _total (or are a ratio's
// _sum/_count pair), histograms carry their unit (seconds).
TEST(NamingTest, EveryFamilyFollowsTheConvention) {
  prometheus::Registry registry;
  RpcMetricSet rpc(registry);
  KvStoreMetricSet kv(registry);
  PrefillMetricSet prefill(registry);
  AdmissionMetricSet admission(registry);
  WorkerHealthMetricSet health(registry);
  StreamMetricSet stream(registry);
  RegisterBuildInfo(registry, "coordinator");
  // Families without labels show up only once they have a series: give every one a series.
  rpc.RecordCall("M", absl::StatusCode::kOk, 0.1);
  rpc.RecordStreamMessage("M", 1);
  prefill.RecordLayer(0, 1, 2, 0.1, 1);
  prefill.RecordPrefill(absl::StatusCode::kOk, 1, 0.1);
  admission.RecordRejection("queue_full");
  health.Set("w", true);
  const std::regex name("^sparsefill_[a-z]+(_[a-z0-9]+)+$");
  const std::vector<prometheus::MetricFamily> families = registry.Collect();
  EXPECT_GE(families.size(), 24u);
  for (const prometheus::MetricFamily& f : families) {
    SCOPED_TRACE(f.name);
    EXPECT_TRUE(std::regex_match(f.name, name));
    EXPECT_FALSE(f.help.empty());
    auto ends_with = [&](const std::string& s) {
      return f.name.size() > s.size() && f.name.compare(f.name.size() - s.size(), s.size(), s) == 0;
    };
    if (f.type == prometheus::MetricType::Counter) {
      EXPECT_TRUE(ends_with("_total") || ends_with("_ratio_sum") || ends_with("_ratio_count"));
    } else if (f.type == prometheus::MetricType::Histogram) {
      EXPECT_TRUE(ends_with("_seconds"));
    } else {
      EXPECT_FALSE(ends_with("_total"));
    }
  }
}

TEST(MetricsExposerTest, ServesTheTextFormatOverHttp) {
  auto registry = std::make_shared<prometheus::Registry>();
  PrefillMetricSet prefill(*registry);
  const int64_t tokens = 1 + static_cast<int64_t>(sparsefill::testing::FreshSeed() % 100000);
  prefill.RecordPrefill(absl::StatusCode::kOk, tokens, 0.25);
  auto exposer = MetricsExposer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  ASSERT_GT((*exposer)->port(), 0);
  EXPECT_EQ((*exposer)->address(), "127.0.0.1:" + std::to_string((*exposer)->port()));
  auto body = testing::HttpGet((*exposer)->port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(*body, HasSubstr("200 OK"));
  EXPECT_THAT(*body, HasSubstr("# TYPE sparsefill_prefill_tokens_total counter"));
  EXPECT_THAT(*body, HasSubstr("\nsparsefill_prefill_tokens_total " + std::to_string(tokens)));
  // Later records show up in the next scrape.
  prefill.RecordPrefill(absl::StatusCode::kOk, 1, 0.25);
  body = testing::HttpGet((*exposer)->port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(*body, HasSubstr("\nsparsefill_prefill_tokens_total " + std::to_string(tokens + 1)));
}

TEST(MetricsExposerTest, BadAddressesAreRefusedClearly) {
  auto registry = std::make_shared<prometheus::Registry>();
  for (const char* bad : {"", "127.0.0.1", ":80", "127.0.0.1:x", "127.0.0.1:70000", "h:-1"}) {
    SCOPED_TRACE(bad);
    auto e = MetricsExposer::Start(bad, registry);
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << e.status();
    EXPECT_THAT(std::string(e.status().message()), HasSubstr("--metrics-listen"));
  }
  EXPECT_EQ(MetricsExposer::Start("127.0.0.1:0", nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A port already taken: Unavailable, not an exception.
  auto first = MetricsExposer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = MetricsExposer::Start("127.0.0.1:" + std::to_string((*first)->port()), registry);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST(MetricsExposerTest, AnswersOtherRequestsWithTheRightStatus) {
  auto registry = std::make_shared<prometheus::Registry>();
  PrefillMetricSet prefill(*registry);
  auto exposer = MetricsExposer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();
  struct Case {
    std::string request;
    std::string status;
  };
  const std::vector<Case> cases = {
      {"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK"},
      {"GET /metrics HTTP/1.1\n\n", "HTTP/1.1 200 OK"},
      {"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"},
      {"GET /metricsx HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"},
      {"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"},
      {"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"},
      {"GET /metrics SPDY/3\r\n\r\n", "HTTP/1.1 400 Bad Request"},
      {"\r\n\r\n", "HTTP/1.1 400 Bad Request"},
      {"GET /metrics HTTP/1.1\r\nX: " + std::string(9000, 'a') + "\r\n\r\n",
       "HTTP/1.1 431 Request Header Fields Too Large"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.request.substr(0, 40));
    auto reply = testing::HttpExchange(port, c.request);
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->substr(0, c.status.size()), c.status) << reply->substr(0, 200);
  }
  auto head = testing::HttpExchange(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_THAT(*head, HasSubstr("200 OK"));
  EXPECT_THAT(*head, HasSubstr("Content-Length: "));
  EXPECT_EQ(head->substr(head->size() - 4), "\r\n\r\n") << "HEAD carries no body";
  EXPECT_EQ((*exposer)->scrapes(), 2);  // the two 200 GETs above
}

TEST(MetricsExposerTest, SilentAndExcessClientsDoNotBlockScrapes) {
  auto registry = std::make_shared<prometheus::Registry>();
  PrefillMetricSet prefill(*registry);
  ExposerLimits limits;
  limits.max_connections = 4;
  limits.connection_timeout_ms = 800;
  auto exposer = MetricsExposer::Start("127.0.0.1:0", registry, limits);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();
  // Slow-loris: connections that send half a request line and then nothing.
  std::vector<int> idle;
  for (int i = 0; i < 3; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(::send(fd, "GET /met", 8, 0), 8);
    idle.push_back(fd);
  }
  // A scrape still gets through while they hang.
  auto body = testing::HttpGet(port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(*body, HasSubstr("200 OK"));
  // The silent ones are dropped at their deadline: reading them gives EOF, not a hang.
  for (const int fd : idle) {
    timeval tv{.tv_sec = 5, .tv_usec = 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    EXPECT_EQ(::recv(fd, &c, 1, 0), 0) << "the exposer should have closed an idle connection";
    ::close(fd);
  }
  body = testing::HttpGet(port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(*body, HasSubstr("200 OK"));
}

TEST(MetricsExposerTest, StopsCleanlyWithClientsConnected) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto exposer = MetricsExposer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>((*exposer)->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // accepted by now
  exposer->reset();                                            // joins; closes the client
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char c;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
  ::close(fd);
  EXPECT_EQ(MetricsExposer::Start("127.0.0.1:0", registry, ExposerLimits{.max_connections = 0})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparsefill::metrics
