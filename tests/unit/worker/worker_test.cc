// N in-process Worker servers on 127.0.0.1 (real gRPC, real KV stores in temp dirs, the tiny HF
// fixture): ExecuteShard on every rank at once must store K/V and report counters bit-identical
// to the single-process engine for 1, 2 and 4 workers (dense and InfLLM-V2 with dense_below
// lowered); ReadBlocks serves checksummed chunks equal to the stored blocks; a peer that dies
// mid-job fails the others in time naming it; bad requests and unauthenticated calls get clear
// codes.
#include <cstring>
#include <thread>

#include "gtest/gtest.h"
#include "services/common/auth_channel.h"
#include "services/rpc/kv_chunk.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/synthetic_checkpoint.h"
#include "tests/unit/rpc/grpc_probe.h"
#include "tests/unit/worker/worker_test_util.h"

namespace sparsefill::worker {
namespace {

using namespace test_support;  // NOLINT: the test helpers of this folder

std::vector<int32_t> RandomTokens(size_t n, int64_t vocab, Rng& rng) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(vocab));
  return t;
}

engine::SelectionConfig SmallSelection(engine::Policy policy) {
  engine::SelectionConfig s = policy == engine::Policy::kDense
                                  ? engine::SelectionConfig::Dense()
                                  : engine::SelectionConfig::InfLlmV2();
  s.block_size = 16;
  s.kernel_size = 32;
  s.kernel_stride = 16;
  s.init_blocks = 1;
  s.local_tokens = 64;
  s.topk = 9;
  s.dense_below = 0;  // the sparse path on a short prompt
  return s;
}

class WorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto e = engine::Engine::Create(kFixture, {});
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = e->release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }
  void SetUp() override { seed_ = sparsefill::testing::FreshSeed(); }

  // Reads every block of `node`'s shard of `id` through ReadBlocks, verifies each chunk, and
  // checks the bytes against `ref` (the single-process K/V of the whole prompt, fp32 like the
  // fixture). Returns the number of chunks.
  int64_t ExpectStoredEquals(Node& node, const kvstore::CacheId& id, const KeepingSink& ref,
                             int64_t begin, int64_t end, uint64_t chunk_bytes,
                             const engine::Engine* model = nullptr) {
    if (model == nullptr) model = engine_;
    auto c = node.Client();
    v1::ShardManifestRequest mreq;
    mreq.set_cache_id(rpc::CacheIdToBytes(id));
    auto manifest = c->GetShardManifest(mreq);
    EXPECT_TRUE(manifest.ok()) << manifest.status();
    if (!manifest.ok()) return 0;
    EXPECT_TRUE(manifest->ready());
    EXPECT_EQ(manifest->token_begin(), begin);
    EXPECT_EQ(manifest->token_end(), end);
    EXPECT_EQ(manifest->layers_written(), model->config().num_layers);
    auto layout = rpc::CacheLayoutFromProto(manifest->layout());
    EXPECT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->num_tokens, ref.k.at(0).size() / model->config().kv_dim());
    EXPECT_EQ(layout->dtype, model->config().dtype);
    const size_t row_bytes = layout->head_dim * DTypeSize(layout->dtype);
    std::vector<uint8_t> want(row_bytes);
    const int32_t bs = layout->block_size, hkv = layout->kv_heads, d = layout->head_dim;
    const int64_t b0 = begin / bs, b1 = (end + bs - 1) / bs;
    v1::FetchBlocksRequest req;
    req.set_cache_id(rpc::CacheIdToBytes(id));
    for (int32_t li = 0; li < layout->num_layers; ++li) {
      for (int32_t h = 0; h < hkv; ++h) {
        v1::BlockRange* r = req.add_ranges();
        r->set_layer(li);
        r->set_kv_head(h);
        r->set_first_block(b0);
        r->set_num_blocks(static_cast<int32_t>(b1 - b0));
      }
    }
    int64_t chunks = 0, blocks = 0;
    v1::KvChunk prev;
    prev.set_layer(-1);
    absl::Status s = c->ReadBlocks(req, [&](const v1::KvChunk& chunk) {
      ++chunks;
      SF_RETURN_IF_ERROR(rpc::VerifyKvChunk(chunk, id, *layout));
      // A chunk is cut before chunk_bytes only at the end of its run or where the tier or the
      // hot flag changes (the next chunk of the run says which).
      const bool continues = prev.layer() == chunk.layer() && prev.kv_head() == chunk.kv_head() &&
                             prev.first_block() + prev.num_blocks() == chunk.first_block();
      if (continues && prev.data().size() < chunk_bytes && prev.tier() == chunk.tier() &&
          prev.hot() == chunk.hot()) {
        ++short_chunks_;
      }
      if (chunk.data().size() >= chunk_bytes) ++full_chunks_;
      prev = chunk;
      const char* p = chunk.data().data();
      for (int32_t i = 0; i < chunk.num_blocks(); ++i) {
        const int64_t g = chunk.first_block() + i;
        const int64_t tokens = std::min<int64_t>(bs, layout->num_tokens - g * bs);
        for (int kv = 0; kv < 2; ++kv) {
          const std::vector<float>& src = (kv == 0 ? ref.k : ref.v).at(chunk.layer());
          for (int64_t t = 0; t < tokens; ++t) {
            ConvertFromF32(src.data() + ((g * bs + t) * hkv + chunk.kv_head()) * d, layout->dtype,
                           want.data(), d);
            if (std::memcmp(p, want.data(), row_bytes) != 0) {
              return absl::InternalError(absl::StrCat("layer ", chunk.layer(), " head ",
                                                      chunk.kv_head(), " token ", g * bs + t,
                                                      kv == 0 ? " K" : " V", " differs"));
            }
            p += row_bytes;
          }
        }
        ++blocks;
      }
      return absl::OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ(blocks, int64_t{layout->num_layers} * hkv * (b1 - b0));
    return chunks;
  }

  void ExpectBitIdentical(engine::Policy policy, int64_t n) {
    SCOPED_TRACE(absl::StrCat(std::string(engine::PolicyName(policy)), " n=", n, " seed=", seed_));
    Rng rng(seed_);
    const auto tokens = RandomTokens(static_cast<size_t>(n), engine_->config().vocab_size, rng);
    const engine::SelectionConfig sel = SmallSelection(policy);
    auto plan = engine_->Plan(n, sel);
    ASSERT_TRUE(plan.ok()) << plan.status();
    KeepingSink ref;
    auto single = engine_->Prefill(*plan, tokens, {}, &ref);
    ASSERT_TRUE(single.ok()) << single.status();
    if (policy != engine::Policy::kDense) {
      EXPECT_GT(single->sparsity, 0.1);  // the sparse path really ran
    }

    constexpr uint64_t kChunk = 8192;  // small, so runs are cut into several chunks
    std::vector<std::unique_ptr<Node>> nodes;
    for (int i = 0; i < 4; ++i) {
      NodeOptions o;
      o.chunk_bytes = kChunk;
      nodes.push_back(StartNode(o));
      ASSERT_NE(nodes.back(), nullptr);
    }
    for (int32_t world : {1, 2, 4}) {
      SCOPED_TRACE(absl::StrCat("world ", world));
      auto layout = engine::ShardLayout::Even(n, world, sel.block_size);
      ASSERT_TRUE(layout.ok()) << layout.status();
      std::vector<Node*> used;
      for (int32_t r = 0; r < world; ++r) used.push_back(nodes[r].get());
      const kvstore::CacheId id = kvstore::CacheId::Random();
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<ShardCall> calls = RunJob(used, id, layout->bounds(), tokens, sel);
      std::cout << "[ timing ] " << engine::PolicyName(policy) << " n=" << n << " world=" << world
                << ": "
                << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
                << " s\n";
      for (int32_t r = 0; r < world; ++r) {
        ASSERT_TRUE(calls[r].status.ok()) << "rank " << r << ": " << calls[r].status;
        ASSERT_EQ(calls[r].layers.size(), static_cast<size_t>(engine_->config().num_layers));
        ASSERT_EQ(calls[r].done.size(), 1u);
        int64_t hot = 0, cold = 0;
        for (const auto& l : calls[r].layers) hot += l.hot_blocks(), cold += l.cold_blocks();
        EXPECT_EQ(calls[r].done[0].hot_blocks(), hot);
        EXPECT_EQ(calls[r].done[0].cold_blocks(), cold);
        const engine::TokenRange mine = layout->range(r);
        EXPECT_EQ(hot + cold, int64_t{engine_->config().num_layers} *
                                  engine_->config().num_kv_heads *
                                  ((mine.size() + sel.block_size - 1) / sel.block_size));
        EXPECT_GT(hot, 0);
      }
      // The shards' counters add up to the single process' per layer, exactly.
      for (int32_t li = 0; li < engine_->config().num_layers; ++li) {
        int64_t selected = 0, causal = 0;
        for (int32_t r = 0; r < world; ++r) {
          EXPECT_EQ(calls[r].layers[li].layer(), li);
          selected += calls[r].layers[li].selected_keys();
          causal += calls[r].layers[li].causal_keys();
        }
        EXPECT_EQ(selected, single->layers[li].selected_keys) << "layer " << li;
        EXPECT_EQ(causal, single->layers[li].causal_keys) << "layer " << li;
      }
      short_chunks_ = full_chunks_ = 0;
      for (int32_t r = 0; r < world; ++r) {
        const engine::TokenRange mine = layout->range(r);
        EXPECT_GT(ExpectStoredEquals(*nodes[r], id, ref, mine.begin, mine.end, kChunk), 0);
      }
      EXPECT_EQ(short_chunks_, 0);
      EXPECT_GT(full_chunks_, 0);
    }
  }

  static engine::Engine* engine_;
  uint64_t seed_ = 0;
  int64_t short_chunks_ = 0, full_chunks_ = 0;
};

engine::Engine* WorkerTest::engine_ = nullptr;

TEST_F(WorkerTest, DenseShardsAreBitIdenticalToTheSingleProcess) {
  ExpectBitIdentical(engine::Policy::kDense, 517);
}

TEST_F(WorkerTest, SparseShardsAreBitIdenticalToTheSingleProcess) {
  ExpectBitIdentical(engine::Policy::kInfLlmV2, 611);
}

TEST_F(WorkerTest, ManifestsListDeleteModelsAndHealth) {
  auto node = StartNode({});
  ASSERT_NE(node, nullptr);
  Rng rng(seed_);
  const auto tokens = RandomTokens(100, engine_->config().vocab_size, rng);
  const kvstore::CacheId id = kvstore::CacheId::Random();
  auto calls =
      RunJob({node.get()}, id, {0, 100}, tokens, SmallSelection(engine::Policy::kInfLlmV2));
  ASSERT_TRUE(calls[0].status.ok()) << calls[0].status;
  auto c = node->Client();
  auto list = c->ListShards();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->shards_size(), 1);
  EXPECT_EQ(list->shards(0).cache_id(), rpc::CacheIdToBytes(id));
  EXPECT_EQ(list->shards(0).layout().num_tokens(), 100);
  // The same job id again: the cache exists.
  auto again =
      RunJob({node.get()}, id, {0, 100}, tokens, SmallSelection(engine::Policy::kInfLlmV2));
  EXPECT_EQ(again[0].status.code(), absl::StatusCode::kAlreadyExists) << again[0].status;
  v1::DeleteShardRequest del;
  del.set_cache_id(rpc::CacheIdToBytes(id));
  ASSERT_TRUE(c->DeleteShard(del).ok());
  v1::ShardManifestRequest mreq;
  mreq.set_cache_id(rpc::CacheIdToBytes(id));
  EXPECT_EQ(c->GetShardManifest(mreq).status().code(), absl::StatusCode::kNotFound);

  v1::ListModelsResponse models;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ASSERT_TRUE(c->stub()->DescribeModels(&ctx, v1::ListModelsRequest(), &models).ok());
  }
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).name(), kModel);
  EXPECT_EQ(models.models(0).architecture(), "Qwen3ForCausalLM");
  EXPECT_EQ(models.models(0).num_layers(), engine_->config().num_layers);
  EXPECT_FALSE(models.models(0).has_tokenizer());
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::TokenizeRequest treq;
    treq.set_model(kModel);
    treq.set_text("hello");
    v1::TokenIds ids;
    EXPECT_EQ(c->stub()->Tokenize(&ctx, treq, &ids).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  auto channel = auth::CreateChannel(node->address, {}, "");
  ASSERT_TRUE(channel.ok());
  grpc::Status hs;
  EXPECT_EQ(rpc::test_support::HealthCheck(*channel, "", &hs), 1) << hs.error_message();
}

TEST_F(WorkerTest, AHotPassReadsHotBlocksAndOnlyAnnouncesColdRuns) {
  NodeOptions o;
  o.hot_blocks = 4;  // init 1 + local 2 + 1 more of 13 blocks: hot and cold runs alternate
  auto node = StartNode(o);
  ASSERT_NE(node, nullptr);
  Rng rng(seed_);
  const auto tokens = RandomTokens(200, engine_->config().vocab_size, rng);
  const kvstore::CacheId id = kvstore::CacheId::Random();
  auto calls =
      RunJob({node.get()}, id, {0, 200}, tokens, SmallSelection(engine::Policy::kInfLlmV2));
  ASSERT_TRUE(calls[0].status.ok()) << calls[0].status;
  auto c = node->Client();
  const int64_t nb = (200 + 15) / 16;
  for (const bool hot_pass : {false, true}) {
    SCOPED_TRACE(hot_pass ? "hot pass" : "plain read");
    v1::FetchBlocksRequest req;
    req.set_cache_id(rpc::CacheIdToBytes(id));
    req.set_hot_pass(hot_pass);
    for (int32_t h = 0; h < engine_->config().num_kv_heads; ++h) {
      v1::BlockRange* r = req.add_ranges();
      r->set_layer(1);
      r->set_kv_head(h);
      r->set_first_block(0);
      r->set_num_blocks(static_cast<int32_t>(nb));
    }
    int64_t hot = 0, cold = 0, announced = 0, next = 0;
    int32_t head = 0;
    const absl::Status s = c->ReadBlocks(req, [&](const v1::KvChunk& chunk) -> absl::Status {
      if (chunk.kv_head() != head) {
        EXPECT_EQ(next, nb);  // every block of the previous head, in order
        head = chunk.kv_head();
        next = 0;
      }
      EXPECT_EQ(chunk.first_block(), next);
      next += chunk.num_blocks();
      (chunk.hot() ? hot : cold) += chunk.num_blocks();
      if (hot_pass && !chunk.hot()) {
        // Only its place: no bytes were read for it.
        EXPECT_EQ(chunk.xxh64_size(), 0);
        EXPECT_TRUE(chunk.data().empty());
        ++announced;
        return absl::OkStatus();
      }
      auto layout = rpc::CacheLayoutFromProto(c->GetShardManifest([&] {
                                                 v1::ShardManifestRequest m;
                                                 m.set_cache_id(rpc::CacheIdToBytes(id));
                                                 return m;
                                               }())
                                                  ->layout());
      EXPECT_TRUE(layout.ok());
      return rpc::VerifyKvChunk(chunk, id, *layout);
    });
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ(next, nb);
    EXPECT_GT(hot, 0);
    EXPECT_GT(cold, 0);
    EXPECT_EQ(hot + cold, nb * engine_->config().num_kv_heads);
    if (hot_pass) {
      EXPECT_GT(announced, 0);
    }
  }
}

TEST_F(WorkerTest, BadRequestsAreInvalidArgumentNamingTheProblem) {
  auto node = StartNode({});
  ASSERT_NE(node, nullptr);
  auto c = node->Client();
  Rng rng(seed_);
  const auto tokens = RandomTokens(100, engine_->config().vocab_size, rng);
  const auto sel = SmallSelection(engine::Policy::kInfLlmV2);
  const std::vector<std::string> one = {node->address};
  struct Case {
    std::string name;
    v1::ShardRequest req;
    std::string expect;
  };
  std::vector<Case> cases;
  {
    auto r = MakeRequest(kvstore::CacheId::Random(), 0, {0, 100}, one, tokens, sel);
    r.set_model("no-such-model");
    cases.push_back({"unknown model", r, "model: unknown model \"no-such-model\""});
  }
  cases.push_back({"wrong rank",
                   MakeRequest(kvstore::CacheId::Random(), 3, {0, 100}, one, tokens, sel),
                   "rank: 3 is outside [0, 1)"});
  cases.push_back({"unaligned bounds",
                   MakeRequest(kvstore::CacheId::Random(), 0, {0, 40, 100},
                               {node->address, node->address}, tokens, sel),
                   "peers: "});
  {
    auto r = MakeRequest(kvstore::CacheId::Random(), 0, {0, 100}, one, tokens, sel);
    r.mutable_tokens()->mutable_ids()->RemoveLast();
    cases.push_back({"short tokens", r, "tokens: 99 ids, but rank 0's shard [0, 100) holds 100"});
  }
  {
    auto r = MakeRequest(kvstore::CacheId::Random(), 0, {0, 100}, one, tokens, sel);
    r.set_job_id("short");
    cases.push_back({"bad job id", r, "job_id"});
  }
  {
    auto r = MakeRequest(kvstore::CacheId::Random(), 0, {0, 100}, one, tokens, sel);
    r.mutable_selection()->set_topk(0);
    cases.push_back({"bad selection", r, "selection"});
  }
  {
    auto r = MakeRequest(kvstore::CacheId::Random(), 0, {0, 100}, one, tokens, sel);
    r.set_measure(true);
    r.set_information_loss_queries(-2);
    cases.push_back({"bad loss sample", r, "information_loss_queries: -2"});
  }
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    ShardCall call = CallExecute(*c, k.req);
    EXPECT_EQ(call.status.code(), absl::StatusCode::kInvalidArgument) << call.status;
    EXPECT_NE(call.status.message().find(k.expect), std::string::npos) << call.status;
    EXPECT_TRUE(call.done.empty());
  }
  // Nothing was left behind.
  auto list = c->ListShards();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->shards_size(), 0);
  // ReadBlocks outside the shard / of an unknown cache.
  v1::FetchBlocksRequest fb;
  fb.set_cache_id(rpc::CacheIdToBytes(kvstore::CacheId::Random()));
  fb.add_ranges()->set_num_blocks(1);
  EXPECT_EQ(c->ReadBlocks(fb, [](const v1::KvChunk&) { return absl::OkStatus(); }).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(WorkerTest, APeerThatDiesMidJobFailsTheOthersNamingIt) {
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < 3; ++i) {
    NodeOptions o;
    o.peer_timeout = std::chrono::seconds(30);
    nodes.push_back(StartNode(o));
    ASSERT_NE(nodes.back(), nullptr);
  }
  Rng rng(seed_);
  const auto tokens = RandomTokens(300, engine_->config().vocab_size, rng);
  const auto sel = SmallSelection(engine::Policy::kInfLlmV2);
  const std::vector<int64_t> bounds = {0, 96, 208, 300};
  const std::vector<std::string> addresses = {nodes[0]->address, nodes[1]->address,
                                              nodes[2]->address};
  const kvstore::CacheId id = kvstore::CacheId::Random();
  // Ranks 0 and 1 start; rank 2's process accepts their posts, then dies before it computes.
  std::vector<ShardCall> calls(2);
  std::vector<std::thread> threads;
  for (int32_t r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto c = nodes[r]->Client();
      calls[r] = CallExecute(*c, MakeRequest(id, r, bounds, addresses, tokens, sel),
                             std::chrono::seconds(60));
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  nodes[2]->server->Shutdown(std::chrono::milliseconds(0));
  for (auto& t : threads) t.join();
  for (int32_t r = 0; r < 2; ++r) {
    SCOPED_TRACE(absl::StrCat("rank ", r));
    EXPECT_FALSE(calls[r].status.ok());
    EXPECT_NE(calls[r].status.message().find("rank 2 (" + nodes[2]->address + ")"),
              std::string::npos)
        << calls[r].status;
    // Well within the 30 s peer deadline: the dead connection is noticed.
    EXPECT_LT(calls[r].seconds, 15.0) << calls[r].status;
    EXPECT_TRUE(calls[r].done.empty());
  }
  std::cout << "[ timing ] failure noticed after " << calls[0].seconds << " / " << calls[1].seconds
            << " s: " << calls[0].status << "\n";
  // The survivors dropped their PENDING caches.
  for (int32_t r = 0; r < 2; ++r) {
    auto list = nodes[r]->Client()->ListShards();
    ASSERT_TRUE(list.ok());
    EXPECT_EQ(list->shards_size(), 0);
  }
}

TEST_F(WorkerTest, AFailingRankAbortsItsPeersFast) {
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < 2; ++i) {
    NodeOptions o;
    o.peer_timeout = std::chrono::seconds(30);
    nodes.push_back(StartNode(o));
    ASSERT_NE(nodes.back(), nullptr);
  }
  Rng rng(seed_);
  auto tokens = RandomTokens(200, engine_->config().vocab_size, rng);
  const auto sel = SmallSelection(engine::Policy::kInfLlmV2);
  const std::vector<int64_t> bounds = {0, 96, 200};
  const std::vector<std::string> addresses = {nodes[0]->address, nodes[1]->address};
  const kvstore::CacheId id = kvstore::CacheId::Random();
  tokens[150] = static_cast<int32_t>(engine_->config().vocab_size);  // rank 1's input is bad
  std::vector<ShardCall> calls(2);
  std::vector<std::thread> threads;
  for (int32_t r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      calls[r] =
          CallExecute(*nodes[r]->Client(), MakeRequest(id, r, bounds, addresses, tokens, sel));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls[1].status.code(), absl::StatusCode::kInvalidArgument) << calls[1].status;
  EXPECT_NE(calls[1].status.message().find("token id"), std::string::npos) << calls[1].status;
  EXPECT_NE(calls[0].status.message().find("rank 1 aborted"), std::string::npos) << calls[0].status;
  EXPECT_LT(calls[0].seconds, 10.0);
}

TEST_F(WorkerTest, TokensAreRequiredWhenConfiguredAndPeersAuthenticate) {
  Rng rng(seed_);
  std::string coordinator_token, peer_token;
  for (int i = 0; i < 32; ++i) {
    coordinator_token += "abcdefghijklmnopqrstuvwxyz012345"[rng.NextU64() % 32];
    peer_token += "ABCDEFGHIJKLMNOPQRSTUVWXYZ678901"[rng.NextU64() % 32];
  }
  auto table = auth::TokenTable::Parse(
      coordinator_token + " coordinator\n" + peer_token + " workers\n", "test tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < 2; ++i) {
    NodeOptions o;
    o.tokens = &*table;
    o.peer_token = peer_token;
    nodes.push_back(StartNode(o));
    ASSERT_NE(nodes.back(), nullptr);
  }
  // No token, and a wrong one: UNAUTHENTICATED before any work.
  for (const std::string& t : {std::string(), std::string(40, 'x')}) {
    auto list = nodes[0]->Client(t)->ListShards();
    EXPECT_EQ(list.status().code(), absl::StatusCode::kUnauthenticated) << list.status();
  }
  const auto tokens = RandomTokens(150, engine_->config().vocab_size, rng);
  const kvstore::CacheId id = kvstore::CacheId::Random();
  auto unauth = RunJob({nodes[0].get(), nodes[1].get()}, id, {0, 64, 150}, tokens,
                       SmallSelection(engine::Policy::kDense));
  EXPECT_EQ(unauth[0].status.code(), absl::StatusCode::kUnauthenticated);
  // With the coordinator's token the ranks talk to each other with the peer token.
  auto ok = RunJob({nodes[0].get(), nodes[1].get()}, id, {0, 64, 150}, tokens,
                   SmallSelection(engine::Policy::kDense), coordinator_token);
  for (const auto& call : ok) EXPECT_TRUE(call.status.ok()) << call.status;
  auto list = nodes[1]->Client(coordinator_token)->ListShards();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->shards_size(), 1);
  EXPECT_EQ(list->shards(0).token_begin(), 64);
}

// The synthetic tiny model with the real Qwen3 tokenizer: Tokenize, and PHSA (whose punctuation
// table comes from the tokenizer) over 2 workers, bit-identical to the single process.
TEST_F(WorkerTest, SyntheticTinyTokenizesAndRunsPhsaBitIdentically) {
  const std::string data = sparsefill::testing::SharedDataDir();
  if (data.empty()) GTEST_SKIP() << "no shared data folder (../shared/data) for the tokenizer";
  auto config = engine::SyntheticModelConfig("tiny");
  ASSERT_TRUE(config.ok()) << config.status();
  engine::SyntheticCheckpointOptions o;
  o.layers = 2;
  o.seed = seed_;
  o.tokenizer_path = data + "/qwen3-tokenizer/tokenizer.json";
  o.tokenizer_required = true;
  const std::string dir = sparsefill::testing::MakeTempDir("worker_tiny");
  ASSERT_TRUE(engine::WriteSyntheticCheckpoint(dir, *config, o).ok());
  auto tiny = engine::Engine::Create(dir, {});
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  NodeOptions no;
  no.models = {{.name = "tiny", .dir = dir}};
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < 2; ++i) {
    nodes.push_back(StartNode(no));
    ASSERT_NE(nodes.back(), nullptr);
  }
  // Tokenize: the model's tokenizer.json. (Bad UTF-8 cannot arrive: protobuf refuses to parse a
  // string field holding it, so it never reaches the handler.)
  const std::string text =
      "It is a truth universally acknowledged, that a single man in possession of a good "
      "fortune, must be in want of a wife. However little known the feelings or views of such "
      "a man may be on his first entering a neighbourhood; this truth is so well fixed!";
  auto c = nodes[0]->Client();
  v1::TokenIds ids;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::TokenizeRequest req;
    req.set_model("tiny");
    req.set_text(text);
    ASSERT_TRUE(c->stub()->Tokenize(&ctx, req, &ids).ok());
  }
  auto want = (*tiny)->tokenizer()->Encode(text);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(std::vector<int32_t>(ids.ids().begin(), ids.ids().end()), *want);
  // PHSA over the text repeated (punctuation on every shard).
  std::vector<int32_t> tokens;
  while (tokens.size() < 200) tokens.insert(tokens.end(), want->begin(), want->end());
  tokens.resize(200);
  const auto sel = SmallSelection(engine::Policy::kPhsa);
  auto plan = (*tiny)->Plan(200, sel);
  ASSERT_TRUE(plan.ok()) << plan.status();
  KeepingSink ref;
  auto single = (*tiny)->Prefill(*plan, tokens, {}, &ref);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_GT(single->sparsity, 0.1);
  const kvstore::CacheId id = kvstore::CacheId::Random();
  auto calls = RunJob({nodes[0].get(), nodes[1].get()}, id, {0, 112, 200}, tokens, sel, "", "tiny");
  for (int32_t li = 0; li < 2; ++li) {
    int64_t selected = 0;
    for (const auto& call : calls) {
      ASSERT_TRUE(call.status.ok()) << call.status;
      selected += call.layers[li].selected_keys();
    }
    EXPECT_EQ(selected, single->layers[li].selected_keys);
  }
  EXPECT_GT(ExpectStoredEquals(*nodes[0], id, ref, 0, 112, 1u << 20, tiny->get()), 0);
  EXPECT_GT(ExpectStoredEquals(*nodes[1], id, ref, 112, 200, 1u << 20, tiny->get()), 0);
}

}  // namespace
}  // namespace sparsefill::worker
