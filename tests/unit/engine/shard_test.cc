// Sharded (context-parallel) prefill over the in-process exchange: 1, 2 and 4 ranks must give
// K/V, block importance, logits and counters bit-identical (memcmp) to the single-process
// Engine::Prefill, for every policy, on lengths that are not multiples of the block size and with
// the sparse path forced on short inputs. Also: measured quality agrees across rank counts, bad
// layouts and failing ranks give clear errors instead of hangs.
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sparsefill/engine/engine.h"
#include "sparsefill/engine/shard.h"
#include "sparsefill/engine/synthetic_checkpoint.h"
#include "sparsefill/kernels/gemm.h"
#include "tests/testing/compare.h"

namespace sparsefill::engine {
namespace {

constexpr char kFixture[] = "tests/fixtures/hf/qwen3";

std::vector<int32_t> RandomTokens(size_t n, int64_t vocab, Rng& rng) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(vocab));
  return t;
}

// Keeps every layer's K, V and block importance of one rank.
class KeepingSink : public LayerSink {
 public:
  struct Layer {
    int64_t token_begin = 0, num_tokens = 0, num_blocks = 0;
    std::vector<float> k, v, importance;
  };
  absl::Status OnLayer(const LayerKv& kv) override {
    Layer l;
    l.token_begin = kv.token_begin;
    l.num_tokens = kv.num_tokens;
    l.num_blocks = kv.num_blocks;
    const int64_t n = kv.num_tokens * kv.kv_heads * kv.head_dim;
    l.k.assign(kv.k, kv.k + n);
    l.v.assign(kv.v, kv.v + n);
    l.importance.assign(kv.block_importance, kv.block_importance + kv.kv_heads * kv.num_blocks);
    kv_heads = kv.kv_heads;
    layers[kv.layer] = std::move(l);
    return absl::OkStatus();
  }
  std::map<int32_t, Layer> layers;
  int32_t kv_heads = 0;
};

// The whole prompt's layer `li` put back together from the ranks' sinks.
KeepingSink::Layer Assemble(const std::vector<KeepingSink>& sinks, int32_t li) {
  KeepingSink::Layer all;
  const int32_t hkv = sinks[0].kv_heads;
  std::vector<std::vector<float>> imp(static_cast<size_t>(hkv));
  for (const KeepingSink& s : sinks) {
    const KeepingSink::Layer& l = s.layers.at(li);
    EXPECT_EQ(l.token_begin, all.num_tokens);
    all.num_tokens += l.num_tokens;
    all.num_blocks += l.num_blocks;
    all.k.insert(all.k.end(), l.k.begin(), l.k.end());
    all.v.insert(all.v.end(), l.v.begin(), l.v.end());
    for (int32_t g = 0; g < hkv; ++g) {
      imp[g].insert(imp[g].end(), l.importance.begin() + g * l.num_blocks,
                    l.importance.begin() + (g + 1) * l.num_blocks);
    }
  }
  for (auto& i : imp) all.importance.insert(all.importance.end(), i.begin(), i.end());
  return all;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct ShardedRun {
  std::vector<absl::StatusOr<ShardPrefillResult>> results;
  std::vector<KeepingSink> sinks;
};

ShardedRun RunSharded(Engine& engine, const PrefillPlan& plan, const std::vector<int32_t>& tokens,
                      const ShardLayout& layout, const PrefillOptions& options) {
  auto exchange = InProcessExchange::Create(layout, {.timeout = std::chrono::seconds(60)});
  EXPECT_TRUE(exchange.ok()) << exchange.status();
  const int32_t world = layout.world_size();
  ShardedRun run;
  run.results.assign(static_cast<size_t>(world), absl::UnknownError("not run"));
  run.sinks.resize(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int32_t r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      const TokenRange range = layout.range(r);
      const std::span<const int32_t> mine(tokens.data() + range.begin,
                                          static_cast<size_t>(range.size()));
      run.results[r] =
          engine.PrefillShard(plan, mine, (*exchange)->endpoint(r), options, &run.sinks[r]);
    });
  }
  for (auto& t : threads) t.join();
  return run;
}

SelectionConfig SmallSparse(Policy policy) {
  SelectionConfig s = policy == Policy::kNosa   ? SelectionConfig::Nosa()
                      : policy == Policy::kPhsa ? SelectionConfig::Phsa()
                                                : SelectionConfig::InfLlmV2();
  if (policy == Policy::kDense) s = SelectionConfig::Dense();
  s.block_size = 16;
  s.kernel_size = policy == Policy::kPhsa ? 16 : 32;  // 16-key halo for InfLLM-V2 / NOSA
  s.kernel_stride = 16;
  s.init_blocks = 1;
  s.local_tokens = 64;
  s.topk = 9;  // 1 init + 5 local + 3 chosen
  s.nosa_query_aware = 7;
  s.nosa_observe = 40;
  s.dense_below = 0;
  return s;
}

class ShardTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto fixture = Engine::Create(kFixture, {});
    ASSERT_TRUE(fixture.ok()) << fixture.status();
    fixture_ = fixture->release();
  }
  static void TearDownTestSuite() {
    delete fixture_;
    delete tiny_;
    fixture_ = tiny_ = nullptr;
  }
  void SetUp() override { seed_ = testing::FreshSeed(); }

  // The synthetic tiny checkpoint (2 layers) with the shared Qwen3 tokenizer, written on first
  // use only (ctest runs every test in its own process).
  static void MakeTiny() {
    const std::string data = testing::SharedDataDir();
    if (data.empty() || tiny_ != nullptr) return;
    auto config = SyntheticModelConfig("tiny");
    ASSERT_TRUE(config.ok()) << config.status();
    SyntheticCheckpointOptions o;
    o.layers = 2;
    o.seed = 7;
    o.tokenizer_path = data + "/qwen3-tokenizer/tokenizer.json";
    o.tokenizer_required = true;
    const std::string dir = testing::MakeTempDir("shard_tiny");
    auto written = WriteSyntheticCheckpoint(dir, *config, o);
    ASSERT_TRUE(written.ok()) << written.status();
    auto tiny = Engine::Create(dir, {});
    ASSERT_TRUE(tiny.ok()) << tiny.status();
    tiny_ = tiny->release();
  }

  // Single process vs `layouts`, everything compared bit for bit.
  void ExpectBitIdentical(Engine& engine, Policy policy, int64_t n,
                          const std::vector<ShardLayout>& layouts) {
    SCOPED_TRACE(absl::StrCat(std::string(PolicyName(policy)), " n=", n, " seed=", seed_));
    Rng rng(seed_);
    const auto tokens = RandomTokens(static_cast<size_t>(n), engine.config().vocab_size, rng);
    auto plan = engine.Plan(n, SmallSparse(policy));
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->dense, policy == Policy::kDense);
    PrefillOptions opts;
    opts.logits_positions = 3;
    KeepingSink single_sink;
    auto single = engine.Prefill(*plan, tokens, opts, &single_sink);
    ASSERT_TRUE(single.ok()) << single.status();
    if (policy != Policy::kDense) {
      EXPECT_GT(single->sparsity, 0.1);  // the sparse path really ran
    }
    for (const ShardLayout& layout : layouts) {
      SCOPED_TRACE(layout.ToString());
      ShardedRun run = RunSharded(engine, *plan, tokens, layout, opts);
      for (int32_t r = 0; r < layout.world_size(); ++r) {
        ASSERT_TRUE(run.results[r].ok()) << "rank " << r << ": " << run.results[r].status();
        const PrefillResult& got = run.results[r]->prompt;
        EXPECT_TRUE(SameBits(got.logits, single->logits)) << "rank " << r << " logits";
        ASSERT_EQ(got.layers.size(), single->layers.size());
        for (size_t li = 0; li < got.layers.size(); ++li) {
          EXPECT_EQ(got.layers[li].selected_keys, single->layers[li].selected_keys);
          EXPECT_EQ(got.layers[li].causal_keys, single->layers[li].causal_keys);
          EXPECT_EQ(got.layers[li].sparsity, single->layers[li].sparsity);
          EXPECT_EQ(got.layers[li].context_sparsity, single->layers[li].context_sparsity);
        }
        EXPECT_EQ(got.selected_keys, single->selected_keys);
        EXPECT_EQ(got.sparsity, single->sparsity);
      }
      // The shards' own counters add up to the prompt's.
      for (size_t li = 0; li < single->layers.size(); ++li) {
        int64_t sel = 0;
        for (const auto& r : run.results) sel += r->layers[li].selected_keys;
        EXPECT_EQ(sel, single->layers[li].selected_keys);
      }
      for (int32_t li = 0; li < engine.config().num_layers; ++li) {
        const KeepingSink::Layer all = Assemble(run.sinks, li);
        const KeepingSink::Layer& ref = single_sink.layers.at(li);
        EXPECT_TRUE(SameBits(all.k, ref.k)) << "layer " << li << " K";
        EXPECT_TRUE(SameBits(all.v, ref.v)) << "layer " << li << " V";
        EXPECT_TRUE(SameBits(all.importance, ref.importance)) << "layer " << li << " importance";
      }
    }
  }

  static std::vector<ShardLayout> Layouts(int64_t n, std::vector<std::vector<int64_t>> extra) {
    std::vector<ShardLayout> out;
    for (int32_t w : {1, 2, 4}) {
      auto l = ShardLayout::Even(n, w, 16);
      EXPECT_TRUE(l.ok()) << l.status();
      out.push_back(*l);
    }
    for (auto& bounds : extra) {
      auto l = ShardLayout::FromBounds(bounds, 16);
      EXPECT_TRUE(l.ok()) << l.status();
      out.push_back(*l);
    }
    return out;
  }

  static Engine* fixture_;
  static Engine* tiny_;
  uint64_t seed_ = 0;
};

Engine* ShardTest::fixture_ = nullptr;
Engine* ShardTest::tiny_ = nullptr;

TEST_F(ShardTest, FixtureRanksAreBitIdenticalForEveryPolicy) {
  // 16-token first and last shards: the halo and the logits rows cross ranks.
  for (Policy p : {Policy::kDense, Policy::kInfLlmV2, Policy::kNosa}) {
    ExpectBitIdentical(*fixture_, p, 1203, Layouts(1203, {{0, 16, 32, 1200, 1203}}));
  }
  ExpectBitIdentical(*fixture_, Policy::kNosa, 301, Layouts(301, {{0, 288, 301}}));
}

TEST_F(ShardTest, SyntheticTinyRanksAreBitIdenticalWithPhsa) {
  MakeTiny();
  if (tiny_ == nullptr) GTEST_SKIP() << "no shared data folder (../shared/data) for the tokenizer";
  for (Policy p : {Policy::kPhsa, Policy::kInfLlmV2, Policy::kDense}) {
    ExpectBitIdentical(*tiny_, p, 517, Layouts(517, {}));
  }
}

TEST_F(ShardTest, MeasuredQualityAgreesAcrossRanks) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  const int64_t n = 611;
  const auto tokens = RandomTokens(n, fixture_->config().vocab_size, rng);
  auto plan = fixture_->Plan(n, SmallSparse(Policy::kInfLlmV2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  PrefillOptions opts;
  opts.measure = true;
  opts.kl_positions = 20;
  opts.attention_sample_queries = 100;
  // Every query, and a sample whose positions fall on every rank (the same ones on each).
  for (int32_t loss_queries : {kEveryQuery, 97}) {
    SCOPED_TRACE(loss_queries);
    opts.information_loss_queries = loss_queries;
    auto single = fixture_->Prefill(*plan, tokens, opts, nullptr);
    ASSERT_TRUE(single.ok()) << single.status();
    ASSERT_TRUE(single->measured);
    EXPECT_GT(single->quality.information_loss, 0.0);
    EXPECT_EQ(single->quality.information_loss_queries, loss_queries > 0 ? loss_queries : n);
    auto layout = ShardLayout::FromBounds({0, 160, 432, 608, 611}, 16);  // KL rows on 2 ranks
    ASSERT_TRUE(layout.ok());
    ShardedRun run = RunSharded(*fixture_, *plan, tokens, *layout, opts);
    for (auto& r : run.results) {
      ASSERT_TRUE(r.ok()) << r.status();
      const Quality& q = r->prompt.quality;
      const Quality& ref = single->quality;
      EXPECT_TRUE(r->prompt.measured);
      EXPECT_EQ(q.information_loss_queries, ref.information_loss_queries);
      // Sums combined in another grouping: equal up to double rounding.
      EXPECT_NEAR(q.information_loss, ref.information_loss, 1e-12 + 1e-9 * ref.information_loss);
      EXPECT_NEAR(q.attention_rel_l2, ref.attention_rel_l2, 1e-9 * ref.attention_rel_l2);
      EXPECT_NEAR(q.hidden_rel_l2, ref.hidden_rel_l2, 1e-9 * ref.hidden_rel_l2);
      EXPECT_EQ(q.next_token_kl, ref.next_token_kl);  // the same logits, the same rows
      EXPECT_TRUE(SameBits(r->prompt.logits, single->logits));
    }
  }
}

// Shards hand the GEMMs any number of rows: each row's result must not depend on it (OpenBLAS's
// small-matrix kernels broke that before GemmF32 padded small calls).
TEST(GemmRowsTest, ARowsResultDoesNotDependOnTheRowCount) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const int64_t m = 1203;
  for (int64_t k : {32, 64, 256}) {
    for (int64_t n : {1, 32, 64, 128, 512, 1536}) {
      const std::vector<float> a = testing::RandomNormal(static_cast<size_t>(m * k), rng);
      const std::vector<float> b = testing::RandomNormal(static_cast<size_t>(n * k), rng);
      std::vector<float> all(static_cast<size_t>(m * n));
      kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, m, n, k, 0.125f, a.data(), k,
                       b.data(), k, 0.0f, all.data(), n);
      for (int64_t rows = 1; rows <= 40; ++rows) {
        for (int64_t r0 : {int64_t{0}, int64_t{16}, m - rows}) {
          std::vector<float> part(static_cast<size_t>(rows * n));
          kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, rows, n, k, 0.125f,
                           a.data() + r0 * k, k, b.data(), k, 0.0f, part.data(), n);
          ASSERT_EQ(std::memcmp(part.data(), all.data() + r0 * n, part.size() * sizeof(float)), 0)
              << "k " << k << " n " << n << " rows " << rows << " at " << r0;
        }
      }
    }
  }
}

TEST(ShardLayoutTest, RejectsBadBoundsAndFindsOwners) {
  EXPECT_EQ(ShardLayout::FromBounds({0, 20, 40}, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardLayout::FromBounds({0, 32, 32, 40}, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardLayout::FromBounds({5, 40}, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardLayout::Even(40, 4, 16).status().code(), absl::StatusCode::kInvalidArgument);
  auto l = ShardLayout::Even(100, 3, 16);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->bounds(), (std::vector<int64_t>{0, 32, 64, 100}));
  EXPECT_EQ(l->OwnerOf(0), 0);
  EXPECT_EQ(l->OwnerOf(63), 1);
  EXPECT_EQ(l->OwnerOf(64), 2);
  EXPECT_EQ(l->OwnerOf(99), 2);
}

TEST(InProcessExchangeTest, GathersFetchesAndTimesOut) {
  auto layout = ShardLayout::FromBounds({0, 16, 40}, 16);
  ASSERT_TRUE(layout.ok());
  auto x = InProcessExchange::Create(*layout, {.timeout = std::chrono::milliseconds(200)});
  ASSERT_TRUE(x.ok());
  ShardExchange& r0 = (*x)->endpoint(0);
  ShardExchange& r1 = (*x)->endpoint(1);
  // Rank 1 asks for rank 0's layer 3 before it exists: DeadlineExceeded naming both.
  const TokenRange want[] = {{2, 5}, {10, 12}};
  auto early = r1.FetchKv(3, 0, want);
  EXPECT_EQ(early.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(early.status().message().find("layer 3 from rank 0"), std::string::npos)
      << early.status();
  std::vector<float> k(16 * 2), v(16 * 2);
  for (size_t i = 0; i < k.size(); ++i) k[i] = float(i), v[i] = -float(i);
  ASSERT_TRUE(r0.PublishLayer(3, 2, k, v).ok());
  auto got = r1.FetchKv(3, 0, want);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->tokens, 5);
  EXPECT_EQ(got->k, (std::vector<float>{4, 5, 6, 7, 8, 9, 20, 21, 22, 23}));
  EXPECT_EQ(got->v[0], -4.0f);
  const TokenRange outside[] = {{14, 17}};
  EXPECT_EQ(r1.FetchKv(3, 0, outside).status().code(), absl::StatusCode::kInvalidArgument);
  // All-gather in rank order; a lone rank times out.
  std::string from1;
  std::thread t([&] {
    auto g = r1.AllGather(0, "x", "b");
    if (g.ok()) from1 = (*g)[0] + (*g)[1];
  });
  auto g0 = r0.AllGather(0, "x", "a");
  t.join();
  ASSERT_TRUE(g0.ok()) << g0.status();
  EXPECT_EQ((*g0)[0] + (*g0)[1], "ab");
  EXPECT_EQ(from1, "ab");
  EXPECT_EQ(r0.AllGather(1, "x", "a").status().code(), absl::StatusCode::kDeadlineExceeded);
  // An abort wakes the others with the failing rank's name.
  r1.Abort(absl::InternalError("disk on fire"));
  auto after = r0.AllGather(2, "y", "");
  EXPECT_EQ(after.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(after.status().message().find("rank 1 aborted: disk on fire"), std::string::npos);
}

TEST_F(ShardTest, RejectsMismatchedShardsAndAFailingRankStopsThePeers) {
  Rng rng(seed_);
  const int64_t n = 100;
  const auto tokens = RandomTokens(n, fixture_->config().vocab_size, rng);
  auto plan = fixture_->Plan(n, SmallSparse(Policy::kInfLlmV2));
  ASSERT_TRUE(plan.ok());
  auto layout = ShardLayout::FromBounds({0, 48, 100}, 16);
  ASSERT_TRUE(layout.ok());
  auto x = InProcessExchange::Create(*layout, {.timeout = std::chrono::seconds(60)});
  ASSERT_TRUE(x.ok());
  // Rank 1 passes the wrong number of tokens; rank 0 must fail fast, not wait 60 s.
  absl::StatusOr<ShardPrefillResult> r0 = absl::UnknownError(""), r1 = r0;
  std::thread t([&] {
    r1 = fixture_->PrefillShard(*plan, std::span<const int32_t>(tokens).subspan(48, 10),
                                (*x)->endpoint(1), {}, nullptr);
  });
  const auto t0 = std::chrono::steady_clock::now();
  r0 = fixture_->PrefillShard(*plan, std::span<const int32_t>(tokens).subspan(0, 48),
                              (*x)->endpoint(0), {}, nullptr);
  t.join();
  EXPECT_EQ(r1.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r1.status().message().find("rank 1 holds tokens [48, 100)"), std::string::npos)
      << r1.status();
  EXPECT_FALSE(r0.ok());
  EXPECT_NE(r0.status().message().find("rank 1 aborted"), std::string::npos) << r0.status();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
  // A plan for another length than the layout.
  auto other = fixture_->Plan(90, SmallSparse(Policy::kInfLlmV2));
  ASSERT_TRUE(other.ok());
  auto one = ShardLayout::FromBounds({0, 100}, 16);
  auto x1 = InProcessExchange::Create(*one, {});
  auto bad = fixture_->PrefillShard(*other, tokens, (*x1)->endpoint(0), {}, nullptr);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparsefill::engine
