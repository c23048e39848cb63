// The serving path under time and failure, with the real binaries as separate processes:
// streaming while later layers compute, a coordinator killed and restarted on its registry, and a
// worker killed in the middle of a request.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"
#include "tools/decode-sink/await_layout.h"
#include "tools/decode-sink/cache_assembler.h"

namespace sparsefill::integration {
namespace {

using Clock = std::chrono::steady_clock;
using ::testing::HasSubstr;

client::PrefillRequest SparseRequest(std::vector<int32_t> tokens, bool measure) {
  client::PrefillRequest r;
  r.model = "tiny";
  r.tokens = std::move(tokens);
  r.selection.policy = engine::Policy::kPhsa;
  r.selection.dense_below = 1024;
  r.measure = measure;
  return r;
}

// A decode node that opens StreamCache right after Admitted receives layer 0 before the
// Prefill's final message (the later layers, and the measurement, are still running).
TEST(StreamingTest, LayerZeroArrivesBeforePrefillEnds) {
  auto cluster = StartCluster(Spec(2, 4));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  TestCluster& c = **cluster;
  // Under ASan this measured prefill takes about a minute, the default deadline.
  const std::chrono::seconds deadline(60 * kSanitizerSlowdown);
  auto prefiller = Connect(c->coordinator_address(), "", deadline);
  auto streamer = Connect(c->coordinator_address(), "", deadline);
  ASSERT_TRUE(prefiller.ok() && streamer.ok());
  auto tokens = NovelTokens(4096);
  ASSERT_TRUE(tokens.ok()) << tokens.status();

  std::promise<kvstore::CacheId> admitted;
  std::optional<Clock::time_point> layer0_chunk;
  std::optional<Clock::time_point> last_layer_done;
  std::mutex mu;
  absl::StatusOr<StreamedCache> streamed = absl::UnknownError("not run");
  std::thread stream_thread([&] {
    const kvstore::CacheId id = admitted.get_future().get();
    if (id == kvstore::CacheId{}) return;
    auto info = tools::AwaitCacheLayout(**streamer, id, deadline);
    if (!info.ok()) {
      streamed = info.status();
      return;
    }
    auto assembler = tools::CacheAssembler::Create(id, info->layout);
    if (!assembler.ok()) {
      streamed = assembler.status();
      return;
    }
    auto stats = (*streamer)->StreamCache(id, false, [&](const client::KvChunk& chunk) {
      if (chunk.layer == 0) {
        std::lock_guard<std::mutex> lock(mu);
        if (!layer0_chunk) layer0_chunk = Clock::now();
      }
      return assembler->Add(chunk);
    });
    if (!stats.ok()) {
      streamed = stats.status();
      return;
    }
    StreamedCache s;
    s.info = *info;
    s.blocks = assembler->stats().blocks;
    s.verified = assembler->stats().checksums_verified;
    absl::Status complete = assembler->CheckComplete();
    streamed = complete.ok() ? absl::StatusOr<StreamedCache>(s) : complete;
  });

  bool sent = false;
  auto result = (*prefiller)
                    ->Prefill(SparseRequest(*tokens, /*measure=*/true),
                              [&](const client::PrefillProgress& p) {
                                if (p.kind == client::PrefillProgress::Kind::kAdmitted) {
                                  admitted.set_value(p.cache);
                                  sent = true;
                                } else if (p.layer + 1 == p.layers_total) {
                                  last_layer_done = Clock::now();
                                }
                              });
  const Clock::time_point prefill_end = Clock::now();
  if (!sent) admitted.set_value(kvstore::CacheId{});
  stream_thread.join();
  ASSERT_TRUE(result.ok()) << result.status() << "\n" << c->LogTail("coordinator");
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->blocks, result->cache.layout.total_blocks());
  EXPECT_EQ(streamed->verified, streamed->blocks);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_TRUE(layer0_chunk.has_value());
  EXPECT_LT(*layer0_chunk, prefill_end)
      << "layer 0 reached the decode node only "
      << std::chrono::duration<double>(*layer0_chunk - prefill_end).count()
      << " s after the prefill's final message";
  std::printf("layer 0 reached the decode node %.3f s before the prefill's final message\n",
              std::chrono::duration<double>(prefill_end - *layer0_chunk).count());
  ASSERT_TRUE(last_layer_done.has_value());
  EXPECT_LT(*layer0_chunk, *last_layer_done) << "layer 0 came only after the last layer was done";
}

// kill -9 of the coordinator keeps READY caches: a coordinator restarted on the same registry
// answers GetCache and streams the same blocks, every checksum verified.
TEST(RestartTest, CoordinatorKilledAndRestartedKeepsReadyCaches) {
  auto cluster = StartCluster(Spec(2, 2));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  TestCluster& c = **cluster;
  auto tokens = NovelTokens(1500);
  ASSERT_TRUE(tokens.ok());
  kvstore::CacheId id;
  StreamedCache before;
  {
    auto client = Connect(c->coordinator_address());
    ASSERT_TRUE(client.ok());
    auto result = (*client)->Prefill(SparseRequest(*tokens, false));
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->cache.state, client::CacheState::kReady);
    id = result->cache.id;
    auto s = StreamWholeCache(**client, id);
    ASSERT_TRUE(s.ok()) << s.status();
    before = *std::move(s);
  }
  c->coordinator().Signal(SIGKILL);
  auto code = c->coordinator().Wait(std::chrono::seconds(10));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 128 + SIGKILL);
  ASSERT_TRUE(c->RestartCoordinator().ok()) << c->LogTail("coordinator");

  auto client = Connect(c->coordinator_address());
  ASSERT_TRUE(client.ok());
  auto info = (*client)->GetCache(id);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, client::CacheState::kReady);
  EXPECT_EQ(info->layout.num_tokens, static_cast<int64_t>(tokens->size()));
  auto after = StreamWholeCache(**client, id);
  ASSERT_TRUE(after.ok()) << after.status() << "\n" << c->LogTail("coordinator");
  EXPECT_EQ(after->blocks, before.blocks);
  EXPECT_EQ(after->verified, after->blocks);
  EXPECT_EQ(after->checksums, before.checksums) << "the restarted coordinator served other bytes";
  EXPECT_EQ(after->hot_blocks, before.hot_blocks);
}

// A worker killed mid-request fails the request within its deadline with a status naming the
// worker, and the admission budget it held comes back: with the budget set to exactly one
// request and no queue, a leaked slot would refuse the next request with RESOURCE_EXHAUSTED.
TEST(WorkerFailureTest, KilledWorkerFailsRequestAndFreesItsSlot) {
  constexpr size_t kTokens = 4096;
  auto cluster =
      StartCluster(Spec(2, 4,
                        {"--max-queue", "0", "--max-inflight-tokens", std::to_string(kTokens),
                         "--health-interval-ms", "200", "--health-timeout-ms", "1000"},
                        {"--deadline-ms", "20000"}));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  TestCluster& c = **cluster;
  auto tokens = NovelTokens(kTokens);
  ASSERT_TRUE(tokens.ok());
  auto client = Connect(c->coordinator_address());
  ASSERT_TRUE(client.ok());
  const std::string victim = c->worker_addresses()[1];

  constexpr auto kDeadline = std::chrono::seconds(60);
  bool killed = false;
  const Clock::time_point start = Clock::now();
  auto failed =
      (*client)->Prefill(SparseRequest(*tokens, false),
                         [&](const client::PrefillProgress& p) {
                           // After the first layer: the request is certainly running on both
                           // workers.
                           if (p.kind == client::PrefillProgress::Kind::kLayerDone && !killed) {
                             c->worker(1).Signal(SIGKILL);
                             killed = true;
                           }
                         },
                         {.timeout = kDeadline});
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_TRUE(killed) << "the prefill ended before any layer was done: " << failed.status();
  ASSERT_FALSE(failed.ok()) << "the prefill survived the loss of a worker";
  EXPECT_LT(seconds, 60.0);
  EXPECT_NE(failed.status().code(), absl::StatusCode::kDeadlineExceeded) << failed.status();
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr(victim)) << failed.status();
  std::printf("the request failed after %.2f s: %s\n", seconds, failed.status().ToString().c_str());

  // The next request: with the remaining worker, or (if the coordinator still plans the dead
  // one) after restarting it. Never RESOURCE_EXHAUSTED: the failed request's tokens are back.
  auto next = (*client)->Prefill(SparseRequest(*tokens, false), {}, {.timeout = kDeadline});
  if (next.ok()) {
    std::printf("the next request succeeded on %d worker(s)\n", next->stats.workers);
  } else {
    std::printf("the next request failed (%s); restarting the worker\n",
                next.status().ToString().c_str());
    EXPECT_NE(next.status().code(), absl::StatusCode::kResourceExhausted) << next.status();
    ASSERT_TRUE(c->RestartWorker(1).ok()) << c->LogTail("worker1");
    std::this_thread::sleep_for(std::chrono::milliseconds(600));  // a health refresh
    next = (*client)->Prefill(SparseRequest(*tokens, false), {}, {.timeout = kDeadline});
  }
  ASSERT_TRUE(next.ok()) << next.status() << "\n" << c->LogTail("coordinator");
  EXPECT_EQ(next->cache.state, client::CacheState::kReady);
  auto streamed = StreamWholeCache(**client, next->cache.id);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->verified, next->cache.layout.total_blocks());
}

}  // namespace
}  // namespace sparsefill::integration
