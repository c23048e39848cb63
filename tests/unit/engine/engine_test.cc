// The engine on a tiny real checkpoint (written by transformers): sparse paths agree with dense
// when the budget covers every block, the sink sees every layer, quality is measured, and bad
// input is rejected with a clear status.
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/engine/engine.h"
#include "tests/testing/compare.h"

namespace sparsefill::engine {
namespace {

constexpr char kModel[] = "tests/fixtures/hf/qwen3";

std::vector<int32_t> RandomTokens(size_t n, int64_t vocab, Rng& rng) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(vocab));
  return t;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = Engine::Create(kModel, {});
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    seed_ = testing::FreshSeed();
  }
  PrefillResult Run(const std::vector<int32_t>& tokens, const SelectionConfig& sel,
                    PrefillOptions opts = {}, LayerSink* sink = nullptr) {
    auto plan = engine_->Plan(static_cast<int64_t>(tokens.size()), sel);
    EXPECT_TRUE(plan.ok()) << plan.status();
    auto r = engine_->Prefill(*plan, tokens, opts, sink);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : PrefillResult{};
  }
  std::unique_ptr<Engine> engine_;
  uint64_t seed_ = 0;
};

// A sparse config whose budget covers every block: every policy must then equal dense.
SelectionConfig FullBudget(Policy policy, int64_t n) {
  SelectionConfig s = policy == Policy::kNosa ? SelectionConfig::Nosa() : SelectionConfig::InfLlmV2();
  s.block_size = 16;
  s.kernel_size = 32;
  s.kernel_stride = 16;
  s.init_blocks = 1;
  s.local_tokens = 32;
  s.topk = static_cast<int32_t>((n + 15) / 16);
  s.nosa_query_aware = 4;
  s.nosa_observe = 8;
  s.dense_below = 0;
  return s;
}

TEST_F(EngineTest, SparseEqualsDenseWhenBudgetCoversEveryBlock) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  const auto tokens = RandomTokens(197, engine_->config().vocab_size, rng);
  PrefillOptions opts;
  opts.logits_positions = 197;
  const PrefillResult dense = Run(tokens, SelectionConfig::Dense(), opts);
  for (Policy p : {Policy::kInfLlmV2, Policy::kNosa}) {
    SCOPED_TRACE(std::string(PolicyName(p)));
    const PrefillResult sparse = Run(tokens, FullBudget(p, 197), opts);
    EXPECT_FALSE(sparse.plan.dense);
    EXPECT_EQ(sparse.selected_keys, sparse.causal_keys);
    EXPECT_DOUBLE_EQ(sparse.sparsity, 0.0);
    EXPECT_TRUE(testing::RelativeL2Near(sparse.logits, dense.logits, 1e-5));
  }
}

TEST_F(EngineTest, SmallBudgetIsSparseAndMeasured) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  const auto tokens = RandomTokens(600, engine_->config().vocab_size, rng);
  SelectionConfig s = FullBudget(Policy::kInfLlmV2, 600);
  s.topk = 6;  // 1 init + 3 local + 2 scored blocks of 16
  PrefillOptions opts;
  opts.measure = true;
  opts.kl_positions = 16;
  opts.attention_sample_queries = 64;
  const PrefillResult r = Run(tokens, s, opts);
  ASSERT_TRUE(r.measured);
  EXPECT_GT(r.sparsity, 0.5);
  EXPECT_LT(r.sparsity, 1.0);
  EXPECT_GT(r.quality.information_loss, 0.0);
  EXPECT_LT(r.quality.information_loss, 1.0);
  EXPECT_GT(r.quality.hidden_rel_l2, 0.0);
  EXPECT_GE(r.quality.next_token_kl, 0.0);
  EXPECT_EQ(r.quality.kl_positions, 16);
  // The default sample (1024) is larger than the prompt: every query.
  EXPECT_EQ(r.quality.information_loss_queries, 600);
  ASSERT_EQ(r.layers.size(), 2u);
  for (const auto& l : r.layers) {
    EXPECT_GT(l.information_loss, 0.0);
    EXPECT_EQ(l.information_loss_queries, 600);
    EXPECT_GT(l.attention_rel_l2, 0.0);
  }
  EXPECT_EQ(r.logits.size(), static_cast<size_t>(engine_->config().vocab_size));
}

TEST_F(EngineTest, SampledInformationLossSaysHowManyQueriesAndIsCloseToAll) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  const int64_t n = 1500;
  const auto tokens = RandomTokens(n, engine_->config().vocab_size, rng);
  SelectionConfig s = FullBudget(Policy::kInfLlmV2, n);
  s.topk = 6;
  PrefillOptions opts;
  opts.measure = true;
  opts.information_loss_queries = kEveryQuery;
  const PrefillResult all = Run(tokens, s, opts);
  opts.information_loss_queries = 300;
  const PrefillResult sampled = Run(tokens, s, opts);
  ASSERT_TRUE(all.measured && sampled.measured);
  EXPECT_EQ(all.quality.information_loss_queries, n);
  EXPECT_EQ(sampled.quality.information_loss_queries, 300);
  ASSERT_EQ(sampled.layers.size(), all.layers.size());
  for (size_t l = 0; l < all.layers.size(); ++l) {
    EXPECT_EQ(sampled.layers[l].information_loss_queries, 300);
    EXPECT_NEAR(sampled.layers[l].information_loss, all.layers[l].information_loss,
                0.02 * all.layers[l].information_loss);
  }
  EXPECT_GT(all.quality.information_loss, 0.0);
  EXPECT_NEAR(sampled.quality.information_loss, all.quality.information_loss,
              0.01 * all.quality.information_loss);
  // The sample changes nothing else: the same selection, the same dense reference.
  EXPECT_EQ(sampled.selected_keys, all.selected_keys);
  EXPECT_EQ(sampled.quality.hidden_rel_l2, all.quality.hidden_rel_l2);
  EXPECT_EQ(sampled.quality.next_token_kl, all.quality.next_token_kl);
  std::printf("information loss over %lld queries %.6f, over a sample of 300 %.6f\n",
              static_cast<long long>(n), all.quality.information_loss,
              sampled.quality.information_loss);
}

TEST_F(EngineTest, BadInformationLossQueriesAreRejectedByName) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  const auto tokens = RandomTokens(100, engine_->config().vocab_size, rng);
  auto plan = engine_->Plan(100, SelectionConfig::Dense());
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (int32_t bad : {0, -2}) {
    PrefillOptions opts;
    opts.measure = true;
    opts.information_loss_queries = bad;
    auto r = engine_->Prefill(*plan, tokens, opts, nullptr);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("information_loss_queries"), std::string::npos)
        << r.status();
  }
}

TEST_F(EngineTest, DenseMeasuresZeroLoss) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  const auto tokens = RandomTokens(150, engine_->config().vocab_size, rng);
  PrefillOptions opts;
  opts.measure = true;
  const PrefillResult r = Run(tokens, SelectionConfig::Dense(), opts);
  EXPECT_EQ(r.sparsity, 0.0);
  EXPECT_EQ(r.quality.information_loss, 0.0);
  EXPECT_EQ(r.quality.hidden_rel_l2, 0.0);
  EXPECT_NEAR(r.quality.next_token_kl, 0.0, 1e-12);
}

class RecordingSink : public LayerSink {
 public:
  absl::Status OnLayer(const LayerKv& kv) override {
    layers.push_back(kv.layer);
    EXPECT_EQ(kv.token_begin, 0);
    EXPECT_EQ(kv.kv_heads, 2);
    EXPECT_EQ(kv.head_dim, 32);
    EXPECT_EQ(kv.num_blocks, (kv.num_tokens + kv.block_size - 1) / kv.block_size);
    EXPECT_NE(kv.block_importance, nullptr);
    double mass = 0;
    for (int64_t i = 0; i < kv.kv_heads * kv.num_blocks; ++i) mass += kv.block_importance[i];
    EXPECT_GT(mass, 0.0);
    k_sum += kv.k[0] + kv.k[kv.num_tokens * kv.kv_heads * kv.head_dim - 1];
    return absl::OkStatus();
  }
  std::vector<int32_t> layers;
  double k_sum = 0;
};

TEST_F(EngineTest, SinkSeesEveryLayerInOrder) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  const auto tokens = RandomTokens(300, engine_->config().vocab_size, rng);
  RecordingSink sink;
  SelectionConfig s = FullBudget(Policy::kInfLlmV2, 300);
  s.topk = 8;
  Run(tokens, s, {}, &sink);
  EXPECT_EQ(sink.layers, (std::vector<int32_t>{0, 1}));
}

class FailingSink : public LayerSink {
 public:
  absl::Status OnLayer(const LayerKv& kv) override {
    return absl::UnavailableError("tier full");
  }
};

TEST_F(EngineTest, SinkErrorStopsThePrefill) {
  Rng rng(testing::FreshSeed());
  const auto tokens = RandomTokens(40, engine_->config().vocab_size, rng);
  auto plan = engine_->Plan(40, SelectionConfig::Dense());
  ASSERT_TRUE(plan.ok());
  FailingSink sink;
  auto r = engine_->Prefill(*plan, tokens, {}, &sink);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, RejectsBadInput) {
  EXPECT_EQ(engine_->Plan(0, SelectionConfig::Dense()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto too_long = engine_->Plan(engine_->config().max_position_embeddings + 1,
                                SelectionConfig::Dense());
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("max_position_embeddings"), std::string::npos);

  auto plan = engine_->Plan(3, SelectionConfig::Dense());
  ASSERT_TRUE(plan.ok());
  std::vector<int32_t> bad = {1, 2, static_cast<int32_t>(engine_->config().vocab_size)};
  auto r = engine_->Prefill(*plan, bad, {}, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("index 2"), std::string::npos) << r.status();

  std::vector<int32_t> wrong_len = {1, 2};
  EXPECT_EQ(engine_->Prefill(*plan, wrong_len, {}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);

  SelectionConfig phsa = SelectionConfig::Phsa();
  phsa.dense_below = 0;
  auto pplan = engine_->Plan(64, phsa);
  ASSERT_TRUE(pplan.ok()) << pplan.status();
  std::vector<int32_t> toks(64, 5);
  auto pr = engine_->Prefill(*pplan, toks, {}, nullptr);
  EXPECT_EQ(pr.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(pr.status().message().find("tokenizer"), std::string::npos);

  auto missing = Engine::Create("tests/fixtures/no-such-model", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no-such-model"), std::string::npos)
      << missing.status();
}

}  // namespace
}  // namespace sparsefill::engine
