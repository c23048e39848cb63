#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "sparsefill/engine/model_config.h"
#include "sparsefill/engine/synthetic_checkpoint.h"
#include "tests/testing/compare.h"

namespace sparsefill::engine {
namespace {

// Qwen/Qwen3-8B config.json as published.
constexpr char kQwen3_8B[] = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 12288,
  "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
  "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})";

// Qwen/Qwen2.5-7B-Instruct: no attention_bias key (Qwen2 always has q/k/v bias), no head_dim.
constexpr char kQwen2_7B[] = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
  "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584,
  "initializer_range": 0.02, "intermediate_size": 18944, "max_position_embeddings": 32768,
  "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 28,
  "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "transformers_version": "4.43.1", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 152064})";

// meta-llama/Llama-3.1-8B: llama3 rope scaling, eos as a list.
constexpr char kLlama31_8B[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
  "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})";

// openbmb/MiniCPM4-8B with the model card's LongRoPE factors and InfLLM-V2 sparse_config.
std::string MiniCpm4Json(const std::vector<double>& factors) {
  const std::string f = absl::StrCat(
      "[",
      absl::StrJoin(
          factors, ", ",
          [](std::string* out, double x) { absl::StrAppend(out, absl::StrFormat("%.17g", x)); }),
      "]");
  return absl::StrCat(R"({
  "architectures": ["MiniCPMForCausalLM"], "bos_token_id": 1, "eos_token_id": [2, 73440],
  "hidden_act": "silu", "initializer_range": 0.1, "hidden_size": 4096,
  "intermediate_size": 16384, "max_position_embeddings": 32768, "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
  "rope_scaling": {"rope_type": "longrope", "long_factor": )",
                      f, R"(, "short_factor": )", f, R"(,
                   "original_max_position_embeddings": 32768},
  "torch_dtype": "bfloat16", "transformers_version": "4.46.3", "use_cache": true,
  "vocab_size": 73448, "scale_emb": 12, "dim_model_base": 256, "scale_depth": 1.4,
  "rope_theta": 10000.0,
  "sparse_config": {"kernel_size": 32, "kernel_stride": 16, "init_blocks": 1, "block_size": 64,
                    "window_size": 2048, "topk": 64, "use_nope": false, "dense_len": 8192}})");
}

void ExpectInvalid(const std::string& json, const std::string& needle) {
  auto c = ParseModelConfig(json, "dir/config.json");
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(c.status().message()).find("dir/config.json"), std::string::npos)
      << c.status();
  EXPECT_NE(std::string(c.status().message()).find(needle), std::string::npos) << c.status();
}

TEST(ModelConfig, ParsesQwen3) {
  auto c = ParseModelConfig(kQwen3_8B, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kQwen3);
  EXPECT_EQ(c->model_type, "qwen3");
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 12288);
  EXPECT_EQ(c->num_layers, 36);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->group_size(), 4);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->vocab_size, 151936);
  EXPECT_EQ(c->max_position_embeddings, 40960);
  EXPECT_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_TRUE(c->qk_norm);
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_FALSE(c->sparse.present);
  EXPECT_EQ(c->bos_token_id, 151643);
  EXPECT_EQ(c->eos_token_id, 151645);
  // Qwen3-8B model card: 6.95B non-embedding parameters, 8.2B in all.
  EXPECT_NEAR(static_cast<double>(c->NonEmbeddingParams()) * 1e-9, 6.95, 0.01);
  EXPECT_NEAR(static_cast<double>(c->TotalParams()) * 1e-9, 8.19, 0.01);
  EXPECT_EQ(c->ResidualScale(), 1.0);
  EXPECT_EQ(c->FinalHiddenScale(), 1.0);
  EXPECT_EQ(c->EmbeddingScale(), 1.0);
}

TEST(ModelConfig, ParsesQwen2WithImplicitBiasAndHeadDim) {
  auto c = ParseModelConfig(kQwen2_7B, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kQwen2);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_EQ(c->head_dim, 128);  // 3584 / 28
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->vocab_size, 152064);
  // Qwen2.5-7B model card: 6.53B non-embedding parameters.
  EXPECT_NEAR(static_cast<double>(c->NonEmbeddingParams()) * 1e-9, 6.53, 0.01);
}

TEST(ModelConfig, ParsesLlama31RopeScaling) {
  auto c = ParseModelConfig(kLlama31_8B, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kLlama);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_id, 128001);  // the first of the list
  EXPECT_NEAR(static_cast<double>(c->TotalParams()) * 1e-9, 8.03, 0.01);
}

TEST(ModelConfig, ParsesMiniCpm4SparseConfigAndLongRope) {
  auto shape = SyntheticModelConfig("minicpm4-8b");
  ASSERT_TRUE(shape.ok());
  const std::vector<double> factors = shape->rope_scaling.long_factor;
  ASSERT_EQ(factors.size(), 64u);
  auto c = ParseModelConfig(MiniCpm4Json(factors), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kMiniCpm);
  EXPECT_EQ(c->model_type, "minicpm");  // derived: MiniCPM4's config has no model_type key
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->vocab_size, 73448);
  EXPECT_EQ(c->scale_emb, 12.0);
  EXPECT_EQ(c->scale_depth, 1.4);
  EXPECT_EQ(c->dim_model_base, 256);
  EXPECT_EQ(c->EmbeddingScale(), 12.0);
  EXPECT_DOUBLE_EQ(c->ResidualScale(), 1.4 / std::sqrt(32.0));
  EXPECT_DOUBLE_EQ(c->FinalHiddenScale(), 256.0 / 4096.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLongRope);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_EQ(c->rope_scaling.long_factor, factors);
  EXPECT_EQ(c->rope_scaling.short_factor, factors);
  ASSERT_TRUE(c->sparse.present);
  EXPECT_EQ(c->sparse.kernel_size, 32);
  EXPECT_EQ(c->sparse.kernel_stride, 16);
  EXPECT_EQ(c->sparse.init_blocks, 1);
  EXPECT_EQ(c->sparse.block_size, 64);
  EXPECT_EQ(c->sparse.window_size, 2048);
  EXPECT_EQ(c->sparse.topk, 64);
  EXPECT_FALSE(c->sparse.use_nope);
  EXPECT_EQ(c->sparse.dense_len, 8192);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_id, 2);
  // The named shape is the same model.
  EXPECT_EQ(*c, *shape);
}

TEST(ModelConfig, MiniCpmDefaultsFollowMiniCpmConfig) {
  auto c = ParseModelConfig(R"({"architectures": ["MiniCPMForCausalLM"], "vocab_size": 10,
      "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 4,
      "num_attention_heads": 2, "max_position_embeddings": 64})",
                            "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->scale_emb, 1.0);
  EXPECT_EQ(c->scale_depth, 1.0);
  EXPECT_EQ(c->dim_model_base, 1);
  EXPECT_DOUBLE_EQ(c->ResidualScale(), 0.5);
  EXPECT_DOUBLE_EQ(c->FinalHiddenScale(), 1.0 / 16.0);
  EXPECT_EQ(c->num_kv_heads, 2);  // defaults to the head count
}

TEST(ModelConfig, ReadsTransformers5RopeParameters) {
  auto c = ParseModelConfig(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 512,
      "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
      "dtype": "float32", "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0,
      "low_freq_factor": 1.0, "original_max_position_embeddings": 256, "rope_theta": 500000.0,
      "rope_type": "llama3"}, "tie_word_embeddings": true})",
                            "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dtype, DType::kF32);
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 256);
  EXPECT_TRUE(c->tie_word_embeddings);
}

TEST(ModelConfig, RoundTripsThroughJson) {
  std::vector<ModelConfig> configs;
  for (const std::string& shape : SyntheticShapeNames()) {
    auto c = SyntheticModelConfig(shape);
    ASSERT_TRUE(c.ok());
    configs.push_back(*c);
  }
  for (const char* text : {kQwen3_8B, kQwen2_7B, kLlama31_8B}) {
    auto c = ParseModelConfig(text, "config.json");
    ASSERT_TRUE(c.ok());
    configs.push_back(*c);
  }
  ModelConfig odd = configs[0];  // every optional field away from its default
  odd.dtype = DType::kF16;
  odd.rope_scaling.type = RopeScaling::Type::kLinear;
  odd.rope_scaling.factor = 2.5;
  odd.rms_norm_eps = 1.234567890123e-7;
  odd.bos_token_id = -1;
  configs.push_back(odd);
  ModelConfig lr = *SyntheticModelConfig("minicpm4-8b");
  lr.rope_scaling.attention_factor = 1.25;
  lr.max_position_embeddings = 131072;
  lr.sparse.use_nope = true;
  lr.sparse.dense_len = -1;
  configs.push_back(lr);
  for (const ModelConfig& c : configs) {
    SCOPED_TRACE(ArchitectureName(c.arch));
    const std::string json = ModelConfigToJson(c);
    auto back = ParseModelConfig(json, "config.json");
    ASSERT_TRUE(back.ok()) << back.status() << "\n" << json;
    EXPECT_EQ(*back, c) << json;
  }
}

TEST(ModelConfig, RejectsUnknownArchitecture) {
  ExpectInvalid(R"({"architectures": ["GPT2LMHeadModel"], "vocab_size": 10})", "GPT2LMHeadModel");
  ExpectInvalid(R"({"model_type": "gpt2", "vocab_size": 10})", "gpt2");
}

TEST(ModelConfig, RejectsMalformedFields) {
  const std::string base = R"("architectures": ["Qwen3ForCausalLM"], "vocab_size": 10,
      "intermediate_size": 32, "num_hidden_layers": 2, "max_position_embeddings": 64)";
  ExpectInvalid("{not json", "not valid JSON");
  ExpectInvalid("[1, 2]", "object");
  ExpectInvalid("{" + base + R"(, "hidden_size": 16})", "num_attention_heads");  // missing
  ExpectInvalid("{" + base + R"(, "hidden_size": "16", "num_attention_heads": 2})", "hidden_size");
  ExpectInvalid("{" + base + R"(, "hidden_size": -16, "num_attention_heads": 2})", "hidden_size");
  ExpectInvalid("{" + base + R"(, "hidden_size": 16.5, "num_attention_heads": 2})", "hidden_size");
  ExpectInvalid("{" + base + R"(, "hidden_size": 16, "num_attention_heads": 3})",
                "num_attention_heads");  // 3 does not divide 16
  // A head_dim derived from hidden_size has the bounds of one given outright (the fuzzer's
  // round trip found 78598 accepted here and refused once written as head_dim).
  ExpectInvalid("{" + base + R"(, "hidden_size": 78598, "num_attention_heads": 1})",
                "gives head_dim 78598, outside [2, 65536]");
  ExpectInvalid("{" + base + R"(, "hidden_size": 2, "num_attention_heads": 2})",
                "gives head_dim 1, outside [2, 65536]");
  ExpectInvalid(
      "{" + base + R"(, "hidden_size": 16, "num_attention_heads": 4, "num_key_value_heads": 3})",
      "num_key_value_heads");
  ExpectInvalid(
      "{" + base + R"(, "hidden_size": 16, "num_attention_heads": 2, "torch_dtype": "int8"})",
      "torch_dtype");
  ExpectInvalid("{" + base +
                    R"(, "hidden_size": 16, "num_attention_heads": 2,
                       "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})",
                "rope_scaling.rope_type");
  ExpectInvalid("{" + base +
                    R"(, "hidden_size": 16, "num_attention_heads": 2,
                       "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})",
                "rope_scaling.low_freq_factor");
  ExpectInvalid("{" + base +
                    R"(, "hidden_size": 16, "num_attention_heads": 2,
                       "rope_scaling": {"type": "longrope", "short_factor": [1, 2, 3],
                                        "long_factor": [1, 2, 3, 4]}})",
                "short_factor");
  ExpectInvalid("{" + base +
                    R"(, "hidden_size": 16, "num_attention_heads": 2,
                       "sparse_config": {"topk": "many"}})",
                "sparse_config.topk");
  ExpectInvalid("{" + base + R"(, "hidden_size": 16, "num_attention_heads": 2, "rope_theta": -1})",
                "rope_theta");
  ExpectInvalid("{" + base +
                    R"(, "hidden_size": 16, "num_attention_heads": 2,
                       "vocab_size": 99999999999999999999})",
                "vocab_size");
  ExpectInvalid(R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 16000000,
      "hidden_size": 16000000, "intermediate_size": 16000000, "num_hidden_layers": 60000,
      "num_attention_heads": 60000, "head_dim": 60000, "max_position_embeddings": 64})",
                "parameters");
}

// Found by tests/fuzz/model_config_fuzzer: LongRoPE with an original length of 1 parsed, and its
// attention scaling, sqrt(1 + log(factor) / log(1)), came out infinite.
TEST(ModelConfig, RejectsLongRopeOriginalLengthOne) {
  const std::string base = R"("architectures": ["Qwen3ForCausalLM"], "vocab_size": 10,
      "intermediate_size": 32, "num_hidden_layers": 2, "max_position_embeddings": 64,
      "hidden_size": 16, "num_attention_heads": 2)";
  const std::string factors = R"("short_factor": [1, 1, 1, 1], "long_factor": [1, 2, 3, 4])";
  ExpectInvalid("{" + base + R"(, "rope_scaling": {"rope_type": "longrope", )" + factors +
                    R"(, "original_max_position_embeddings": 1}})",
                "rope_scaling.original_max_position_embeddings");
  ExpectInvalid("{" + base + R"(, "original_max_position_embeddings": 1,
                    "rope_scaling": {"rope_type": "longrope", )" +
                    factors + "}}",
                "field \"original_max_position_embeddings\": must be at least 2");
  // An explicit attention_factor needs no logarithm; it still loads, and RoPE stays finite.
  auto c =
      ParseModelConfig("{" + base + R"(, "rope_scaling": {"rope_type": "longrope", )" + factors +
                           R"(, "original_max_position_embeddings": 1,
                                "attention_factor": 1.5}})",
                       "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  float scaling = 0;
  RopeInvFreq(*c, 8, &scaling);
  EXPECT_EQ(scaling, 1.5f);
}

// ---- RoPE: expected values computed by hand from transformers' modeling_rope_utils formulas.

ModelConfig RopeConfig(int head_dim, double theta) {
  ModelConfig c;
  c.head_dim = head_dim;
  c.rope_theta = theta;
  c.max_position_embeddings = 4096;
  return c;
}

void ExpectFreqs(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-6 * std::abs(want[i])) << "i=" << i;
  }
}

TEST(RopeInvFreq, Default) {
  float att = 0.0f;
  // 1 / 10000^(2i/8) = 1, 1/10, 1/100, 1/1000.
  ExpectFreqs(RopeInvFreq(RopeConfig(8, 10000.0), 100, &att), {1.0, 0.1, 0.01, 0.001});
  EXPECT_EQ(att, 1.0f);
  const auto q = RopeInvFreq(RopeConfig(128, 1e6), 100, nullptr);
  ASSERT_EQ(q.size(), 64u);
  EXPECT_NEAR(q[1], 8.058421877615e-01, 1e-7);
  EXPECT_NEAR(q[2], 6.493816315762e-01, 1e-7);
  EXPECT_NEAR(q[63], 1.240937760752e-06, 1e-13);
}

TEST(RopeInvFreq, Linear) {
  ModelConfig c = RopeConfig(8, 10000.0);
  c.rope_scaling.type = RopeScaling::Type::kLinear;
  c.rope_scaling.factor = 4.0;
  ExpectFreqs(RopeInvFreq(c, 100, nullptr), {0.25, 0.025, 0.0025, 0.00025});
}

TEST(RopeInvFreq, Llama3CoversAllThreeBands) {
  ModelConfig c = RopeConfig(8, 500000.0);
  c.rope_scaling.type = RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  // Wavelengths 6.3 and 167 (< 2048: kept), 4443 (between: smoothed), 118143 (> 8192: / 8).
  const double f2 = 1.0 / std::sqrt(500000.0);
  const double smooth = (8192.0 / (2.0 * std::numbers::pi / f2) - 1.0) / 3.0;
  const double want2 = (1.0 - smooth) * f2 / 8.0 + smooth * f2;
  ExpectFreqs(RopeInvFreq(c, 100, nullptr),
              {1.0, 3.760603093086e-02, 5.248461609930e-04, 6.647869871181e-06});
  EXPECT_NEAR(want2, 5.248461609930e-04, 1e-15);
}

TEST(RopeInvFreq, LongRopePicksFactorsBySequenceLength) {
  ModelConfig c = RopeConfig(8, 10000.0);
  c.max_position_embeddings = 16384;
  c.rope_scaling.type = RopeScaling::Type::kLongRope;
  c.rope_scaling.short_factor = {1, 2, 3, 4};
  c.rope_scaling.long_factor = {5, 6, 7, 8};
  c.rope_scaling.original_max_position_embeddings = 4096;
  float att = 0.0f;
  ExpectFreqs(RopeInvFreq(c, 4096, &att), {1.0, 0.05, 3.333333333333e-03, 2.5e-04});
  // sqrt(1 + ln(16384 / 4096) / ln(4096))
  EXPECT_NEAR(att, 1.080123449735, 1e-6);
  ExpectFreqs(RopeInvFreq(c, 4097, &att), {0.2, 1.666666666667e-02, 1.428571428571e-03, 1.25e-04});
  // No extension beyond the original context: mscale 1.
  c.max_position_embeddings = 4096;
  RopeInvFreq(c, 10, &att);
  EXPECT_EQ(att, 1.0f);
  c.rope_scaling.attention_factor = 1.5;
  RopeInvFreq(c, 10, &att);
  EXPECT_EQ(att, 1.5f);
}

}  // namespace
}  // namespace sparsefill::engine
