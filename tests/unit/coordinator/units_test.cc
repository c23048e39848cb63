// The coordinator's parts on their own: record store, shard plans, admission, registry records.
#include <chrono>
#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/coordinator/admission.h"
#include "services/coordinator/registry.h"
#include "services/coordinator/selection_resolver.h"
#include "services/coordinator/shard_plan.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kvstore/record_store.h"
#include "tests/testing/compare.h"

namespace sparsefill::coordinator {
namespace {

using ::testing::HasSubstr;

std::string TempDir(const std::string& name) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           (name + "-" + std::to_string(sparsefill::testing::FreshSeed())))
                              .string();
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(RecordStore, PutGetScanDeleteAndReopen) {
  const std::string dir = TempDir("sf-records");
  {
    auto store = kvstore::RecordStore::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Put("cache/b", "2", true).ok());
    ASSERT_TRUE((*store)->Put("cache/a", "1", false).ok());
    ASSERT_TRUE((*store)->Put("other/x", "3", true).ok());
    ASSERT_TRUE((*store)->Put(std::string("cache/\0bin", 10), "4", true).ok());
    EXPECT_EQ(*(*store)->Get("cache/a"), "1");
    auto scan = (*store)->Scan("cache/");
    ASSERT_TRUE(scan.ok());
    ASSERT_EQ(scan->size(), 3u);
    EXPECT_EQ((*scan)[0].key, std::string("cache/\0bin", 10));  // key order
    EXPECT_EQ((*scan)[1].key, "cache/a");
    EXPECT_EQ((*scan)[2].value, "2");
    ASSERT_TRUE((*store)->Delete("cache/a", true).ok());
    ASSERT_TRUE((*store)->Delete("cache/never", true).ok());  // idempotent
    const absl::Status missing = (*store)->Get("cache/a").status();
    EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(std::string(missing.message()), HasSubstr("cache/a"));
    EXPECT_EQ((*store)->Put("", "x", true).code(), absl::StatusCode::kInvalidArgument);
    // A second open of the same directory is refused while the first holds it.
    auto again = kvstore::RecordStore::Open(dir);
    EXPECT_FALSE(again.ok());
    EXPECT_THAT(std::string(again.status().message()), HasSubstr(dir));
  }
  auto store = kvstore::RecordStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->Get("cache/b"), "2");
  EXPECT_EQ((*store)->Get("cache/a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->Scan("").value().size(), 3u);
  std::filesystem::remove_all(dir);
}

TEST(ShardPlan, BlockAlignedContiguousAndEven) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const std::vector<std::string> workers = {"w0:1", "w1:1", "w2:1", "w3:1"};
  for (int trial = 0; trial < 200; ++trial) {
    const int32_t b = 1 << (rng.NextU64() % 7);  // 1..64
    const int64_t n = 1 + static_cast<int64_t>(rng.NextU64() % 5000);
    auto plan = PlanShards(n, b, workers);
    ASSERT_TRUE(plan.ok());
    const int64_t blocks = (n + b - 1) / b;
    ASSERT_EQ(static_cast<int64_t>(plan->size()), std::min<int64_t>(blocks, 4));
    int64_t next = 0, min_blocks = INT64_MAX, max_blocks = 0;
    for (size_t r = 0; r < plan->size(); ++r) {
      const ShardRange& s = (*plan)[r];
      EXPECT_EQ(s.rank, static_cast<int32_t>(r));
      EXPECT_EQ(s.address, workers[r]);
      EXPECT_EQ(s.token_begin, next);
      EXPECT_EQ(s.token_begin % b, 0);
      EXPECT_LT(s.token_begin, s.token_end);
      if (r + 1 < plan->size()) {
        EXPECT_EQ(s.token_end % b, 0);
      }
      const int64_t sb = ShardEndBlock(s, b) - ShardFirstBlock(s, b);
      min_blocks = std::min(min_blocks, sb);
      max_blocks = std::max(max_blocks, sb);
      next = s.token_end;
    }
    EXPECT_EQ(next, n);
    EXPECT_LE(max_blocks - min_blocks, 1);
  }
}

TEST(ShardPlan, FewerWorkersThanBlocksAndErrors) {
  auto plan = PlanShards(20, 16, {"a:1", "b:1", "c:1"});
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 2u);
  EXPECT_EQ((*plan)[0], (ShardRange{0, "a:1", 0, 16}));
  EXPECT_EQ((*plan)[1], (ShardRange{1, "b:1", 16, 20}));
  EXPECT_EQ(PlanShards(0, 16, {"a:1"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanShards(10, 0, {"a:1"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanShards(10, 16, {}).status().code(), absl::StatusCode::kUnavailable);
}

TEST(Admission, BudgetQueueAndRelease) {
  AdmissionController adm({/*max_queue=*/1, /*max_inflight_tokens=*/100});
  const Deadline soon = std::chrono::system_clock::now() + std::chrono::milliseconds(100);
  auto big = adm.Admit(101, soon, nullptr);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("budget of 100"));
  auto a = adm.Admit(60, soon, nullptr);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(adm.inflight_tokens(), 60);

  // 60 + 50 > 100: the second waits in the queue (size 1); a third finds the queue full.
  std::atomic<bool> second_admitted{false};
  std::thread waiter([&] {
    auto b = adm.Admit(50, std::chrono::system_clock::now() + std::chrono::seconds(5), nullptr);
    second_admitted = b.ok();
  });
  while (adm.queued() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto c = adm.Admit(10, soon, nullptr);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("queue full"));
  { AdmissionController::Slot gone = std::move(*a); }  // released on destruction
  waiter.join();
  EXPECT_TRUE(second_admitted);
  EXPECT_EQ(adm.inflight_tokens(), 0);  // the waiter's slot went out of scope too
  EXPECT_EQ(adm.running(), 0);

  // A queued request whose deadline passes leaves the queue with DEADLINE_EXCEEDED.
  auto hold = adm.Admit(100, soon, nullptr);
  ASSERT_TRUE(hold.ok());
  auto late =
      adm.Admit(1, std::chrono::system_clock::now() + std::chrono::milliseconds(30), nullptr);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(adm.queued(), 0);
  Cancellation cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    cancel.Cancel();
  });
  auto cancelled = adm.Admit(1, kNoDeadline, &cancel);
  canceller.join();
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(adm.queued(), 0);
}

TEST(Registry, EntryRoundTripAndBadRecords) {
  CacheEntry e;
  e.id = kvstore::CacheId::Random();
  e.tenant = "acme";
  e.model = "tiny";
  e.state = CacheState::kReady;
  e.layout = {DType::kF16, 3, 2, 4, 16, 100};
  e.dtype_known = true;
  e.policy = "phsa";
  e.created_unix_ms = 1;
  e.expires_unix_ms = 2;
  e.layers_ready = 3;
  e.hot_blocks = 5;
  e.cold_blocks = 7;
  e.bytes = 1234;
  e.shards = {{0, "a:1", 0, 64}, {1, "b:2", 64, 100}};
  e.failure = "";
  auto back = ParseEntry(SerializeEntry(e), "k");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->id, e.id);
  EXPECT_EQ(back->tenant, "acme");
  EXPECT_EQ(back->layout.dtype, DType::kF16);
  EXPECT_EQ(back->layout.num_tokens, 100);
  EXPECT_EQ(back->shards, e.shards);
  EXPECT_EQ(back->bytes, 1234u);
  for (const char* bad : {"", "[]", "{\"id\": 3}", "{not json"}) {
    auto p = ParseEntry(bad, "cache/zz");
    EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss) << bad;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr("cache/zz"));
  }
}

TEST(Registry, PendingBecomesFailedOnReopenAndTenantsAreIsolated) {
  const std::string dir = TempDir("sf-registry");
  FakeClock clock;
  CacheEntry e;
  e.id = kvstore::CacheId::Random();
  e.tenant = "acme";
  e.model = "tiny";
  e.layout = {DType::kBF16, 3, 2, 4, 16, 100};
  e.created_unix_ms = clock.NowUnixMillis();
  e.expires_unix_ms = e.created_unix_ms + 1000;
  {
    auto store = kvstore::RecordStore::Open(dir);
    ASSERT_TRUE(store.ok());
    auto reg = CacheRegistry::Open(store->get(), &clock);
    ASSERT_TRUE(reg.ok());
    ASSERT_TRUE((*reg)->Create(e).ok());
    EXPECT_EQ((*reg)->Create(e).code(), absl::StatusCode::kAlreadyExists);
    EXPECT_TRUE((*reg)->Get(e.id, "acme").ok());
    const absl::Status other = (*reg)->Get(e.id, "globex").status();
    const absl::Status none = (*reg)->Get(kvstore::CacheId::Random(), "acme").status();
    EXPECT_EQ(other.code(), absl::StatusCode::kNotFound);
    // Same wording for "someone else's" and "no such cache", apart from the id.
    EXPECT_EQ(std::string(other.message()).substr(38), std::string(none.message()).substr(38));
  }
  auto store = kvstore::RecordStore::Open(dir);
  ASSERT_TRUE(store.ok());
  auto reg = CacheRegistry::Open(store->get(), &clock);
  ASSERT_TRUE(reg.ok());
  auto back = (*reg)->Get(e.id, "acme");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->state, CacheState::kFailed);
  EXPECT_TRUE(back->cleanup_pending);
  EXPECT_THAT(back->failure, HasSubstr("restarted"));
  clock.Advance(1000);
  EXPECT_EQ((*reg)->Get(e.id, "acme").status().code(), absl::StatusCode::kNotFound);  // expired
  std::filesystem::remove_all(dir);
}

// A MiniCPM4-style checkpoint's sparse_config (as the worker describes it) sets the defaults of
// infllmv2 and nosa; PHSA keeps its own preset; a bad override names its field.
TEST(SelectionResolverTest, SparseConfigFromTheWorkerSetsThePolicyDefaults) {
  v1::ModelInfo m;
  m.set_num_layers(2);
  m.set_q_heads(4);
  m.set_kv_heads(2);
  m.set_head_dim(64);
  m.set_vocab_size(1000);
  m.set_default_policy(v1::POLICY_INFLLMV2);
  v1::SparseConfigInfo* sc = m.mutable_sparse_config();
  sc->set_kernel_size(64);
  sc->set_kernel_stride(32);
  sc->set_init_blocks(2);
  sc->set_block_size(128);
  sc->set_window_size(1024);
  sc->set_topk(24);
  sc->set_dense_len(4096);
  auto r = ResolveSelection(v1::SelectionOverrides(), m);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->block_size, 128);
  EXPECT_EQ(r->config.kernel_size(), 64);
  EXPECT_EQ(r->config.topk(), 24);
  EXPECT_EQ(r->config.dense_below(), 4096);
  EXPECT_EQ(r->policy, "infllmv2");

  v1::SelectionOverrides phsa;
  phsa.set_policy(v1::POLICY_PHSA);
  auto p = ResolveSelection(phsa, m);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->block_size, 16);

  v1::SelectionOverrides bad;
  bad.set_topk(1);  // fewer than the forced blocks
  auto b = ResolveSelection(bad, m);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(b.status().message().find("topk"), std::string::npos) << b.status();
}

}  // namespace
}  // namespace sparsefill::coordinator
