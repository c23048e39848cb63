// Block selection: invariants for every policy, InfLLM-V2 against a naive reimplementation,
// PHSA and NOSA properties, shard consistency.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/engine/selection.h"
#include "sparsefill/kernels/selection.h"
#include "tests/testing/compare.h"
#include "tests/unit/selection/naive_selection.h"

namespace sparsefill {
namespace {

using engine::LayerSelection;
using engine::Policy;
using engine::SelectionConfig;
using testing::MakeProblem;
using testing::Problem;
using testing::RowOf;

// A small InfLLM-V2 geometry (kernel 32, stride 16, B 64 as MiniCPM4) scaled down in budget.
SelectionConfig SmallInfLlm() {
  SelectionConfig c = SelectionConfig::InfLlmV2();
  c.init_blocks = 1;
  c.local_tokens = 128;  // 2 blocks + own
  c.topk = 7;
  c.dense_below = 0;
  return c;
}

SelectionConfig SmallPhsa(float lambda) {
  SelectionConfig c = SelectionConfig::Phsa();
  c.init_blocks = 2;
  c.local_tokens = 64;  // 4 blocks + own
  c.topk = 2 + 5 + 6;
  c.lambda = lambda;
  c.dense_below = 0;
  return c;
}

SelectionConfig SmallNosa() {
  SelectionConfig c = SmallInfLlm();
  c.policy = Policy::kNosa;
  c.topk = 9;
  c.nosa_query_aware = 6;
  c.nosa_observe = 16;
  return c;
}

// Every row: sorted, unique, nothing after the query's block, init and local blocks present,
// exactly min(topk, valid blocks) entries, then -1 padding.
void ExpectInvariants(const LayerSelection& sel, const SelectionConfig& cfg) {
  ASSERT_EQ(sel.blocks.size(), static_cast<size_t>(sel.kv_heads * sel.num_q * sel.max_blocks));
  for (int32_t g = 0; g < sel.kv_heads; ++g) {
    for (int64_t i = 0; i < sel.num_q; ++i) {
      const int64_t t = sel.q_pos0 + i;
      const int64_t qb = t / cfg.block_size;
      const int32_t* row = sel.blocks.data() + (g * sel.num_q + i) * sel.max_blocks;
      const std::vector<int32_t> r = RowOf(sel, g, i);
      SCOPED_TRACE(::testing::Message() << "kv head " << g << " query " << t);
      const int64_t want =
          cfg.policy == Policy::kDense ? qb + 1 : std::min<int64_t>(cfg.topk, qb + 1);
      ASSERT_EQ(static_cast<int64_t>(r.size()), want);
      for (size_t j = r.size(); j < static_cast<size_t>(sel.max_blocks); ++j) {
        ASSERT_EQ(row[j], -1);
      }
      for (size_t j = 1; j < r.size(); ++j) ASSERT_LT(r[j - 1], r[j]);
      ASSERT_GE(r.front(), 0);
      ASSERT_LE(r.back(), qb);
      const std::set<int32_t> s(r.begin(), r.end());
      for (int64_t b = 0; b < std::min<int64_t>(cfg.init_blocks, qb + 1); ++b) {
        ASSERT_TRUE(s.count(static_cast<int32_t>(b))) << "init block " << b;
      }
      for (int64_t b = std::max<int64_t>(0, qb - cfg.local_blocks()); b <= qb; ++b) {
        ASSERT_TRUE(s.count(static_cast<int32_t>(b))) << "local block " << b;
      }
    }
  }
}

TEST(SelectionTest, InvariantsForEveryPolicy) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 1000, 4, 2, 32);
  for (const SelectionConfig& cfg :
       {SmallInfLlm(), SmallPhsa(0.5f), SmallPhsa(1.0f), SmallNosa(), SelectionConfig::Dense()}) {
    SCOPED_TRACE(cfg.ToString());
    auto sel = engine::SelectLayer(cfg, p.Input());
    ASSERT_TRUE(sel.ok()) << sel.status();
    ExpectInvariants(*sel, cfg);
    EXPECT_GT(sel->selected_keys, 0);
    EXPECT_LE(sel->selected_keys, sel->causal_keys);
    EXPECT_EQ(sel->causal_keys, int64_t{2} * 1000 * 1001 / 2);
    // selected_keys recounted from the rows (keys up to each query's position).
    int64_t recount = 0;
    for (int32_t g = 0; g < 2; ++g) {
      for (int64_t t = 0; t < 1000; ++t) {
        for (int32_t b : RowOf(*sel, g, t)) {
          recount += std::min<int64_t>(cfg.block_size, t + 1 - int64_t{b} * cfg.block_size);
        }
      }
    }
    EXPECT_EQ(sel->selected_keys, recount);
    if (cfg.policy == Policy::kDense) {
      EXPECT_EQ(sel->selected_keys, sel->causal_keys);
    } else {
      EXPECT_LT(sel->selected_keys, sel->causal_keys);
    }
  }
}

// The selected set must equal the naive one, except where two candidate scores are within
// float rounding of each other at the top-k boundary.
void ExpectMatchesNaive(const Problem& p, const SelectionConfig& cfg, double lambda) {
  auto sel = engine::SelectLayer(cfg, p.Input());
  ASSERT_TRUE(sel.ok()) << sel.status();
  const std::vector<double> kc =
      testing::NaiveSummaries(p, cfg.kernel_size, cfg.kernel_stride, lambda);
  int64_t exact = 0, rows = 0;
  for (int32_t g = 0; g < p.kv_heads; ++g) {
    for (int64_t t = 0; t < p.num_kv; ++t) {
      const std::vector<double> score = testing::NaiveBlockScores(p, cfg, kc, g, t);
      const int64_t qb = t / cfg.block_size;
      const std::vector<int32_t> want = testing::TopBlocks(score, qb, cfg.topk);
      const std::vector<int32_t> got = RowOf(*sel, g, t);
      ++rows;
      if (got == want) {
        ++exact;
        continue;
      }
      // Boundary score: the lowest naive score among the naive choice.
      double boundary = std::numeric_limits<double>::infinity();
      for (int32_t b : want) boundary = std::min(boundary, score[b]);
      std::vector<int32_t> diff;
      std::set_symmetric_difference(got.begin(), got.end(), want.begin(), want.end(),
                                    std::back_inserter(diff));
      ASSERT_EQ(got.size(), want.size()) << "kv head " << g << " query " << t;
      for (int32_t b : diff) {
        EXPECT_NEAR(score[b], boundary, 1e-5)
            << "kv head " << g << " query " << t << " block " << b << " is not a near tie";
      }
    }
  }
  EXPECT_GE(exact, rows * 99 / 100) << "too many near-tie rows: " << rows - exact << "/" << rows;
}

TEST(SelectionTest, InfLlmV2MatchesNaive) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 900, 4, 2, 32);
  ExpectMatchesNaive(p, SmallInfLlm(), 1.0);
}

TEST(SelectionTest, OtherGeometriesMatchNaive) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 520, 3, 1, 16);
  // Kernel larger than the block (window 2, padding 1) and kernel == stride == block.
  SelectionConfig a = SmallInfLlm();
  a.block_size = 16;
  a.local_tokens = 32;
  a.init_blocks = 2;
  a.topk = 12;
  ExpectMatchesNaive(p, a, 1.0);
  SelectionConfig b = a;
  b.kernel_size = b.kernel_stride = 16;
  ExpectMatchesNaive(p, b, 1.0);
  SelectionConfig c = SmallInfLlm();
  c.kernel_size = 64;  // window 4 + 4 - 1 = 7, padding 3
  c.init_blocks = 0;
  c.local_tokens = 0;
  c.topk = 5;
  ExpectMatchesNaive(p, c, 1.0);
}

TEST(SelectionTest, PhsaMatchesNaive) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 700, 4, 2, 32, 0.15);
  ExpectMatchesNaive(p, SmallPhsa(0.5f), 0.5);
  ExpectMatchesNaive(p, SmallPhsa(0.0f), 0.0);
}

TEST(SelectionTest, PhsaLambdaOneIsInfLlmV2BitIdentical) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 1100, 4, 2, 32, 0.2);
  SelectionConfig phsa = SmallPhsa(1.0f);
  SelectionConfig inf = phsa;
  inf.policy = Policy::kInfLlmV2;
  auto a = engine::SelectLayer(phsa, p.Input());
  auto b = engine::SelectLayer(inf, p.Input());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->blocks, b->blocks);
  // The kernel too: lambda 1 with a punctuation mask is the plain mean, bit for bit.
  kernels::BlockSummaryParams sp;
  sp.k = p.k.data();
  sp.num_kv = p.num_kv;
  sp.kv_heads = p.kv_heads;
  sp.head_dim = p.head_dim;
  sp.kernel_size = sp.kernel_stride = 16;
  const int64_t n = kernels::NumCompressedChunks(p.num_kv, 16, 16) * p.kv_heads * p.head_dim;
  std::vector<float> plain(n), mixed(n, 7.0f);
  sp.summaries = plain.data();
  ASSERT_TRUE(kernels::BlockSummariesRef(sp).ok());
  sp.punct = p.punct.data();
  sp.lambda = 1.0f;
  sp.summaries = mixed.data();
  ASSERT_TRUE(kernels::BlockSummariesRef(sp).ok());
  EXPECT_EQ(0, std::memcmp(plain.data(), mixed.data(), n * sizeof(float)));
}

TEST(SelectionTest, PhsaLambdaBelowOneDiffers) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  Problem p = MakeProblem(rng, 1024, 2, 1, 32, 0.1);
  // Punctuation keys share a direction the queries like: boundary branches become distinct.
  std::vector<float> dir(p.head_dim);
  for (float& x : dir) x = rng.Normal();
  for (int64_t j = 0; j < p.num_kv; ++j) {
    if (!p.punct[j]) continue;
    const float w = 4.0f * rng.Uniform();
    for (int32_t c = 0; c < p.head_dim; ++c) p.k[j * p.head_dim + c] += w * dir[c];
  }
  for (int64_t t = 0; t < p.num_kv; ++t) {
    for (int32_t h = 0; h < p.q_heads; ++h) {
      for (int32_t c = 0; c < p.head_dim; ++c) p.q[(t * 2 + h) * p.head_dim + c] += 0.5f * dir[c];
    }
  }
  auto mixed = engine::SelectLayer(SmallPhsa(0.5f), p.Input());
  auto plain = engine::SelectLayer(SmallPhsa(1.0f), p.Input());
  ASSERT_TRUE(mixed.ok() && plain.ok());
  int64_t differing = 0;
  for (int64_t t = 0; t < p.num_kv; ++t) differing += RowOf(*mixed, 0, t) != RowOf(*plain, 0, t);
  EXPECT_GT(differing, p.num_kv / 20);
}

TEST(SelectionTest, NosaSplitsQueryAwareAndImportance) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 1000, 4, 2, 32);
  const SelectionConfig cfg = SmallNosa();
  auto nosa = engine::SelectLayer(cfg, p.Input());
  ASSERT_TRUE(nosa.ok()) << nosa.status();
  // Importance equals the naive SnapKV-style mass.
  const std::vector<double> imp = testing::NaiveImportance(p, cfg.block_size, cfg.nosa_observe);
  ASSERT_EQ(nosa->block_importance.size(), imp.size());
  for (size_t b = 0; b < imp.size(); ++b) {
    EXPECT_NEAR(nosa->block_importance[b], imp[b], 1e-5 + 1e-4 * imp[b]) << "block " << b;
  }
  SelectionConfig aware = cfg;
  aware.policy = Policy::kInfLlmV2;
  aware.topk = cfg.nosa_query_aware;
  SelectionConfig full = cfg;
  full.policy = Policy::kInfLlmV2;
  auto qa = engine::SelectLayer(aware, p.Input());
  auto inf = engine::SelectLayer(full, p.Input());
  ASSERT_TRUE(qa.ok() && inf.ok());
  const int64_t nb = (p.num_kv + cfg.block_size - 1) / cfg.block_size;
  for (int32_t g = 0; g < p.kv_heads; ++g) {
    for (int64_t t = 0; t < p.num_kv; ++t) {
      SCOPED_TRACE(::testing::Message() << "kv head " << g << " query " << t);
      const std::vector<int32_t> got = RowOf(*nosa, g, t);
      const std::vector<int32_t> prefix = RowOf(*qa, g, t);
      const std::vector<int32_t> whole = RowOf(*inf, g, t);
      // The query-aware part is the score-ranked prefix of the InfLLM-V2 choice.
      ASSERT_TRUE(std::includes(whole.begin(), whole.end(), prefix.begin(), prefix.end()));
      ASSERT_TRUE(std::includes(got.begin(), got.end(), prefix.begin(), prefix.end()));
      // The rest are the best remaining valid blocks by importance.
      std::vector<int32_t> rest;
      std::set_difference(got.begin(), got.end(), prefix.begin(), prefix.end(),
                          std::back_inserter(rest));
      const float* row_imp = nosa->block_importance.data() + g * nb;
      const int64_t qb = t / cfg.block_size;
      for (int64_t b = 0; b <= qb; ++b) {
        if (std::binary_search(got.begin(), got.end(), static_cast<int32_t>(b))) continue;
        for (int32_t r : rest) {
          ASSERT_TRUE(row_imp[r] > row_imp[b] || (row_imp[r] == row_imp[b] && r < b))
              << "unselected block " << b << " outranks " << r;
        }
      }
    }
  }
}

TEST(SelectionTest, BudgetCoveringEveryBlockSelectsAll) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 600, 2, 2, 16);
  for (SelectionConfig cfg : {SmallInfLlm(), SmallPhsa(0.5f), SmallNosa()}) {
    cfg.topk = static_cast<int32_t>((p.num_kv + cfg.block_size - 1) / cfg.block_size) + 3;
    SCOPED_TRACE(cfg.ToString());
    auto sel = engine::SelectLayer(cfg, p.Input());
    ASSERT_TRUE(sel.ok()) << sel.status();
    EXPECT_EQ(sel->selected_keys, sel->causal_keys);
    for (int64_t t = 0; t < p.num_kv; ++t) {
      ASSERT_EQ(RowOf(*sel, 1, t).size(), static_cast<size_t>(t / cfg.block_size + 1));
    }
  }
}

TEST(SelectionTest, ShardsSelectLikeTheWholePrompt) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 960, 4, 2, 32);
  for (const SelectionConfig& cfg : {SmallInfLlm(), SmallPhsa(0.5f), SmallNosa()}) {
    SCOPED_TRACE(cfg.ToString());
    auto whole = engine::SelectLayer(cfg, p.Input());
    ASSERT_TRUE(whole.ok()) << whole.status();
    const int64_t nb = (p.num_kv + cfg.block_size - 1) / cfg.block_size;
    for (auto [a, b] : {std::pair<int64_t, int64_t>{0, 320}, {320, 641}, {641, 960}}) {
      engine::LayerSelectionInput in = p.Input(a, b);
      in.block_importance =
          whole->block_importance.empty() ? nullptr : whole->block_importance.data();
      in.importance_blocks = nb;
      auto part = engine::SelectLayer(cfg, in);
      ASSERT_TRUE(part.ok()) << part.status();
      for (int32_t g = 0; g < p.kv_heads; ++g) {
        for (int64_t i = 0; i < b - a; ++i) {
          ASSERT_EQ(RowOf(*part, g, i), RowOf(*whole, g, a + i)) << "query " << a + i;
        }
      }
    }
  }
}

TEST(SelectionTest, ShardSummariesConcatenate) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 1000, 2, 2, 16);
  const int32_t k = 32, s = 16, row = p.kv_heads * p.head_dim;
  kernels::BlockSummaryParams sp;
  sp.k = p.k.data();
  sp.num_kv = p.num_kv;
  sp.kv_heads = p.kv_heads;
  sp.head_dim = p.head_dim;
  sp.kernel_size = k;
  sp.kernel_stride = s;
  const int64_t n = kernels::NumCompressedChunks(p.num_kv, k, s);
  std::vector<float> whole(n * row);
  sp.summaries = whole.data();
  ASSERT_TRUE(kernels::BlockSummariesRef(sp).ok());
  // Shard [0, 512) and shard [512, 1000) with a halo of k - s keys before it.
  std::vector<float> cat;
  for (auto [pos0, end] : {std::pair<int64_t, int64_t>{0, 512}, {512 - (k - s), 1000}}) {
    const kernels::ChunkRange r = kernels::SummaryChunkRange(pos0, end - pos0, k, s);
    EXPECT_EQ(r.first, static_cast<int64_t>(cat.size() / row));
    std::vector<float> part(r.count * row);
    sp.k = p.k.data() + pos0 * row;
    sp.k_pos0 = pos0;
    sp.num_kv = end - pos0;
    sp.summaries = part.data();
    ASSERT_TRUE(kernels::BlockSummariesRef(sp).ok());
    cat.insert(cat.end(), part.begin(), part.end());
  }
  EXPECT_EQ(cat, whole);
}

TEST(SelectionTest, ValidateNamesTheField) {
  struct Case {
    const char* field;
    SelectionConfig cfg;
  };
  std::vector<Case> cases;
  auto add = [&](const char* field, auto mutate,
                 SelectionConfig base = SelectionConfig::InfLlmV2()) {
    mutate(base);
    cases.push_back({field, base});
  };
  add("block_size", [](SelectionConfig& c) { c.block_size = 40; });
  add("block_size", [](SelectionConfig& c) { c.block_size = 0; });
  add("kernel_size", [](SelectionConfig& c) { c.kernel_size = 24; });
  add("kernel_stride", [](SelectionConfig& c) { c.kernel_stride = -16; });
  add("topk", [](SelectionConfig& c) { c.topk = 32; });  // forced = 1 + 32 + 1
  add("init_blocks", [](SelectionConfig& c) { c.init_blocks = -1; });
  add("local_tokens", [](SelectionConfig& c) { c.local_tokens = -64; });
  add("dense_below", [](SelectionConfig& c) { c.dense_below = -1; });
  add(
      "lambda", [](SelectionConfig& c) { c.lambda = 1.5f; }, SelectionConfig::Phsa());
  add(
      "lambda", [](SelectionConfig& c) { c.lambda = std::nanf(""); }, SelectionConfig::Phsa());
  add(
      "kernel_size", [](SelectionConfig& c) { c.kernel_size = 32; }, SelectionConfig::Phsa());
  add(
      "nosa_query_aware", [](SelectionConfig& c) { c.nosa_query_aware = 65; },
      SelectionConfig::Nosa());
  add(
      "nosa_query_aware", [](SelectionConfig& c) { c.nosa_query_aware = 10; },
      SelectionConfig::Nosa());
  add(
      "nosa_observe", [](SelectionConfig& c) { c.nosa_observe = 0; }, SelectionConfig::Nosa());
  for (const Case& c : cases) {
    const absl::Status s = c.cfg.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.cfg.ToString();
    EXPECT_NE(std::string(s.message()).find(c.field), std::string::npos)
        << s.message() << " should name " << c.field;
  }
  for (const SelectionConfig& c : {SelectionConfig::InfLlmV2(), SelectionConfig::Phsa(),
                                   SelectionConfig::Nosa(), SelectionConfig::Dense()}) {
    EXPECT_TRUE(c.Validate().ok()) << c.ToString() << ": " << c.Validate();
  }
}

TEST(SelectionTest, PresetsPolicyNamesAndDenseThreshold) {
  const SelectionConfig phsa = SelectionConfig::Phsa();
  EXPECT_EQ(phsa.block_size, 16);
  EXPECT_EQ(phsa.forced_blocks(), 8 + 33);
  EXPECT_EQ(phsa.topk, 57);
  EXPECT_FLOAT_EQ(phsa.lambda, 0.5f);
  EXPECT_EQ(SelectionConfig::Nosa().nosa_query_aware + 16, SelectionConfig::Nosa().topk);
  for (Policy pol : {Policy::kDense, Policy::kInfLlmV2, Policy::kPhsa, Policy::kNosa}) {
    auto parsed = engine::ParsePolicy(engine::PolicyName(pol));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, pol);
  }
  EXPECT_EQ(*engine::ParsePolicy("InfLLM-V2"), Policy::kInfLlmV2);
  const auto bad = engine::ParsePolicy("sparse");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("sparse"), std::string::npos);
  EXPECT_TRUE(engine::UsesDense(SelectionConfig::InfLlmV2(), 8191));
  EXPECT_FALSE(engine::UsesDense(SelectionConfig::InfLlmV2(), 8192));
  EXPECT_TRUE(engine::UsesDense(SelectionConfig::Dense(), int64_t{1} << 40));
  EXPECT_NE(SelectionConfig::Nosa().ToString().find("nosa_query_aware=48"), std::string::npos);

  engine::ModelConfig model;
  model.sparse.present = true;
  model.sparse.block_size = 32;
  model.sparse.kernel_size = 32;
  model.sparse.kernel_stride = 16;
  model.sparse.window_size = 512;
  model.sparse.topk = 40;
  model.sparse.dense_len = 4096;
  const SelectionConfig from = SelectionConfig::ForPolicy(Policy::kNosa, model);
  EXPECT_EQ(from.block_size, 32);
  EXPECT_EQ(from.local_blocks(), 16);
  EXPECT_EQ(from.dense_below, 4096);
  EXPECT_EQ(from.nosa_query_aware, 30);
  EXPECT_TRUE(from.Validate().ok()) << from.Validate();
  EXPECT_EQ(SelectionConfig::ForPolicy(Policy::kPhsa, model).block_size, 16);
}

TEST(SelectionTest, BadInputsAreInvalidArgument) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const Problem p = MakeProblem(rng, 300, 4, 2, 16);
  auto expect_invalid = [](const absl::StatusOr<LayerSelection>& r, const char* what) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << what;
  };
  engine::LayerSelectionInput in = p.Input();
  in.num_q = 301;
  expect_invalid(engine::SelectLayer(SmallInfLlm(), in), "queries past the keys");
  in = p.Input();
  in.kv_heads = 3;
  expect_invalid(engine::SelectLayer(SmallInfLlm(), in), "heads");
  in = p.Input();
  in.q = nullptr;
  expect_invalid(engine::SelectLayer(SmallInfLlm(), in), "null q");
  in = p.Input();
  in.punct = nullptr;
  expect_invalid(engine::SelectLayer(SmallPhsa(0.5f), in), "phsa without punct");
  expect_invalid(engine::SelectLayer(SmallNosa(), p.Input(0, 100)), "nosa shard");
  in = p.Input();
  in.scale = std::nanf("");
  expect_invalid(engine::SelectLayer(SmallInfLlm(), in), "scale");
  SelectionConfig bad = SmallInfLlm();
  bad.topk = 2;
  expect_invalid(engine::SelectLayer(bad, p.Input()), "config");
  // The kernel refuses summaries that do not cover the last query.
  kernels::SelectBlocksParams sp;
  std::vector<int32_t> out(2 * 300 * 7);
  sp.q = p.q.data();
  sp.summaries = p.k.data();
  sp.blocks = out.data();
  sp.num_q = 300;
  sp.num_chunks = 3;
  sp.q_heads = 4;
  sp.kv_heads = 2;
  sp.head_dim = 16;
  sp.scale = 0.25f;
  sp.kernel_size = 32;
  sp.kernel_stride = 16;
  sp.block_size = 64;
  sp.init_blocks = 1;
  sp.local_blocks = 2;
  sp.topk = 7;
  EXPECT_EQ(kernels::SelectBlocksRef(sp).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparsefill
