// The soak with faults in short (issue 9 item 4), as CI runs it: ~60 s of clients prefilling and
// streaming while workers and the coordinator are SIGKILLed and restarted every 8-15 s and the
// workers fail 5% of their RocksDB block writes. Plus the fault flag on its own: a worker that
// fails every write must fail the request cleanly, never leave a READY cache behind.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"
#include "tests/testing/compare.h"
#include "tools/bench/load/soak_run.h"

namespace sparsefill::integration {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// --inject-write-errors 1: every block batch fails, so every prefill must fail with the injected
// cause in its status, its cache must not be READY, and the admission slot must come back (the
// budget allows one request at a time).
TEST(SoakFaultFlagTest, EveryWriteFailingFailsRequestsCleanly) {
  auto cluster = StartCluster(Spec(2, 2, {"--max-queue", "0", "--max-inflight-tokens", "1024"},
                                   {"--inject-write-errors", "1:7"}));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  TestCluster& c = **cluster;
  auto client = Connect(c->coordinator_address());
  ASSERT_TRUE(client.ok());
  auto tokens = NovelTokens(600);
  ASSERT_TRUE(tokens.ok());
  client::PrefillRequest req;
  req.model = "tiny";
  req.tokens = *tokens;
  for (int i = 0; i < 3; ++i) {
    std::optional<kvstore::CacheId> id;
    auto r = (*client)->Prefill(req,
                                [&](const client::PrefillProgress& p) {
                                  if (p.kind == client::PrefillProgress::Kind::kAdmitted)
                                    id = p.cache;
                                },
                                {.timeout = std::chrono::seconds(60)});
    ASSERT_FALSE(r.ok()) << "a prefill succeeded although every write fails";
    EXPECT_NE(r.status().code(), absl::StatusCode::kResourceExhausted)
        << "an admission slot leaked: " << r.status();
    EXPECT_NE(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("injected RocksDB write error"))
        << r.status();
    if (id.has_value()) {
      auto info = (*client)->GetCache(*id);
      if (info.ok()) {
        EXPECT_NE(info->state, client::CacheState::kReady);
      }
    }
  }
}

TEST(SoakFaultFlagTest, BadRateIsRefused) {
  auto model = TinyModel(2);
  ASSERT_TRUE(model.ok());
  auto dir = tools::TempDir::Create("sparsefill-soak-flag");
  ASSERT_TRUE(dir.ok());
  for (const char* bad : {"2", "-0.1", "x", "0.5:seed"}) {
    tools::ChildOptions o;
    o.program = Bin() + "/sparsefill-worker";
    o.args = {"--model", "tiny=" + *model, "--store", (*dir)->path(), "--inject-write-errors", bad};
    o.stderr_path = (*dir)->path() + "/stderr.log";
    auto child = tools::ChildProcess::Spawn(o);
    ASSERT_TRUE(child.ok());
    auto code = (*child)->Wait(std::chrono::seconds(30));
    ASSERT_TRUE(code.ok());
    EXPECT_EQ(*code, 2) << bad;
    EXPECT_THAT((*child)->StderrTail(), HasSubstr("--inject-write-errors")) << bad;
  }
}

TEST(SoakTest, ShortSoakWithKillsAndWriteErrors) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  auto dir = tools::TempDir::Create("sparsefill-soak");
  ASSERT_TRUE(dir.ok()) << dir.status();
  bench::SoakOptions o;
  o.cluster.bin_dir = Bin();
  auto model = TinyModel(2);
  ASSERT_TRUE(model.ok()) << model.status();
  o.cluster.model_dir = *model;
  o.cluster.work_dir = (*dir)->path();
  o.cluster.workers = 2;
  o.cluster.threads_per_worker = 1;
  o.novel_tokens = "tests/fixtures/tokenizer/pride_and_prejudice.qwen3.u32";
  if (const std::string shared = testing::SharedDataDir(); !shared.empty()) {
    std::error_code ec;
    if (fs::exists(shared + "/pride_and_prejudice.txt", ec)) {
      o.novel_text = shared + "/pride_and_prejudice.txt";
    }
  }
  o.seconds = 60;
  o.clients = 3;
  o.min_tokens = 64;
  o.max_tokens = 1024;
  o.chaos_min_s = 8;
  o.chaos_max_s = 15;
  o.write_error_rate = 0.05;
  o.deadline = std::chrono::seconds(20);
  o.grace = std::chrono::seconds(5);
  o.recovery_timeout = std::chrono::seconds(60);
  o.seed = seed;
  o.log = [](const std::string& s) { std::printf("soak: %s\n", s.c_str()); };
  auto r = bench::RunSoakTest(o);
  ASSERT_TRUE(r.ok()) << r.status();
  std::printf("%s\n", r->json.dump(2).c_str());
  for (const std::string& v : r->violations) ADD_FAILURE() << v;
  EXPECT_GE(r->restarts, 2);
  EXPECT_EQ(r->recoveries, r->restarts);
  EXPECT_GT(r->verified, 0);
  EXPECT_GT(r->failed_on_injected_writes, 0) << "no prefill failed on an injected write error";
}

}  // namespace
}  // namespace sparsefill::integration
