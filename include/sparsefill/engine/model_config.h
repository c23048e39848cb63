// A model's shape and arithmetic, read from a Hugging Face `config.json`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/common/dtype.h"

namespace sparsefill::engine {

enum class Architecture : uint8_t {
  kQwen3,    // "Qwen3ForCausalLM": q/k RMSNorm per head, no qkv bias
  kQwen2,    // "Qwen2ForCausalLM": qkv bias
  kLlama,    // "LlamaForCausalLM": optional rope_scaling (llama3)
  kMiniCpm,  // "MiniCPMForCausalLM": scale_emb, scale_depth, dim_model_base, sparse_config
};
// The Hugging Face class name, e.g. "Qwen3ForCausalLM".
std::string_view ArchitectureName(Architecture a);
// config.json's "model_type": "qwen3", "qwen2", "llama", "minicpm".
std::string_view ArchitectureModelType(Architecture a);

struct RopeScaling {
  enum class Type : uint8_t { kNone, kLinear, kLlama3, kLongRope };
  Type type = Type::kNone;
  double factor = 1.0;                           // linear, llama3
  double low_freq_factor = 1.0;                  // llama3
  double high_freq_factor = 4.0;                 // llama3
  int64_t original_max_position_embeddings = 0;  // llama3, longrope
  std::vector<double> short_factor;              // longrope: [head_dim / 2]
  std::vector<double> long_factor;               // longrope: [head_dim / 2]
  // longrope: an explicit "attention_factor"; 0 derives it from the context extension.
  double attention_factor = 0.0;

  friend bool operator==(const RopeScaling&, const RopeScaling&) = default;
};

// MiniCPM4's `sparse_config` (InfLLM-V2). Field names follow the checkpoint's JSON.
struct SparseConfig {
  bool present = false;
  int32_t kernel_size = 32;
  int32_t kernel_stride = 16;
  int32_t init_blocks = 1;
  int32_t block_size = 64;
  int32_t window_size = 2048;  // tokens
  int32_t topk = 64;           // blocks in total, forced ones included
  int64_t dense_len = 8192;    // dense attention below this many tokens (-1: always sparse)
  bool use_nope = false;

  friend bool operator==(const SparseConfig&, const SparseConfig&) = default;
};

struct ModelConfig {
  Architecture arch = Architecture::kQwen3;
  std::string model_type;  // config.json "model_type"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int32_t num_layers = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;  // "head_dim" when given, else hidden_size / num_heads
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (always for Qwen2)
  bool qk_norm = false;         // per-head RMSNorm on q and k (Qwen3)
  DType dtype = DType::kBF16;   // "torch_dtype" / "dtype"
  RopeScaling rope_scaling;
  SparseConfig sparse;
  // MiniCPM scalings: embeddings *= scale_emb; each residual branch *= scale_depth /
  // sqrt(num_layers); final hidden /= hidden_size / dim_model_base. For MiniCPM, absent fields
  // take MiniCPMConfig's defaults (1, 1, 1); for other architectures they stay 1.0 / 0 / 0, which
  // the helpers below read as "no scaling".
  double scale_emb = 1.0;
  double scale_depth = 0.0;
  int64_t dim_model_base = 0;
  int64_t bos_token_id = -1;  // -1 when absent; the first one when config.json gives a list
  int64_t eos_token_id = -1;

  int32_t group_size() const { return num_heads / num_kv_heads; }
  int64_t q_dim() const { return int64_t{num_heads} * head_dim; }
  int64_t kv_dim() const { return int64_t{num_kv_heads} * head_dim; }
  // Parameters outside the embedding and LM head (the GEMM floor counts these).
  int64_t NonEmbeddingParams() const;
  // All parameters, the LM head counted once when it is tied to the embedding.
  int64_t TotalParams() const;
  // Factor applied to the token embeddings (MiniCPM's scale_emb; 1 otherwise).
  double EmbeddingScale() const;
  // Factor applied to each attention / MLP output before it joins the residual stream.
  double ResidualScale() const;
  // Factor applied to the final normed hidden state before the LM head.
  double FinalHiddenScale() const;

  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

// Parses config.json text. Every problem is InvalidArgument naming `file_name` and the field.
// Reads both the classic layout ("rope_theta" + "rope_scaling") and transformers 5's
// "rope_parameters".
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view file_name);
// Writes config.json text (the classic Hugging Face layout) that ParseModelConfig reads back to
// the same config.
std::string ModelConfigToJson(const ModelConfig& config);

// RoPE inverse frequencies [head_dim / 2] for `seq_len` tokens, with the config's scaling
// applied exactly as transformers' rope initialisers do (computed in double); `attention_scaling`
// (may be null) gets LongRoPE's mscale (1 otherwise).
std::vector<float> RopeInvFreq(const ModelConfig& config, int64_t seq_len,
                               float* attention_scaling);

}  // namespace sparsefill::engine
