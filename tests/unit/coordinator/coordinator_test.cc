// The Coordinator domain class against fake workers on real in-process gRPC servers.
#include "services/coordinator/coordinator.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/coordinator/grpc_worker.h"
#include "tests/testing/compare.h"
#include "tests/unit/coordinator/fake_worker.h"

namespace sparsefill::coordinator::testing {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

Deadline In(std::chrono::milliseconds d) { return std::chrono::system_clock::now() + d; }

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = sparsefill::testing::FreshSeed();
    dir_ =
        (std::filesystem::temp_directory_path() / ("sf-coord-" + std::to_string(seed_))).string();
    std::filesystem::remove_all(dir_);
    for (int i = 0; i < 3; ++i) {
      fakes_.push_back(std::make_unique<FakeWorkerServer>());
      ASSERT_TRUE(fakes_.back()->Start().ok());
    }
    options_.clock = &clock_;
    options_.max_tokens = 2000;
    options_.admission.max_inflight_tokens = 3000;
    options_.admission.max_queue = 0;
    options_.health_timeout = std::chrono::milliseconds(500);
    options_.deadline_margin = std::chrono::milliseconds(50);
    OpenCoordinator(3);
  }
  void TearDown() override {
    coord_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void OpenCoordinator(int workers) {
    coord_.reset();
    store_.reset();
    std::vector<std::unique_ptr<WorkerApi>> apis;
    for (int i = 0; i < workers; ++i) {
      client::WorkerClient::Options o;
      o.address = fakes_[i]->address;
      auto w = GrpcWorker::Connect(o);
      ASSERT_TRUE(w.ok()) << w.status();
      apis.push_back(std::move(*w));
    }
    auto store = kvstore::RecordStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto c = Coordinator::Create(
        options_, std::make_unique<WorkerPool>(std::move(apis), options_.health_timeout),
        store_.get());
    ASSERT_TRUE(c.ok()) << c.status();
    coord_ = std::move(*c);
  }

  RequestContext Ctx(const std::string& tenant = "acme",
                     std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return RequestContext{tenant, In(timeout), nullptr};
  }

  v1::PrefillRequest Tokens(int64_t n) {
    Rng rng(seed_ + n);
    v1::PrefillRequest r;
    r.set_model("tiny");
    for (int64_t i = 0; i < n; ++i) r.mutable_tokens()->add_ids(rng.NextU64() % kVocab);
    return r;
  }

  struct PrefillOutcome {
    absl::Status status;
    std::vector<v1::PrefillProgress> events;
    std::string cache_id;
  };
  PrefillOutcome RunPrefill(const v1::PrefillRequest& req, const RequestContext& rc) {
    PrefillOutcome out;
    out.status = coord_->Prefill(rc, req, [&](const v1::PrefillProgress& p) {
      out.events.push_back(p);
      if (p.has_admitted()) out.cache_id = p.admitted().cache_id();
      return absl::OkStatus();
    });
    return out;
  }

  uint64_t seed_ = 0;
  std::string dir_;
  FakeClock clock_;
  CoordinatorOptions options_;
  std::vector<std::unique_ptr<FakeWorkerServer>> fakes_;
  std::unique_ptr<kvstore::RecordStore> store_;
  std::unique_ptr<Coordinator> coord_;
};

void ExpectInvalid(const absl::Status& s, const std::string& names) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(names));
}

TEST_F(CoordinatorTest, BadInputIsInvalidArgumentNamingIt) {
  SCOPED_TRACE(seed_);
  v1::PrefillRequest r = Tokens(10);
  r.set_model("huge");
  ExpectInvalid(RunPrefill(r, Ctx()).status, "model: unknown model 'huge'");
  r.set_model("");
  ExpectInvalid(RunPrefill(r, Ctx()).status, "model: empty");

  v1::PrefillRequest empty;
  empty.set_model("tiny");
  ExpectInvalid(RunPrefill(empty, Ctx()).status, "prompt");
  empty.mutable_tokens();
  ExpectInvalid(RunPrefill(empty, Ctx()).status, "tokens: empty");
  empty.set_text("");
  ExpectInvalid(RunPrefill(empty, Ctx()).status, "text: empty");

  ExpectInvalid(RunPrefill(Tokens(2001), Ctx()).status, "2001 tokens exceed the maximum of 2000");

  r = Tokens(50);
  r.mutable_tokens()->set_ids(17, kVocab);
  ExpectInvalid(RunPrefill(r, Ctx()).status, "tokens[17]: token id 1000");
  r.mutable_tokens()->set_ids(17, -1);
  ExpectInvalid(RunPrefill(r, Ctx()).status, "tokens[17]: token id -1");

  r = Tokens(50);
  r.mutable_selection()->set_topk(-3);
  ExpectInvalid(RunPrefill(r, Ctx()).status, "selection.topk");
  r = Tokens(50);
  r.mutable_selection()->set_policy(static_cast<v1::Policy>(42));
  ExpectInvalid(RunPrefill(r, Ctx()).status, "selection.policy");
  r = Tokens(50);
  r.set_ttl_seconds(-1);
  ExpectInvalid(RunPrefill(r, Ctx()).status, "ttl_seconds");
  r = Tokens(50);
  r.set_measure(true);
  r.set_information_loss_queries(-2);
  ExpectInvalid(RunPrefill(r, Ctx()).status, "information_loss_queries");

  // Text goes through a worker's tokenizer; its length limit applies like for ids.
  v1::PrefillRequest text;
  text.set_model("tiny");
  text.set_text(std::string(2001, 'a'));
  ExpectInvalid(RunPrefill(text, Ctx()).status, "text: 2001 tokens exceed");

  // Nothing was admitted, registered or started.
  EXPECT_EQ(coord_->registry().size(), 0u);
  for (auto& f : fakes_) EXPECT_EQ(f->service.execute_calls.load(), 0);
}

TEST_F(CoordinatorTest, PrefillPlansBlockAlignedShardsAndStreamsProgress) {
  SCOPED_TRACE(seed_);
  const int64_t n = 100;  // PHSA: 16-token blocks -> 7 blocks over 3 workers: 3, 2, 2
  v1::PrefillRequest req = Tokens(n);
  req.set_measure(true);
  req.set_information_loss_queries(33);
  PrefillOutcome out = RunPrefill(req, Ctx());
  ASSERT_TRUE(out.status.ok()) << out.status;
  ASSERT_EQ(out.events.size(), 2u + kLayers);
  ASSERT_TRUE(out.events.front().has_admitted());
  EXPECT_EQ(out.events.front().admitted().workers(), 3);
  EXPECT_EQ(out.events.front().admitted().num_tokens(), n);
  for (int l = 0; l < kLayers; ++l) {
    ASSERT_TRUE(out.events[1 + l].has_layer_done());
    EXPECT_EQ(out.events[1 + l].layer_done().layer(), l);
    EXPECT_EQ(out.events[1 + l].layer_done().layers_total(), kLayers);
  }
  ASSERT_TRUE(out.events.back().has_done());
  const v1::PrefillDone& done = out.events.back().done();
  EXPECT_EQ(done.cache().state(), v1::CACHE_STATE_READY);
  EXPECT_EQ(done.cache().layout().dtype(), v1::DTYPE_BF16);
  EXPECT_EQ(done.cache().layout().block_size(), 16);
  EXPECT_EQ(done.cache().layers_ready(), kLayers);
  EXPECT_EQ(done.cache().policy(), "phsa");
  EXPECT_EQ(done.stats().workers(), 3);
  EXPECT_EQ(done.stats().selected_keys(), 3 * n * kLayers);
  EXPECT_EQ(done.stats().causal_keys(), 10 * n * kLayers);
  EXPECT_NEAR(done.stats().sparsity(), 0.7, 1e-12);
  EXPECT_NEAR(done.stats().information_loss(), 0.5, 1e-12);
  // The fake workers measure every query: (loss count of a layer) / q_heads positions.
  EXPECT_EQ(done.stats().information_loss_queries(), n);
  EXPECT_EQ(done.stats().layers_size(), kLayers);
  EXPECT_NEAR(done.stats().hidden_rel_l2(), 0.01, 1e-12);

  // The shards each worker got: contiguous, 16-aligned, its own tokens only, every selection
  // field resolved, the same peers everywhere.
  const std::vector<std::pair<int64_t, int64_t>> want = {{0, 48}, {48, 80}, {80, 100}};
  for (int r = 0; r < 3; ++r) {
    auto reqs = fakes_[r]->service.requests();
    ASSERT_EQ(reqs.size(), 1u);
    const v1::ShardRequest& s = reqs[0];
    EXPECT_EQ(s.rank(), r);
    EXPECT_EQ(s.job_id(), out.cache_id);
    EXPECT_EQ(s.num_tokens(), n);
    EXPECT_EQ(s.tenant(), "acme");
    ASSERT_EQ(s.peers_size(), 3);
    EXPECT_EQ(s.peers(r).token_begin(), want[r].first);
    EXPECT_EQ(s.peers(r).token_end(), want[r].second);
    EXPECT_EQ(s.peers(r).address(), fakes_[r]->address);
    ASSERT_EQ(s.tokens().ids_size(), want[r].second - want[r].first);
    EXPECT_EQ(s.tokens().ids(0), req.tokens().ids(want[r].first));
    EXPECT_EQ(s.selection().policy(), v1::POLICY_PHSA);
    EXPECT_TRUE(s.selection().has_topk() && s.selection().has_block_size() &&
                s.selection().has_lambda());
    EXPECT_TRUE(s.measure());
    EXPECT_EQ(s.information_loss_queries(), 33);  // as the client gave it
  }
  EXPECT_EQ(coord_->admission().inflight_tokens(), 0);

  // A prompt of fewer blocks than workers uses fewer workers.
  PrefillOutcome small = RunPrefill(Tokens(20), Ctx());
  ASSERT_TRUE(small.status.ok()) << small.status;
  EXPECT_EQ(small.events.front().admitted().workers(), 2);
  EXPECT_EQ(fakes_[2]->service.requests().size(), 1u);
}

TEST_F(CoordinatorTest, AdmissionFullIsResourceExhaustedAndSlotsComeBack) {
  SCOPED_TRACE(seed_);
  for (auto& f : fakes_) f->service.layer_delay_ms = 100;
  std::thread first([&] { EXPECT_TRUE(RunPrefill(Tokens(2000), Ctx()).status.ok()); });
  while (coord_->admission().inflight_tokens() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const absl::Status full = RunPrefill(Tokens(1500), Ctx()).status;
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  first.join();
  EXPECT_EQ(coord_->admission().inflight_tokens(), 0);

  // Failures give their slot back too.
  for (auto& f : fakes_) f->service.layer_delay_ms = 0;
  fakes_[1]->service.fail_at_layer = 1;
  const absl::Status failed = RunPrefill(Tokens(2000), Ctx()).status;
  EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable) << failed;
  EXPECT_EQ(coord_->admission().inflight_tokens(), 0);
  EXPECT_EQ(coord_->admission().running(), 0);
}

TEST_F(CoordinatorTest, KilledWorkerFailsTheRequestClearlyAndTheNextSucceeds) {
  SCOPED_TRACE(seed_);
  for (auto& f : fakes_) f->service.hang_at_layer = 1;
  std::thread killer([&] {
    while (fakes_[1]->service.execute_calls.load() == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    fakes_[1]->Kill();
  });
  const auto start = Clock::now();
  PrefillOutcome out = RunPrefill(Tokens(300), Ctx("acme", std::chrono::seconds(5)));
  killer.join();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  ASSERT_FALSE(out.status.ok());
  EXPECT_EQ(out.status.code(), absl::StatusCode::kUnavailable) << out.status;
  EXPECT_THAT(std::string(out.status.message()), HasSubstr("worker " + fakes_[1]->address));
  EXPECT_EQ(coord_->admission().inflight_tokens(), 0);
  // The cache is FAILED, and the shards that the live workers stored get deleted.
  auto info = coord_->GetCache(Ctx(), out.cache_id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state(), v1::CACHE_STATE_FAILED);
  coord_->ExpireAndCleanup();
  EXPECT_FALSE(fakes_[0]->service.HasShard(out.cache_id));

  for (auto& f : fakes_) {
    if (f->server) f->service.hang_at_layer = -1;
  }
  PrefillOutcome next = RunPrefill(Tokens(300), Ctx());
  ASSERT_TRUE(next.status.ok()) << next.status;
  EXPECT_EQ(next.events.front().admitted().workers(), 2);
}

TEST_F(CoordinatorTest, WorkerFailureNamesTheWorkerAndCancelsTheOthers) {
  SCOPED_TRACE(seed_);
  fakes_[0]->service.hang_at_layer = 2;
  fakes_[1]->service.hang_at_layer = 2;
  fakes_[2]->service.fail_at_layer = 1;
  const auto start = Clock::now();
  PrefillOutcome out = RunPrefill(Tokens(300), Ctx("acme", std::chrono::seconds(20)));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));  // not the deadline: cancelled
  EXPECT_EQ(out.status.code(), absl::StatusCode::kUnavailable) << out.status;
  EXPECT_THAT(std::string(out.status.message()), HasSubstr("worker " + fakes_[2]->address));
  EXPECT_THAT(std::string(out.status.message()), HasSubstr("injected failure at layer 1"));
}

TEST_F(CoordinatorTest, RegistrySurvivesRestartAndPendingBecomesFailedAndCleaned) {
  SCOPED_TRACE(seed_);
  PrefillOutcome out = RunPrefill(Tokens(100), Ctx());
  ASSERT_TRUE(out.status.ok()) << out.status;
  const v1::CacheInfo before = coord_->GetCache(Ctx(), out.cache_id).value();

  // A PENDING entry as a crashed coordinator leaves it, with a shard on worker 0.
  CacheEntry pending;
  pending.id = kvstore::CacheId::Random();
  pending.tenant = "acme";
  pending.model = "tiny";
  pending.layout = {DType::kBF16, kLayers, kKvHeads, kHeadDim, 16, 10};
  pending.created_unix_ms = clock_.NowUnixMillis();
  pending.expires_unix_ms = pending.created_unix_ms + 60000;
  pending.shards = {{0, fakes_[0]->address, 0, 10}};
  ASSERT_TRUE(coord_->registry().Create(pending).ok());
  v1::ShardRequest shard;
  shard.set_job_id(rpc::CacheIdToBytes(pending.id));
  fakes_[0]->service.AddShard(shard);

  OpenCoordinator(3);
  const v1::CacheInfo after = coord_->GetCache(Ctx(), out.cache_id).value();
  EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString());
  auto failed = coord_->GetCache(Ctx(), rpc::CacheIdToBytes(pending.id));
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->state(), v1::CACHE_STATE_FAILED);
  EXPECT_TRUE(fakes_[0]->service.HasShard(shard.job_id()));
  coord_->ExpireAndCleanup();
  EXPECT_FALSE(fakes_[0]->service.HasShard(shard.job_id()));
  // Still visible as FAILED until its TTL; the READY one streams after the restart.
  EXPECT_TRUE(coord_->GetCache(Ctx(), rpc::CacheIdToBytes(pending.id)).ok());
  int chunks = 0;
  v1::StreamCacheRequest sreq;
  sreq.set_cache_id(out.cache_id);
  ASSERT_TRUE(coord_
                  ->StreamCache(Ctx(), sreq,
                                [&](const v1::KvChunk&) {
                                  ++chunks;
                                  return absl::OkStatus();
                                })
                  .ok());
  EXPECT_EQ(chunks, kLayers * kKvHeads * 7);
}

TEST_F(CoordinatorTest, TtlExpiryDeletesShardsAndEntry) {
  SCOPED_TRACE(seed_);
  v1::PrefillRequest req = Tokens(100);
  req.set_ttl_seconds(30);
  PrefillOutcome out = RunPrefill(req, Ctx());
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_EQ(out.events.back().done().cache().expires_unix_ms(),
            out.events.back().done().cache().created_unix_ms() + 30000);
  clock_.Advance(29000);
  EXPECT_EQ(coord_->ExpireAndCleanup(), 0);
  EXPECT_TRUE(coord_->GetCache(Ctx(), out.cache_id).ok());
  clock_.Advance(1000);
  EXPECT_EQ(coord_->GetCache(Ctx(), out.cache_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(coord_->ExpireAndCleanup(), 1);
  for (auto& f : fakes_) EXPECT_FALSE(f->service.HasShard(out.cache_id));
  EXPECT_EQ(coord_->registry().size(), 0u);
}

TEST_F(CoordinatorTest, TenantsCannotSeeStreamOrDeleteOthersCaches) {
  SCOPED_TRACE(seed_);
  PrefillOutcome out = RunPrefill(Tokens(100), Ctx("acme"));
  ASSERT_TRUE(out.status.ok()) << out.status;
  const std::string random_id = rpc::CacheIdToBytes(kvstore::CacheId::Random());
  auto not_found = [](const absl::Status& s) {
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  };
  not_found(coord_->GetCache(Ctx("globex"), out.cache_id).status());
  not_found(coord_->GetCache(Ctx("acme"), random_id).status());
  v1::StreamCacheRequest sreq;
  sreq.set_cache_id(out.cache_id);
  int chunks = 0;
  auto count = [&](const v1::KvChunk&) {
    ++chunks;
    return absl::OkStatus();
  };
  not_found(coord_->StreamCache(Ctx("globex"), sreq, count));
  v1::FetchBlocksRequest freq;
  freq.set_cache_id(out.cache_id);
  v1::BlockRange* r = freq.add_ranges();
  r->set_num_blocks(1);
  not_found(coord_->FetchBlocks(Ctx("globex"), freq, count));
  not_found(coord_->DeleteCache(Ctx("globex"), out.cache_id));
  EXPECT_EQ(chunks, 0);
  for (auto& f : fakes_)
    EXPECT_TRUE(f->service.HasShard(out.cache_id) || f->service.requests().empty());
  EXPECT_EQ(coord_->GetCache(Ctx("acme"), "short").status().code(),
            absl::StatusCode::kInvalidArgument);

  // Its owner deletes it: shards on every worker, then the registry.
  ASSERT_TRUE(coord_->DeleteCache(Ctx("acme"), out.cache_id).ok());
  not_found(coord_->GetCache(Ctx("acme"), out.cache_id).status());
  for (auto& f : fakes_) EXPECT_FALSE(f->service.HasShard(out.cache_id));
  EXPECT_EQ(coord_->registry().size(), 0u);
}

TEST_F(CoordinatorTest, StreamCacheSendsHotBlocksFirstLayerByLayerWithChecksums) {
  SCOPED_TRACE(seed_);
  const int64_t n = 100;
  PrefillOutcome out = RunPrefill(Tokens(n), Ctx());
  ASSERT_TRUE(out.status.ok()) << out.status;
  const int64_t blocks = 7;
  for (bool hot_only : {false, true}) {
    SCOPED_TRACE(hot_only);
    v1::StreamCacheRequest sreq;
    sreq.set_cache_id(out.cache_id);
    sreq.set_hot_only(hot_only);
    std::vector<v1::KvChunk> got;
    ASSERT_TRUE(coord_
                    ->StreamCache(Ctx(), sreq,
                                  [&](const v1::KvChunk& c) {
                                    got.push_back(c);
                                    return absl::OkStatus();
                                  })
                    .ok());
    // Every (layer, head, block) once; hot ones first in layer order, then cold ones.
    std::set<std::tuple<int, int, int64_t>> seen;
    bool in_cold = false;
    int last_hot_layer = 0;
    for (const v1::KvChunk& c : got) {
      ASSERT_EQ(c.num_blocks(), 1);
      EXPECT_EQ(c.cache_id(), out.cache_id);
      const int64_t g = c.first_block();
      ASSERT_GE(g, 0);
      ASSERT_LT(g, blocks);
      EXPECT_EQ(c.hot(), IsHot(g));
      if (!c.hot()) in_cold = true;
      if (c.hot()) {
        EXPECT_FALSE(in_cold) << "hot block after a cold one";
        EXPECT_GE(c.layer(), last_hot_layer);
        last_hot_layer = c.layer();
      }
      const int64_t tokens = std::min<int64_t>(16, n - g * 16);
      const std::string want = BlockBytes(out.cache_id, c.layer(), c.kv_head(), g, tokens);
      EXPECT_EQ(c.data(), want);
      ASSERT_EQ(c.xxh64_size(), 1);
      EXPECT_EQ(c.xxh64(0), rpc::Xxh64(want));
      EXPECT_TRUE(seen.insert({c.layer(), c.kv_head(), g}).second);
    }
    const int64_t hot_blocks = 4;  // global blocks 0, 2, 4, 6
    EXPECT_EQ(static_cast<int64_t>(seen.size()),
              kLayers * kKvHeads * (hot_only ? hot_blocks : blocks));
  }

  // FetchBlocks: global ranges across shard boundaries; bad ranges named.
  v1::FetchBlocksRequest freq;
  freq.set_cache_id(out.cache_id);
  v1::BlockRange* r = freq.add_ranges();
  r->set_layer(2);
  r->set_kv_head(1);
  r->set_first_block(1);
  r->set_num_blocks(5);  // blocks 1..5: shards 0 (0-2), 1 (3-4), 2 (5-6)
  std::vector<int64_t> firsts;
  ASSERT_TRUE(coord_
                  ->FetchBlocks(Ctx(), freq,
                                [&](const v1::KvChunk& c) {
                                  firsts.push_back(c.first_block());
                                  EXPECT_EQ(c.data(),
                                            BlockBytes(out.cache_id, 2, 1, c.first_block(), 16));
                                  return absl::OkStatus();
                                })
                  .ok());
  EXPECT_EQ(firsts, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  r->set_num_blocks(7);
  ExpectInvalid(
      coord_->FetchBlocks(Ctx(), freq, [](const v1::KvChunk&) { return absl::OkStatus(); }),
      "ranges[0]: blocks [1, 8)");
  r->set_num_blocks(1);
  r->set_kv_head(2);
  ExpectInvalid(
      coord_->FetchBlocks(Ctx(), freq, [](const v1::KvChunk&) { return absl::OkStatus(); }),
      "ranges[0].kv_head");
  // Found by tests/fuzz/coordinator_request_fuzzer: first_block + num_blocks overflowed int64
  // (undefined; in practice it wrapped negative and the range passed the check).
  r->set_kv_head(1);
  r->set_first_block(std::numeric_limits<int64_t>::max() - 1);
  r->set_num_blocks(3);
  ExpectInvalid(
      coord_->FetchBlocks(Ctx(), freq, [](const v1::KvChunk&) { return absl::OkStatus(); }),
      "are not inside the cache's");
}

TEST_F(CoordinatorTest, StreamStartsBeforeThePrefillEnds) {
  SCOPED_TRACE(seed_);
  for (auto& f : fakes_) f->service.layer_delay_ms = 150;
  std::string cache_id;
  std::atomic<bool> admitted{false}, prefill_done{false};
  std::thread prefill([&] {
    const absl::Status s = coord_->Prefill(Ctx(), Tokens(100), [&](const v1::PrefillProgress& p) {
      if (p.has_admitted()) {
        cache_id = p.admitted().cache_id();
        admitted = true;
      }
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    prefill_done = true;
  });
  while (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  v1::StreamCacheRequest sreq;
  sreq.set_cache_id(cache_id);
  bool first_before_done = false;
  int chunks = 0;
  const absl::Status s = coord_->StreamCache(Ctx(), sreq, [&](const v1::KvChunk& c) {
    if (chunks++ == 0) first_before_done = !prefill_done && c.layer() == 0;
    return absl::OkStatus();
  });
  prefill.join();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(first_before_done);
  EXPECT_EQ(chunks, kLayers * kKvHeads * 7);
}

TEST_F(CoordinatorTest, StalledWorkerEndsTheStreamWithinItsDeadline) {
  SCOPED_TRACE(seed_);
  PrefillOutcome out = RunPrefill(Tokens(100), Ctx());
  ASSERT_TRUE(out.status.ok()) << out.status;
  fakes_[1]->service.stall_reads_from_layer = 1;
  v1::StreamCacheRequest sreq;
  sreq.set_cache_id(out.cache_id);
  int chunks = 0;
  const auto start = Clock::now();
  const absl::Status s = coord_->StreamCache(Ctx("acme", std::chrono::milliseconds(700)), sreq,
                                             [&](const v1::KvChunk&) {
                                               ++chunks;
                                               return absl::OkStatus();
                                             });
  const auto took = Clock::now() - start;
  EXPECT_TRUE(s.code() == absl::StatusCode::kDeadlineExceeded ||
              s.code() == absl::StatusCode::kUnavailable)
      << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(fakes_[1]->address));
  EXPECT_GT(chunks, 0);  // layer 0 arrived before the stall
  EXPECT_LT(took, std::chrono::milliseconds(700));

  // A client that goes away stops the stream promptly, even while a worker stalls.
  Cancellation cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    cancel.Cancel();
  });
  const auto start2 = Clock::now();
  const absl::Status s2 =
      coord_->StreamCache(RequestContext{"acme", In(std::chrono::seconds(20)), &cancel}, sreq,
                          [](const v1::KvChunk&) { return absl::OkStatus(); });
  canceller.join();
  EXPECT_EQ(s2.code(), absl::StatusCode::kCancelled) << s2;
  EXPECT_LT(Clock::now() - start2, std::chrono::seconds(2));
}

TEST_F(CoordinatorTest, ListModelsAndUnhealthyWorkers) {
  auto models = coord_->ListModels();
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).name(), "tiny");
  for (auto& f : fakes_) f->Kill();
  coord_->RefreshWorkers();
  EXPECT_EQ(coord_->ListModels().models_size(), 0);
  // Known model, no healthy worker: UNAVAILABLE rather than "unknown model".
  const absl::Status s = RunPrefill(Tokens(10), Ctx()).status;
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(coord_->admission().inflight_tokens(), 0);
  // A coordinator that never heard from a worker cannot tell an unknown model from a known one.
  OpenCoordinator(3);
  const absl::Status never = RunPrefill(Tokens(10), Ctx()).status;
  EXPECT_EQ(never.code(), absl::StatusCode::kUnavailable) << never;
  EXPECT_THAT(std::string(never.message()), HasSubstr("no worker has answered"));
}

}  // namespace
}  // namespace sparsefill::coordinator::testing
