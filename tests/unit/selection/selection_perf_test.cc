// 16K tokens, 2 KV heads x 2 query heads, head_dim 64: SelectLayer for every policy and the
// information loss, timed (printed and recorded as test properties) and checked for sanity.
// Targets on 2 cores: SelectLayer < 2 s, InformationLoss < 3 s.
#include <chrono>
#include <cstdio>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/engine/quality.h"
#include "sparsefill/engine/selection.h"
#include "tests/testing/compare.h"
#include "tests/unit/selection/naive_selection.h"

namespace sparsefill {
namespace {

using engine::Policy;
using engine::SelectionConfig;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

TEST(SelectionPerfTest, SixteenKTokens) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const testing::Problem p = testing::MakeProblem(rng, 16384, 4, 2, 64);
  const SelectionConfig phsa = SelectionConfig::Phsa();
  for (const SelectionConfig& cfg : {phsa, SelectionConfig::InfLlmV2(), SelectionConfig::Nosa()}) {
    const auto start = std::chrono::steady_clock::now();
    auto sel = engine::SelectLayer(cfg, p.Input());
    const double secs = Seconds(start);
    ASSERT_TRUE(sel.ok()) << sel.status();
    std::printf("SelectLayer %-8s 16K: %.3f s, sparsity %.4f\n",
                std::string(engine::PolicyName(cfg.policy)).c_str(), secs, sel->sparsity());
    ::testing::Test::RecordProperty("select_ms_" + std::string(engine::PolicyName(cfg.policy)),
                                    static_cast<int>(secs * 1e3));
    // Every late query keeps exactly topk blocks: the whole budget is used.
    for (int32_t g = 0; g < 2; ++g) {
      EXPECT_EQ(testing::RowOf(*sel, g, 16383).size(), static_cast<size_t>(cfg.topk));
      EXPECT_EQ(testing::RowOf(*sel, g, 16383).back(), 16383 / cfg.block_size);
    }
    EXPECT_GT(sel->sparsity(), 0.5);

    if (cfg.policy != Policy::kPhsa) continue;
    kernels::AttentionParams ap;
    ap.q = p.q.data();
    ap.k = p.k.data();
    ap.num_q = ap.num_kv = p.num_kv;
    ap.q_heads = 4;
    ap.kv_heads = 2;
    ap.head_dim = 64;
    ap.scale = p.scale;
    const auto t0 = std::chrono::steady_clock::now();
    auto loss = engine::InformationLoss(ap, sel->view());
    const double loss_secs = Seconds(t0);
    ASSERT_TRUE(loss.ok()) << loss.status();
    std::printf("InformationLoss phsa 16K x 4 heads: %.3f s, mean loss %.4f\n", loss_secs,
                loss->mean());
    ::testing::Test::RecordProperty("info_loss_ms", static_cast<int>(loss_secs * 1e3));
    EXPECT_EQ(loss->count, 4 * 16384);
    EXPECT_GT(loss->mean(), 0.0);
    EXPECT_LT(loss->mean(), 1.0);
  }
}

}  // namespace
}  // namespace sparsefill
