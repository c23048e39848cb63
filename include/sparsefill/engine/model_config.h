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
std::string_view ArchitectureName(Architecture a);

struct RopeScaling {
  enum class Type : uint8_t { kNone, kLinear, kLlama3, kLongRope };
  Type type = Type::kNone;
  double factor = 1.0;                            // linear, llama3
  double low_freq_factor = 1.0;                   // llama3
  double high_freq_factor = 4.0;                  // llama3
  int64_t original_max_position_embeddings = 0;   // llama3, longrope
  std::vector<double> short_factor;               // longrope: [head_dim / 2]
  std::vector<double> long_factor;                // longrope: [head_dim / 2]
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
  int64_t dense_len = 8192;    // dense attention below this many tokens
  bool use_nope = false;
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
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2)
  bool qk_norm = false;         // per-head RMSNorm on q and k (Qwen3)
  DType dtype = DType::kBF16;   // "torch_dtype" / "dtype"
  RopeScaling rope_scaling;
  SparseConfig sparse;
  // MiniCPM scalings (1.0 / 0 when absent): embeddings *= scale_emb; each residual branch
  // *= scale_depth / sqrt(num_layers); final hidden /= hidden_size / dim_model_base.
  double scale_emb = 1.0;
  double scale_depth = 0.0;
  int64_t dim_model_base = 0;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;

  int32_t group_size() const { return num_heads / num_kv_heads; }
  // Parameters outside the embedding and LM head (the GEMM floor counts these).
  int64_t NonEmbeddingParams() const;
};

// Parses config.json text. Every problem is InvalidArgument naming `file_name` and the field.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view file_name);
// Writes config.json text that ParseModelConfig reads back to the same config.
std::string ModelConfigToJson(const ModelConfig& config);

// RoPE inverse frequencies [head_dim / 2] for `seq_len` tokens, with the config's scaling
// applied exactly as transformers' rope initialisers do; `attention_scaling` gets LongRoPE's
// mscale (1 otherwise).
std::vector<float> RopeInvFreq(const ModelConfig& config, int64_t seq_len,
                               float* attention_scaling);

}  // namespace sparsefill::engine
