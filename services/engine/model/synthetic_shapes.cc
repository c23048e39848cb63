// The named shapes of make-model, with the values of the published Hugging Face configs.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/synthetic_checkpoint.h"

namespace sparsefill::engine {
namespace {

ModelConfig Qwen3Base() {
  ModelConfig c;
  c.arch = Architecture::kQwen3;
  c.model_type = "qwen3";
  c.vocab_size = 151936;
  c.head_dim = 128;
  c.max_position_embeddings = 40960;
  c.rope_theta = 1000000.0;
  c.rms_norm_eps = 1e-6;
  c.qk_norm = true;
  c.dtype = DType::kBF16;
  c.bos_token_id = 151643;
  c.eos_token_id = 151645;
  return c;
}

// The LongRoPE factors of openbmb/MiniCPM4-8B's model card (short_factor == long_factor) for
// contexts beyond its native 32768 tokens; 64 = head_dim / 2 entries.
const std::vector<double>& MiniCpm4LongRopeFactors() {
  static const std::vector<double> kFactors = {
      0.9977997200264581, 1.014658295992452,  1.0349680404997148, 1.059429246056193,
      1.0888815016813513, 1.1243301355211495, 1.166977103606075,  1.2182568066927284,
      1.2798772354275727, 1.3538666751582975, 1.4426259039919596, 1.5489853358570191,
      1.6762658237220625, 1.8283407612492941, 2.0096956085876183, 2.225478927469756,
      2.481536379650452,  2.784415934557119,  3.1413289096347365, 3.560047844772632,
      4.048719380066383,  4.752651957515948,  5.590913044973868,  6.584005926629993,
      7.7532214876576155, 9.119754865903639,  10.704443927019176, 12.524994176518703,
      14.59739595363613,  16.93214476166354,  19.53823297353041,  22.417131025031697,
      25.568260840911098, 28.991144156566317, 32.68408069090375,  36.65174474170465,
      40.90396065611201,  45.4664008671033,   50.37147343433591,  55.6804490772103,
      61.470816952306556, 67.8622707390618,   75.00516023410414,  83.11898235973767,
      92.50044360202462,  103.57086856690864, 116.9492274587385,  118.16074567836519,
      119.18497548708795, 120.04810876261652, 120.77352815196981, 121.38182790207875,
      121.89094985353891, 122.31638758099915, 122.6714244963338,  122.9673822552567,
      123.21386397019609, 123.41898278254268, 123.58957065488238, 123.73136519024158,
      123.84917421274221, 123.94701903496814, 124.02825801299717, 124.09569231686116};
  return kFactors;
}

}  // namespace

std::vector<std::string> SyntheticShapeNames() {
  return {"tiny", "qwen3-0.6b", "qwen3-8b", "llama3-8b", "minicpm4-8b"};
}

absl::StatusOr<ModelConfig> SyntheticModelConfig(std::string_view shape) {
  if (shape == "tiny") {
    // Qwen3 code paths at a size the CPU backend runs in seconds; the full Qwen3 vocabulary so
    // that the real tokenizer's ids fit.
    ModelConfig c = Qwen3Base();
    c.hidden_size = 256;
    c.intermediate_size = 768;
    c.num_layers = 4;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.max_position_embeddings = 131072;
    c.tie_word_embeddings = true;
    return c;
  }
  if (shape == "qwen3-0.6b") {  // Qwen/Qwen3-0.6B
    ModelConfig c = Qwen3Base();
    c.hidden_size = 1024;
    c.intermediate_size = 3072;
    c.num_layers = 28;
    c.num_heads = 16;
    c.num_kv_heads = 8;
    c.tie_word_embeddings = true;
    return c;
  }
  if (shape == "qwen3-8b") {  // Qwen/Qwen3-8B
    ModelConfig c = Qwen3Base();
    c.hidden_size = 4096;
    c.intermediate_size = 12288;
    c.num_layers = 36;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.tie_word_embeddings = false;
    return c;
  }
  if (shape == "llama3-8b") {  // meta-llama/Llama-3.1-8B
    ModelConfig c;
    c.arch = Architecture::kLlama;
    c.model_type = "llama";
    c.vocab_size = 128256;
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_layers = 32;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.head_dim = 128;
    c.max_position_embeddings = 131072;
    c.rope_theta = 500000.0;
    c.rms_norm_eps = 1e-5;
    c.tie_word_embeddings = false;
    c.dtype = DType::kBF16;
    c.rope_scaling.type = RopeScaling::Type::kLlama3;
    c.rope_scaling.factor = 8.0;
    c.rope_scaling.low_freq_factor = 1.0;
    c.rope_scaling.high_freq_factor = 4.0;
    c.rope_scaling.original_max_position_embeddings = 8192;
    c.bos_token_id = 128000;
    c.eos_token_id = 128001;
    return c;
  }
  if (shape == "minicpm4-8b") {  // openbmb/MiniCPM4-8B with its InfLLM-V2 sparse_config
    ModelConfig c;
    c.arch = Architecture::kMiniCpm;
    c.model_type = "minicpm";
    c.vocab_size = 73448;
    c.hidden_size = 4096;
    c.intermediate_size = 16384;
    c.num_layers = 32;
    c.num_heads = 32;
    c.num_kv_heads = 2;
    c.head_dim = 128;
    c.max_position_embeddings = 32768;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_word_embeddings = false;
    c.dtype = DType::kBF16;
    c.rope_scaling.type = RopeScaling::Type::kLongRope;
    c.rope_scaling.short_factor = MiniCpm4LongRopeFactors();
    c.rope_scaling.long_factor = MiniCpm4LongRopeFactors();
    c.rope_scaling.original_max_position_embeddings = 32768;
    c.scale_emb = 12.0;
    c.scale_depth = 1.4;
    c.dim_model_base = 256;
    c.sparse.present = true;
    c.sparse.kernel_size = 32;
    c.sparse.kernel_stride = 16;
    c.sparse.init_blocks = 1;
    c.sparse.block_size = 64;
    c.sparse.window_size = 2048;
    c.sparse.topk = 64;
    c.sparse.use_nope = false;
    c.sparse.dense_len = 8192;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model shape \"", AsAbsl(shape),
                   "\" (known: ", absl::StrJoin(SyntheticShapeNames(), ", "), ")"));
}

}  // namespace sparsefill::engine
