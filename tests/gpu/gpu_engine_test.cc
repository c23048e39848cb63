// The cuda engine against the cpu engine on the same synthetic checkpoint and prompt: logits,
// every layer's K/V and block importance (what the KV store receives) and the per-layer key
// counts. The cuda backend computes in bf16 (weights, activations, K/V) with fp32 accumulation,
// the cpu one in fp32, so values agree to bf16 accuracy and selections agree except where bf16
// rounding flips near-ties (the counts are compared within a small tolerance for that reason).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/engine/cuda/cuda_runner.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/engine/engine.h"
#include "sparsefill/engine/synthetic_checkpoint.h"
#include "tests/gpu/gpu_testing.h"
#include "tests/testing/compare.h"

namespace sparsefill::engine {
namespace {

class KeepingSink : public LayerSink {
 public:
  struct Layer {
    std::vector<float> k, v, importance;
  };
  absl::Status OnLayer(const LayerKv& kv) override {
    Layer l;
    const int64_t n = kv.num_tokens * kv.kv_heads * kv.head_dim;
    l.k.assign(kv.k, kv.k + n);
    l.v.assign(kv.v, kv.v + n);
    l.importance.assign(kv.block_importance, kv.block_importance + kv.kv_heads * kv.num_blocks);
    layers[kv.layer] = std::move(l);
    return absl::OkStatus();
  }
  std::map<int32_t, Layer> layers;
};

// `forced_only`: top-k = the forced blocks (init + local window + own block), so that no score
// decides anything and both backends must select exactly the same blocks. Otherwise 3-6 blocks
// are chosen by score, and the random-weight model's near-uniform attention makes many scores
// near-ties that bf16 rounding can flip.
SelectionConfig Small(Policy policy, bool forced_only) {
  SelectionConfig s = policy == Policy::kNosa   ? SelectionConfig::Nosa()
                      : policy == Policy::kPhsa ? SelectionConfig::Phsa()
                                                : SelectionConfig::InfLlmV2();
  if (policy == Policy::kDense) return SelectionConfig::Dense();
  s.block_size = policy == Policy::kPhsa ? 16 : 64;
  s.kernel_size = policy == Policy::kPhsa ? 16 : 32;
  s.kernel_stride = 16;
  s.init_blocks = 1;
  s.local_tokens = policy == Policy::kPhsa ? 128 : 256;
  s.topk = policy == Policy::kPhsa ? 16 : 10;
  s.nosa_query_aware = 8;
  if (forced_only) {
    s.topk = s.forced_blocks();
    s.nosa_query_aware = s.topk;
  }
  s.nosa_observe = 40;
  s.dense_below = 0;
  return s;
}

class CudaEngineTest : public ::testing::TestWithParam<Policy> {
 protected:
  static void SetUpTestSuite() {
    cuda::EnableCudaBackend();
    if (!testing::HasCudaDevice()) return;
    auto config = SyntheticModelConfig("tiny");
    ASSERT_TRUE(config.ok()) << config.status();
    SyntheticCheckpointOptions o;
    o.layers = 3;
    o.seed = testing::FreshSeed();
    const std::string data = testing::SharedDataDir();
    if (!data.empty()) o.tokenizer_path = data + "/qwen3-tokenizer/tokenizer.json";
    dir_ = new std::string(testing::MakeTempDir("cuda_engine"));
    auto written = WriteSyntheticCheckpoint(*dir_, *config, o);
    ASSERT_TRUE(written.ok()) << written.status();
    auto cpu = Engine::Create(*dir_, {.backend = "cpu"});
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = cpu->release();
    auto gpu = Engine::Create(*dir_, {.backend = "cuda"});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = gpu->release();
  }
  static void TearDownTestSuite() {
    delete cpu_;
    delete gpu_;
    delete dir_;
    cpu_ = gpu_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!testing::HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
    ASSERT_NE(gpu_, nullptr);
  }
  static Engine* cpu_;
  static Engine* gpu_;
  static std::string* dir_;
};
Engine* CudaEngineTest::cpu_ = nullptr;
Engine* CudaEngineTest::gpu_ = nullptr;
std::string* CudaEngineTest::dir_ = nullptr;

struct Compared {
  absl::StatusOr<PrefillResult> want, got, again;
  KeepingSink cpu_sink, gpu_sink;
};

void RunBoth(Engine& cpu, Engine& gpu, Policy policy, bool forced_only, Compared& out) {
  const uint64_t seed = testing::FreshSeed();
  const int64_t n = 3001;  // not a multiple of any block or tile
  SCOPED_TRACE(absl::StrCat(std::string(PolicyName(policy)), " n=", n, " seed=", seed));
  Rng rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  // Ids the tokenizer knows, so that PHSA's punctuation table applies to real pieces.
  for (auto& t : tokens) t = static_cast<int32_t>(rng.NextU64() % 150000);
  auto plan = cpu.Plan(n, Small(policy, forced_only));
  ASSERT_TRUE(plan.ok()) << plan.status();
  PrefillOptions opts;
  opts.logits_positions = 4;
  out.want = cpu.Prefill(*plan, tokens, opts, &out.cpu_sink);
  ASSERT_TRUE(out.want.ok()) << out.want.status();
  out.got = gpu.Prefill(*plan, tokens, opts, &out.gpu_sink);
  ASSERT_TRUE(out.got.ok()) << out.got.status();
  // Without a sink the logits are the same bits: offload does not touch the computation.
  out.again = gpu.Prefill(*plan, tokens, opts, nullptr);
  ASSERT_TRUE(out.again.ok()) << out.again.status();
}

// Dense attention, and every sparse policy with its selection decided by the forced blocks: the
// same computation on both backends, so bf16 accuracy throughout.
TEST_P(CudaEngineTest, MatchesCpuEngine) {
  const Policy policy = GetParam();
  if (policy == Policy::kPhsa && cpu_->tokenizer() == nullptr) {
    GTEST_SKIP() << "phsa needs the shared tokenizer (../shared/data) for its punctuation table";
  }
  Compared r;
  RunBoth(*cpu_, *gpu_, policy, /*forced_only=*/true, r);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(testing::RelativeL2Near(r.got->logits, r.want->logits, 2e-2)) << "logits";
  EXPECT_EQ(r.again->logits, r.got->logits);
  ASSERT_EQ(r.got->layers.size(), r.want->layers.size());
  for (size_t li = 0; li < r.want->layers.size(); ++li) {
    SCOPED_TRACE(absl::StrCat("layer ", li));
    EXPECT_EQ(r.got->layers[li].causal_keys, r.want->layers[li].causal_keys);
    EXPECT_EQ(r.got->layers[li].selected_keys, r.want->layers[li].selected_keys);
    // The kernel computes at least what was selected (its CTAs' unions); the CPU engine, none.
    EXPECT_EQ(r.want->layers[li].computed_keys, 0);
    if (policy == Policy::kDense) {
      EXPECT_EQ(r.got->layers[li].computed_keys, 0);
    } else {
      EXPECT_GE(r.got->layers[li].computed_keys, r.got->layers[li].selected_keys);
    }
    const auto& g = r.gpu_sink.layers.at(static_cast<int32_t>(li));
    const auto& c = r.cpu_sink.layers.at(static_cast<int32_t>(li));
    EXPECT_TRUE(testing::RelativeL2Near(g.k, c.k, 2e-2)) << "K";
    EXPECT_TRUE(testing::RelativeL2Near(g.v, c.v, 2e-2)) << "V";
    EXPECT_TRUE(testing::RelativeL2Near(g.importance, c.importance, 5e-2)) << "importance";
  }
  if (policy != Policy::kDense) {
    EXPECT_GT(r.got->sparsity, 0.3);
  }
}

// Scored selection: layer 0's K/V are computed before any selection and must match; the key
// counts agree within 1%; the logits, downstream of near-tie flips, within 20%.
TEST_P(CudaEngineTest, ScoredSelectionAgrees) {
  const Policy policy = GetParam();
  if (policy == Policy::kDense) GTEST_SKIP() << "no selection in the dense policy";
  if (policy == Policy::kPhsa && cpu_->tokenizer() == nullptr) {
    GTEST_SKIP() << "phsa needs the shared tokenizer (../shared/data) for its punctuation table";
  }
  Compared r;
  RunBoth(*cpu_, *gpu_, policy, /*forced_only=*/false, r);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(testing::RelativeL2Near(r.got->logits, r.want->logits, 0.2)) << "logits";
  EXPECT_EQ(r.again->logits, r.got->logits);
  EXPECT_TRUE(testing::RelativeL2Near(r.gpu_sink.layers.at(0).k, r.cpu_sink.layers.at(0).k, 2e-2));
  EXPECT_TRUE(testing::RelativeL2Near(r.gpu_sink.layers.at(0).v, r.cpu_sink.layers.at(0).v, 2e-2));
  for (size_t li = 0; li < r.want->layers.size(); ++li) {
    SCOPED_TRACE(absl::StrCat("layer ", li));
    const double w = double(r.want->layers[li].selected_keys);
    EXPECT_NEAR(double(r.got->layers[li].selected_keys), w, 0.01 * w);
  }
  EXPECT_GT(r.got->sparsity, 0.3);
}

// PrefillOptions::profile_stages: every stage of the policy is timed, the stages add up to no
// more than the prefill's wall time, and the computation is the unprofiled one, bit for bit.
TEST_P(CudaEngineTest, ProfiledStagesCoverThePrefill) {
  const Policy policy = GetParam();
  if (policy == Policy::kPhsa && cpu_->tokenizer() == nullptr) {
    GTEST_SKIP() << "phsa needs the shared tokenizer (../shared/data) for its punctuation table";
  }
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(absl::StrCat(std::string(PolicyName(policy)), " seed=", seed));
  Rng rng(seed);
  std::vector<int32_t> tokens(2000);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.NextU64() % 150000);
  auto plan = gpu_->Plan(static_cast<int64_t>(tokens.size()), Small(policy, false));
  ASSERT_TRUE(plan.ok()) << plan.status();
  PrefillOptions opts;
  KeepingSink plain_sink, profiled_sink;
  auto plain = gpu_->Prefill(*plan, tokens, opts, &plain_sink);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(plain->stages.empty());
  opts.profile_stages = true;
  auto profiled = gpu_->Prefill(*plan, tokens, opts, &profiled_sink);
  ASSERT_TRUE(profiled.ok()) << profiled.status();
  EXPECT_EQ(profiled->logits, plain->logits);

  std::vector<std::string> want = {"wait for an offload slot", "norm + qkv + rope",
                                   "block importance"};
  if (policy == Policy::kDense) {
    want.push_back("dense attention");
  } else {
    want.insert(want.end(), {"block summaries", "selection", "sparse attention"});
  }
  want.insert(want.end(), {"o-proj + residual", "mlp"});
  std::vector<std::string> got;
  double total = 0;
  for (const StageTime& st : profiled->stages) {
    got.push_back(st.name);
    EXPECT_GE(st.seconds, 0.0) << st.name;
    total += st.seconds;
  }
  EXPECT_EQ(got, want);
  EXPECT_GT(total, 0.0);
  EXPECT_LE(total, profiled->seconds);
}

INSTANTIATE_TEST_SUITE_P(Policies, CudaEngineTest,
                         ::testing::Values(Policy::kDense, Policy::kInfLlmV2, Policy::kPhsa,
                                           Policy::kNosa),
                         [](const auto& info) { return std::string(PolicyName(info.param)); });

TEST(CudaEngineErrors, ShardedPrefillIsRefusedClearly) {
  if (!testing::HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
  cuda::EnableCudaBackend();
  auto config = SyntheticModelConfig("tiny");
  ASSERT_TRUE(config.ok());
  SyntheticCheckpointOptions o;
  o.layers = 1;
  const std::string dir = testing::MakeTempDir("cuda_engine_err");
  ASSERT_TRUE(WriteSyntheticCheckpoint(dir, *config, o).ok());
  auto gpu = Engine::Create(dir, {.backend = "cuda"});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->backend_name(), "cuda");
  auto plan = (*gpu)->Plan(100, SelectionConfig::Dense());
  ASSERT_TRUE(plan.ok());
  std::vector<int32_t> bad(100, 0);
  bad[7] = static_cast<int32_t>((*gpu)->config().vocab_size);
  auto r = (*gpu)->Prefill(*plan, bad, {}, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparsefill::engine
