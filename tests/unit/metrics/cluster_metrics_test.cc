// The coordinator's /metrics after one prefill through a real worker and coordinator: the prompt's
// tokens and the attention keys the workers reported.
#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/harness.h"
#include "tests/unit/metrics/http_get.h"

namespace sparsefill::integration {
namespace {

// Sum of the values of every series of `name` in a text-format body; -1 when there is none.
double Sum(const std::string& body, const std::string& name) {
  std::istringstream in(body);
  std::string line;
  double sum = 0;
  bool found = false;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
    found = true;
  }
  return found ? sum : -1;
}

TEST(ClusterMetricsTest, CoordinatorCountsPromptTokensAndAttentionKeys) {
  const int port = metrics::testing::FreePort();
  ASSERT_GT(port, 0);
  auto cluster = StartCluster(Spec(2, 2, {"--metrics-listen", "127.0.0.1:" + std::to_string(port)},
                                   {"--metrics-listen", "127.0.0.1:0"}));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto prompt = NovelTokens(300);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  auto client = Connect((**cluster)->coordinator_address());
  ASSERT_TRUE(client.ok()) << client.status();

  auto before = metrics::testing::HttpGet(port, "/metrics");
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_THAT(*before, ::testing::HasSubstr("sparsefill_build_info{"));
  EXPECT_EQ(Sum(*before, "sparsefill_coordinator_worker_healthy"), 2);

  client::PrefillRequest r;
  r.model = "tiny";
  r.tokens = *prompt;
  auto made = (*client)->Prefill(r);
  ASSERT_TRUE(made.ok()) << made.status();

  auto body = metrics::testing::HttpGet(port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(Sum(*body, "sparsefill_prefill_tokens_total"), static_cast<double>(prompt->size()));
  const double selected = Sum(*body, "sparsefill_attention_selected_keys_total");
  const double causal = Sum(*body, "sparsefill_attention_causal_keys_total");
  EXPECT_GT(selected, 0);
  EXPECT_GE(causal, selected);
  EXPECT_EQ(Sum(*body, "sparsefill_prefill_duration_seconds_count"), 1);
  EXPECT_THAT(*body, ::testing::HasSubstr(
                         "sparsefill_rpc_requests_total{code=\"OK\",method=\"Prefill\"} 1"));

  // A direct stream (the client's default) goes from the workers to the client: the
  // coordinator relays nothing, so its stream counters stay at 0 (the workers count it).
  auto direct = StreamWholeCache(**client, made->cache.id);
  ASSERT_TRUE(direct.ok()) << direct.status();
  body = metrics::testing::HttpGet(port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(Sum(*body, "sparsefill_stream_chunks_total"), 0);

  // Streaming the cache through the coordinator's relay counts its block bytes there.
  client::ConnectionOptions relay_options;
  relay_options.address = (**cluster)->coordinator_address();
  relay_options.default_timeout = std::chrono::seconds(60);
  relay_options.direct_streams = false;
  auto relay_client = client::CoordinatorClient::Connect(relay_options);
  ASSERT_TRUE(relay_client.ok()) << relay_client.status();
  auto streamed = StreamWholeCache(**relay_client, made->cache.id);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->checksums, direct->checksums);
  body = metrics::testing::HttpGet(port, "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(Sum(*body, "sparsefill_stream_chunks_total"), static_cast<double>(streamed->chunks));
  EXPECT_GE(Sum(*body, "sparsefill_stream_bytes_total"),
            static_cast<double>(streamed->blocks));  // at least a byte per block
}

}  // namespace
}  // namespace sparsefill::integration
