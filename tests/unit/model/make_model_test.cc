// make-model and the synthetic checkpoints behind it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/engine/checkpoint.h"
#include "sparsefill/engine/synthetic_checkpoint.h"
#include "tests/testing/compare.h"
#include "tests/unit/model/model_test_util.h"

namespace sparsefill::engine {
namespace {

namespace fs = std::filesystem;
using testing::ReadBytes;

std::string MakeModelBin() { return sparsefill::testing::BinDir() + "/make-model"; }

// Runs make-model; returns its exit status and its stdout in `out`.
int RunMakeModel(const std::string& args, std::string* out = nullptr) {
  const std::string cmd = absl::StrCat(MakeModelBin(), " ", args, " 2>&1");
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int rc = ::pclose(p);
  if (out != nullptr) *out = text;
  return rc;
}

std::vector<std::string> SortedFiles(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void ExpectSameDirectories(const std::string& a, const std::string& b) {
  const auto fa = SortedFiles(a);
  ASSERT_EQ(fa, SortedFiles(b));
  for (const std::string& f : fa) {
    EXPECT_TRUE(ReadBytes(a + "/" + f) == ReadBytes(b + "/" + f)) << f << " differs";
  }
}

// The named shape's features at a size a unit test can write: same architecture, RoPE scaling,
// tying, sparse_config; small dimensions.
ModelConfig Shrunk(ModelConfig c) {
  c.vocab_size = 320;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = c.num_kv_heads < c.num_heads / 4 ? 1 : 2;  // keep MiniCPM's deep GQA
  c.head_dim = 16;
  if (c.rope_scaling.type == RopeScaling::Type::kLongRope) {
    c.rope_scaling.short_factor.resize(8);
    c.rope_scaling.long_factor.resize(8);
  }
  return c;
}

TEST(MakeModel, BinaryIsDeterministicAndLoads) {
  ASSERT_TRUE(fs::exists(MakeModelBin())) << MakeModelBin() << " not built";
  const uint64_t seed = sparsefill::testing::FreshSeed() % 100000;
  SCOPED_TRACE(seed);
  const std::string a = sparsefill::testing::MakeTempDir("mm-a");
  const std::string b = sparsefill::testing::MakeTempDir("mm-b");
  std::string out;
  const std::string args = absl::StrCat("--shape tiny --layers 1 --seed ", seed, " --threads ");
  ASSERT_EQ(RunMakeModel(absl::StrCat(args, "2 --out ", a), &out), 0) << out;
  EXPECT_NE(out.find("model.safetensors"), std::string::npos) << out;
  ASSERT_EQ(RunMakeModel(absl::StrCat(args, "1 --out ", b), &out), 0) << out;
  ExpectSameDirectories(a, b);

  auto cp = Checkpoint::Open(a);
  ASSERT_TRUE(cp.ok()) << cp.status();
  ModelConfig want = *SyntheticModelConfig("tiny");
  want.num_layers = 1;
  EXPECT_EQ((*cp)->config(), want);
  EXPECT_EQ((*cp)->config().vocab_size, 151936);
  EXPECT_EQ((*cp)->config().dtype, DType::kBF16);
  const std::string shared = sparsefill::testing::SharedDataDir();
  if (!shared.empty()) {
    // The default tokenizer is ../shared/data's Qwen3 one, and its ids fit the tiny vocabulary.
    ASSERT_NE((*cp)->TokenizerPath(), "");
    EXPECT_TRUE(ReadBytes((*cp)->TokenizerPath()) ==
                ReadBytes(shared + "/qwen3-tokenizer/tokenizer.json"));
  }
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(MakeModel, BinaryRejectsBadArguments) {
  std::string out;
  EXPECT_NE(RunMakeModel("--shape qwen9-1t --out /tmp/never", &out), 0);
  EXPECT_NE(out.find("qwen9-1t"), std::string::npos) << out;
  EXPECT_NE(RunMakeModel("--shape tiny --dtype int4 --out /tmp/never", &out), 0);
  EXPECT_NE(RunMakeModel("--shape tiny", &out), 0);  // no --out
  EXPECT_NE(RunMakeModel("--frobnicate", &out), 0);
  EXPECT_FALSE(fs::exists("/tmp/never"));
}

TEST(MakeModel, DryRunListsEveryNamedShape) {
  for (const std::string& shape : SyntheticShapeNames()) {
    std::string out;
    ASSERT_EQ(RunMakeModel("--dry-run --shape " + shape, &out), 0) << out;
    EXPECT_NE(out.find("would write"), std::string::npos) << out;
  }
}

struct ShapeFacts {
  const char* name;
  Architecture arch;
  double total_params_b;  // published sizes
  double non_embedding_b;
  size_t shards_at_4gib;
};

TEST(SyntheticCheckpoint, NamedShapesHaveThePublishedSizes) {
  for (const ShapeFacts& f : {ShapeFacts{"tiny", Architecture::kQwen3, 0.042, 0.00315, 1},
                              ShapeFacts{"qwen3-0.6b", Architecture::kQwen3, 0.596, 0.44, 1},
                              ShapeFacts{"qwen3-8b", Architecture::kQwen3, 8.19, 6.95, 4},
                              ShapeFacts{"llama3-8b", Architecture::kLlama, 8.03, 6.98, 4},
                              ShapeFacts{"minicpm4-8b", Architecture::kMiniCpm, 8.19, 7.58, 4}}) {
    SCOPED_TRACE(f.name);
    auto c = SyntheticModelConfig(f.name);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->arch, f.arch);
    EXPECT_NEAR(static_cast<double>(c->TotalParams()) * 1e-9, f.total_params_b,
                0.01 * f.total_params_b);
    EXPECT_NEAR(static_cast<double>(c->NonEmbeddingParams()) * 1e-9, f.non_embedding_b,
                0.01 * f.non_embedding_b);
    auto back = ParseModelConfig(ModelConfigToJson(*c), "config.json");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, *c);

    // The dry spec listing: every parameter in exactly one tensor, bf16, sharded at 4 GiB.
    const std::vector<TensorSpec> specs = ExpectedTensors(*c);
    int64_t params = 0;
    for (const TensorSpec& s : specs) {
      EXPECT_EQ(s.dtype, DType::kBF16);
      params += s.numel();
    }
    EXPECT_EQ(params, c->TotalParams());
    const ShardPlan plan = PlanShards(specs, uint64_t{4} << 30);
    EXPECT_EQ(plan.shards.size(), f.shards_at_4gib);
    EXPECT_EQ(plan.total_bytes, static_cast<uint64_t>(params) * 2);
    for (const auto& shard : plan.shards) EXPECT_LE(shard.data_bytes, uint64_t{4} << 30);
  }
  EXPECT_EQ(SyntheticModelConfig("qwen9").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SyntheticCheckpoint, EveryNamedShapesFeaturesLoad) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  for (const std::string& shape : SyntheticShapeNames()) {
    SCOPED_TRACE(shape);
    for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
      const std::string dir = sparsefill::testing::MakeTempDir("mm-shape");
      SyntheticCheckpointOptions o;
      o.seed = seed;
      o.dtype = dtype;
      o.max_shard_bytes = 64 << 10;  // several shards + index
      const ModelConfig config = Shrunk(*SyntheticModelConfig(shape));
      auto r = WriteSyntheticCheckpoint(dir, config, o);
      ASSERT_TRUE(r.ok()) << r.status();
      auto cp = Checkpoint::Open(dir);
      ASSERT_TRUE(cp.ok()) << cp.status();
      EXPECT_EQ((*cp)->config(), r->config);
      EXPECT_EQ((*cp)->config().dtype, dtype);
      EXPECT_EQ((*cp)->config().sparse, config.sparse);
      EXPECT_EQ((*cp)->config().rope_scaling, config.rope_scaling);
      EXPECT_GT((*cp)->Files().size(), 1u);
      fs::remove_all(dir);
    }
  }
}

TEST(SyntheticCheckpoint, ThreadsAndShardingDoNotChangeValues) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  const ModelConfig config = Shrunk(*SyntheticModelConfig("qwen3-8b"));
  SyntheticCheckpointOptions o;
  o.seed = seed;
  const std::string a = sparsefill::testing::MakeTempDir("mm-t1");
  const std::string b = sparsefill::testing::MakeTempDir("mm-t4");
  o.threads = 1;
  ASSERT_TRUE(WriteSyntheticCheckpoint(a, config, o).ok());
  o.threads = 4;
  ASSERT_TRUE(WriteSyntheticCheckpoint(b, config, o).ok());
  ExpectSameDirectories(a, b);

  // A sharded copy holds the same tensors, byte for byte.
  const std::string c = sparsefill::testing::MakeTempDir("mm-sh");
  o.max_shard_bytes = 50000;
  ASSERT_TRUE(WriteSyntheticCheckpoint(c, config, o).ok());
  auto ca = Checkpoint::Open(a);
  auto cc = Checkpoint::Open(c);
  ASSERT_TRUE(ca.ok() && cc.ok());
  EXPECT_EQ((*ca)->Files().size(), 1u);
  EXPECT_GT((*cc)->Files().size(), 1u);
  for (const std::string& name : (*ca)->TensorNamesInFiles()) {
    auto x = (*ca)->Tensor(name);
    auto y = (*cc)->Tensor(name);
    ASSERT_TRUE(x.ok() && y.ok()) << name;
    ASSERT_EQ(x->nbytes, y->nbytes);
    EXPECT_EQ(std::memcmp(x->data, y->data, x->nbytes), 0) << name;
  }

  // Another seed, other weights.
  const std::string d = sparsefill::testing::MakeTempDir("mm-seed");
  o.seed = seed + 1;
  o.max_shard_bytes = uint64_t{1} << 30;
  ASSERT_TRUE(WriteSyntheticCheckpoint(d, config, o).ok());
  EXPECT_FALSE(ReadBytes(a + "/model.safetensors") == ReadBytes(d + "/model.safetensors"));
  for (const auto& dir : {a, b, c, d}) fs::remove_all(dir);
}

TEST(SyntheticCheckpoint, FillDependsOnlyOnElementIndexAndHasTheRightStatistics) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const TensorFillFn fill = SyntheticFill(seed);
  struct Case {
    const char* name;
    double mean, stddev;
  };
  for (const Case& c : {Case{"model.layers.3.mlp.up_proj.weight", 0.0, 0.02},
                        Case{"model.layers.0.input_layernorm.weight", 1.0, 0.02},
                        Case{"model.layers.1.self_attn.q_proj.bias", 0.0, 0.01}}) {
    SCOPED_TRACE(c.name);
    const TensorSpec spec{c.name, DType::kF32, {7, 4099}};  // not a multiple of the block
    const size_t n = static_cast<size_t>(spec.numel());
    std::vector<float> whole(n), pieces(n);
    ASSERT_TRUE(fill(spec, 0, spec.numel(), whole.data()).ok());
    for (size_t at = 0; at < n;) {
      const size_t len = std::min<size_t>(n - at, 1 + rng.NextU64() % 9000);
      ASSERT_TRUE(
          fill(spec, static_cast<int64_t>(at), static_cast<int64_t>(len), pieces.data() + at).ok());
      at += len;
    }
    EXPECT_EQ(std::memcmp(whole.data(), pieces.data(), n * 4), 0);
    double sum = 0, sq = 0;
    for (float v : whole) {
      ASSERT_TRUE(std::isfinite(v));
      sum += v;
      sq += v * v;
    }
    const double mean = sum / static_cast<double>(n);
    const double sd = std::sqrt(sq / static_cast<double>(n) - mean * mean);
    EXPECT_NEAR(mean, c.mean, 5.0 * c.stddev / std::sqrt(static_cast<double>(n)));
    EXPECT_NEAR(sd, c.stddev, 0.03 * c.stddev);
  }
  // Different tensor names give different values.
  std::vector<float> p(64), q(64);
  ASSERT_TRUE(fill({"a.weight", DType::kF32, {64}}, 0, 64, p.data()).ok());
  ASSERT_TRUE(fill({"b.weight", DType::kF32, {64}}, 0, 64, q.data()).ok());
  EXPECT_NE(p, q);
  EXPECT_EQ(fill({"a.weight", DType::kF32, {64}}, 60, 5, p.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

// make-model's promise is "same arguments, same bytes, on any machine and in every version":
// these bit patterns were produced on two different machines (2 and 16 threads). A change here
// changes every synthetic checkpoint, and with it every fixture made from one.
TEST(SyntheticCheckpoint, GeneratorIsPinned) {
  const TensorFillFn fill = SyntheticFill(42);
  uint32_t f32[6];
  ASSERT_TRUE(fill({"model.layers.0.mlp.up_proj.weight", DType::kF32, {5000}}, 4094, 6, f32).ok());
  EXPECT_EQ(std::vector<uint32_t>(f32, f32 + 6),
            (std::vector<uint32_t>{0xbbda68f6, 0x3b94e148, 0xbcc23000, 0xbbdcd70a, 0x3c878148,
                                   0x3c47d5c3}));
  uint16_t bf16[6];
  ASSERT_TRUE(fill({"model.norm.weight", DType::kBF16, {64}}, 0, 6, bf16).ok());
  EXPECT_EQ(std::vector<uint16_t>(bf16, bf16 + 6),
            (std::vector<uint16_t>{0x3f80, 0x3f84, 0x3f7f, 0x3f80, 0x3f7f, 0x3f81}));
}

TEST(SyntheticCheckpoint, TokenizerIsCopiedOnlyWhenItsIdsFit) {
  const std::string shared = sparsefill::testing::SharedDataDir();
  if (shared.empty()) GTEST_SKIP() << "no shared data folder (../shared/data)";
  const std::string tok = shared + "/qwen3-tokenizer/tokenizer.json";
  auto max_id = TokenizerMaxId(tok);
  ASSERT_TRUE(max_id.ok()) << max_id.status();
  EXPECT_EQ(*max_id, 151668);  // 151643 vocabulary entries + 26 added tokens

  const std::string dir = sparsefill::testing::MakeTempDir("mm-tok");
  SyntheticCheckpointOptions o;
  o.tokenizer_path = tok;
  ModelConfig small = Shrunk(*SyntheticModelConfig("llama3-8b"));  // vocab 320
  auto r = WriteSyntheticCheckpoint(dir, small, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(fs::exists(dir + "/tokenizer.json"));
  EXPECT_NE(r->tokenizer_note.find("do not fit"), std::string::npos) << r->tokenizer_note;

  o.tokenizer_required = true;
  auto bad = WriteSyntheticCheckpoint(dir, small, o);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);

  small.vocab_size = 151936;
  auto good = WriteSyntheticCheckpoint(dir, small, o);
  ASSERT_TRUE(good.ok()) << good.status();
  auto cp = Checkpoint::Open(dir);
  ASSERT_TRUE(cp.ok()) << cp.status();
  EXPECT_EQ((*cp)->TokenizerPath(), dir + "/tokenizer.json");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sparsefill::engine
