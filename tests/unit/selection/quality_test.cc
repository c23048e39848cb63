// Quality metrics: information loss against a naive computation (over every query and over a
// sample of them), the sample's positions, KL, relative L2, summary.
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/engine/quality.h"
#include "sparsefill/engine/selection.h"
#include "tests/testing/compare.h"
#include "tests/unit/selection/naive_selection.h"

namespace sparsefill {
namespace {

using engine::SelectionConfig;
using testing::MakeProblem;
using testing::Problem;

kernels::AttentionParams Params(const Problem& p, int64_t a, int64_t b) {
  kernels::AttentionParams ap;
  ap.q = p.q.data() + a * p.q_heads * p.head_dim;
  ap.k = p.k.data();
  ap.num_q = b - a;
  ap.q_pos0 = a;
  ap.num_kv = p.num_kv;
  ap.q_heads = p.q_heads;
  ap.kv_heads = p.kv_heads;
  ap.head_dim = p.head_dim;
  ap.scale = p.scale;
  return ap;
}

// Naive information loss in double: mass outside the selected blocks, summed over heads and the
// queries `rows` (indices into sel's queries; all of them when empty).
double NaiveLoss(const Problem& p, const engine::LayerSelection& sel,
                 std::vector<int64_t> rows = {}) {
  const int32_t group = p.q_heads / p.kv_heads, d = p.head_dim;
  if (rows.empty()) {
    for (int64_t i = 0; i < sel.num_q; ++i) rows.push_back(i);
  }
  double total = 0.0;
  for (int64_t i : rows) {
    const int64_t t = sel.q_pos0 + i;
    for (int32_t h = 0; h < p.q_heads; ++h) {
      const int32_t g = h / group;
      const std::vector<int32_t> row = testing::RowOf(sel, g, i);
      std::vector<double> logit(t + 1);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0.0;
        for (int32_t c = 0; c < d; ++c) {
          dot += static_cast<double>(p.q[(t * p.q_heads + h) * d + c]) *
                 p.k[(j * p.kv_heads + g) * d + c];
        }
        logit[j] = dot * p.scale;
        mx = std::max(mx, logit[j]);
      }
      double sum = 0.0, outside = 0.0;
      for (int64_t j = 0; j <= t; ++j) {
        const double e = std::exp(logit[j] - mx);
        sum += e;
        const int32_t b = static_cast<int32_t>(j / sel.block_size);
        if (!std::binary_search(row.begin(), row.end(), b)) outside += e;
      }
      total += outside / sum;
    }
  }
  return total;
}

// PHSA's lists (small budget: some mass is lost) for queries [200, 700) of a 700-token problem:
// a shard that does not start at 0, to cover q_pos0.
absl::StatusOr<engine::LayerSelection> SelectShard(const Problem& p) {
  SelectionConfig cfg = SelectionConfig::Phsa();
  cfg.init_blocks = 1;
  cfg.local_tokens = 32;
  cfg.topk = 6;
  return engine::SelectLayer(cfg, p.Input(200, 700));
}

TEST(QualityTest, InformationLossMatchesNaive) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 700, 4, 2, 32);
  auto sel = SelectShard(p);
  ASSERT_TRUE(sel.ok()) << sel.status();
  auto loss = engine::InformationLoss(Params(p, 200, 700), sel->view());
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_EQ(loss->count, 500 * 4);
  const double want = NaiveLoss(p, *sel);
  EXPECT_GT(want, 0.0);
  EXPECT_NEAR(loss->sum, want, 1e-5 * want + 1e-6);
  EXPECT_NEAR(loss->mean(), want / 2000, 1e-5);
}

TEST(QualityTest, InformationLossIsZeroWhenEverythingIsSelected) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 500, 2, 1, 16);
  auto dense = engine::SelectLayer(SelectionConfig::Dense(), p.Input());
  ASSERT_TRUE(dense.ok());
  auto loss = engine::InformationLoss(Params(p, 0, 500), dense->view());
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_EQ(loss->sum, 0.0);
  EXPECT_EQ(loss->count, 1000);
  // A budget covering every block through a sparse policy too.
  SelectionConfig all = SelectionConfig::Phsa();
  all.topk = 64;
  auto sel = engine::SelectLayer(all, p.Input());
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(engine::InformationLoss(Params(p, 0, 500), sel->view())->sum, 0.0);
}

TEST(QualityTest, InformationLossRejectsBadSelections) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 100, 2, 1, 16);
  std::vector<int32_t> blocks(100 * 3, -1);
  blocks[0] = 0;
  blocks[3 * 10] = 5;  // query 10 sits in block 0 of 16 tokens: block 5 is in its future
  const kernels::BlockSelection sel{blocks.data(), 3, 16};
  auto loss = engine::InformationLoss(Params(p, 0, 100), sel);
  EXPECT_EQ(loss.status().code(), absl::StatusCode::kInvalidArgument);
  blocks[3 * 10] = -7;
  EXPECT_EQ(engine::InformationLoss(Params(p, 0, 100), sel).status().code(),
            absl::StatusCode::kInvalidArgument);
  kernels::AttentionParams bad = Params(p, 0, 100);
  bad.num_q = 101;
  EXPECT_EQ(engine::InformationLoss(bad, sel).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QualityTest, InformationLossOverSomeRowsMatchesNaive) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 700, 4, 2, 32);
  auto sel = SelectShard(p);
  ASSERT_TRUE(sel.ok()) << sel.status();
  // The rows of a stratified sample of the whole prompt that fall in this shard, the first and
  // last row, and a run of neighbours (several tiles of the packed path: more than 16 rows).
  std::vector<int64_t> rows;
  for (int64_t t : engine::InformationLossPositions(700, 90)) {
    if (t >= 200) rows.push_back(t - 200);
  }
  ASSERT_GT(rows.size(), 50u);
  auto loss = engine::InformationLoss(Params(p, 200, 700), sel->view(), rows);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_EQ(loss->count, static_cast<int64_t>(rows.size()) * 4);
  const double want = NaiveLoss(p, *sel, rows);
  EXPECT_GT(want, 0.0);
  EXPECT_NEAR(loss->sum, want, 1e-5 * want + 1e-6);

  const std::vector<int64_t> ends = {0, 499};
  auto two = engine::InformationLoss(Params(p, 200, 700), sel->view(), ends);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->count, 8);
  EXPECT_NEAR(two->sum, NaiveLoss(p, *sel, ends), 1e-5);

  // Every row through the packed path: the loss over all rows.
  std::vector<int64_t> all(500);
  for (int64_t i = 0; i < 500; ++i) all[static_cast<size_t>(i)] = i;
  auto packed = engine::InformationLoss(Params(p, 200, 700), sel->view(), all);
  auto full = engine::InformationLoss(Params(p, 200, 700), sel->view());
  ASSERT_TRUE(packed.ok() && full.ok());
  EXPECT_EQ(packed->count, full->count);
  EXPECT_NEAR(packed->sum, full->sum, 1e-9 * full->sum);

  // No rows: nothing measured.
  auto none = engine::InformationLoss(Params(p, 200, 700), sel->view(), std::vector<int64_t>{});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->count, 0);
  EXPECT_EQ(none->sum, 0.0);
}

TEST(QualityTest, InformationLossRejectsBadRows) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 100, 2, 1, 16);
  auto sel = engine::SelectLayer(SelectionConfig::Dense(), p.Input());
  ASSERT_TRUE(sel.ok());
  for (const std::vector<int64_t>& rows :
       {std::vector<int64_t>{-1}, std::vector<int64_t>{100}, std::vector<int64_t>{5, 3},
        std::vector<int64_t>{4, 4}}) {
    auto loss = engine::InformationLoss(Params(p, 0, 100), sel->view(), rows);
    EXPECT_EQ(loss.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(loss.status().message().find("rows["), std::string::npos) << loss.status();
  }
}

TEST(QualityTest, InformationLossPositionsAreAStratifiedSample) {
  for (const auto& [n, count] : std::vector<std::pair<int64_t, int64_t>>{
           {32768, 1024}, {16384, 1024}, {1000, 7}, {1000, 999}, {611, 97}}) {
    SCOPED_TRACE(::testing::Message() << n << " tokens, " << count << " positions");
    const std::vector<int64_t> pos = engine::InformationLossPositions(n, count);
    ASSERT_EQ(pos.size(), static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      // One position inside each stratum, so sorted and distinct.
      EXPECT_GE(pos[static_cast<size_t>(i)], i * n / count);
      EXPECT_LT(pos[static_cast<size_t>(i)], (i + 1) * n / count);
    }
    EXPECT_EQ(engine::InformationLossPositions(n, count), pos);  // the same on every rank
  }
  // A stride that is a multiple of the block size must not put every position at the same
  // offset inside its block (the diagonal block's share of the loss depends on it).
  const std::vector<int64_t> pos = engine::InformationLossPositions(32768, 1024);
  std::vector<int> offsets(16, 0);
  for (int64_t t : pos) ++offsets[static_cast<size_t>(t % 16)];
  for (int c : offsets) EXPECT_GT(c, 1024 / 16 / 3);
  // Every position when the sample would not be smaller than the prompt.
  for (int64_t count : {int64_t{-1}, int64_t{50}, int64_t{51}}) {
    const std::vector<int64_t> all = engine::InformationLossPositions(50, count);
    ASSERT_EQ(all.size(), 50u);
    for (int64_t t = 0; t < 50; ++t) EXPECT_EQ(all[static_cast<size_t>(t)], t);
  }
  EXPECT_TRUE(engine::InformationLossPositions(0, 10).empty());
}

TEST(QualityTest, NextTokenKl) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const std::vector<float> logits = testing::RandomNormal(3 * 50, rng, 3.0f);
  EXPECT_EQ(*engine::NextTokenKl(logits, logits, 3, 50), 0.0);
  // p = (1/4, 3/4), q = (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2); second row identical.
  const std::vector<float> dense = {0.0f, std::log(3.0f), 1.0f, 2.0f};
  const std::vector<float> sparse = {5.0f, 5.0f, 1.0f, 2.0f};
  const double want = (0.25 * std::log(0.5) + 0.75 * std::log(1.5)) / 2.0;
  EXPECT_NEAR(*engine::NextTokenKl(dense, sparse, 2, 2), want, 1e-7);
  EXPECT_EQ(engine::NextTokenKl(dense, sparse, 3, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(QualityTest, RelativeL2AndSummary) {
  const std::vector<float> ref = {3.0f, 4.0f};
  const std::vector<float> got = {3.0f, 5.0f};
  EXPECT_DOUBLE_EQ(*engine::RelativeL2(got, ref), 0.2);
  EXPECT_EQ(*engine::RelativeL2(ref, ref), 0.0);
  EXPECT_EQ(engine::RelativeL2(got, std::vector<float>{1.0f}).status().code(),
            absl::StatusCode::kInvalidArgument);

  std::vector<engine::LayerQualityStats> layers(2);
  layers[0].selected_keys = 10;
  layers[0].causal_keys = 100;
  layers[0].info_loss = {0.5, 10};
  layers[0].output_rel_l2 = 0.1;
  layers[1].selected_keys = 30;
  layers[1].causal_keys = 100;
  layers[1].info_loss = {2.0, 10};
  layers[1].output_rel_l2 = 0.3;
  EXPECT_DOUBLE_EQ(layers[1].sparsity(), 0.7);
  const engine::QualitySummary s = engine::Summarize(layers);
  EXPECT_EQ(s.layers, 2);
  EXPECT_DOUBLE_EQ(s.sparsity, 0.8);
  EXPECT_DOUBLE_EQ(s.info_loss, 2.5 / 20);
  EXPECT_DOUBLE_EQ(s.max_layer_info_loss, 0.2);
  EXPECT_DOUBLE_EQ(s.mean_output_rel_l2, 0.2);
  EXPECT_NE(s.ToString().find("sparsity=0.8000"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace sparsefill
