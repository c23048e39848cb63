#include "services/engine/cpu/cpu_weights.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::cpu {
namespace {

absl::StatusOr<std::vector<float>> Load(const Checkpoint& ckpt, const std::string& name,
                                        int64_t expected_numel) {
  SF_ASSIGN_OR_RETURN(TensorView t, ckpt.Tensor(name));
  if (t.numel() != expected_numel) {
    return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor ", name, " has ", t.numel(),
                                                   " elements, the config implies ",
                                                   expected_numel));
  }
  std::vector<float> out(static_cast<size_t>(expected_numel));
  ConvertToF32(t.data, t.dtype, out.data(), out.size());
  return out;
}

}  // namespace

absl::StatusOr<Weights> LoadWeights(const Checkpoint& checkpoint) {
  const ModelConfig& c = checkpoint.config();
  const int64_t h = c.hidden_size, d = c.head_dim, inter = c.intermediate_size;
  const int64_t qd = int64_t{c.num_heads} * d, kvd = int64_t{c.num_kv_heads} * d;
  Weights w;
  SF_ASSIGN_OR_RETURN(w.embed, Load(checkpoint, TensorNames::Embedding(), c.vocab_size * h));
  SF_ASSIGN_OR_RETURN(w.final_norm, Load(checkpoint, TensorNames::FinalNorm(), h));
  if (!c.tie_word_embeddings) {
    SF_ASSIGN_OR_RETURN(w.lm_head, Load(checkpoint, TensorNames::LmHead(), c.vocab_size * h));
  }
  w.layers.resize(static_cast<size_t>(c.num_layers));
  for (int i = 0; i < c.num_layers; ++i) {
    LayerWeights& l = w.layers[static_cast<size_t>(i)];
    auto name = [i](std::string_view s) { return TensorNames::Layer(i, s); };
    SF_ASSIGN_OR_RETURN(l.input_norm, Load(checkpoint, name("input_layernorm.weight"), h));
    SF_ASSIGN_OR_RETURN(l.post_norm, Load(checkpoint, name("post_attention_layernorm.weight"), h));
    SF_ASSIGN_OR_RETURN(l.wq, Load(checkpoint, name("self_attn.q_proj.weight"), qd * h));
    SF_ASSIGN_OR_RETURN(l.wk, Load(checkpoint, name("self_attn.k_proj.weight"), kvd * h));
    SF_ASSIGN_OR_RETURN(l.wv, Load(checkpoint, name("self_attn.v_proj.weight"), kvd * h));
    SF_ASSIGN_OR_RETURN(l.wo, Load(checkpoint, name("self_attn.o_proj.weight"), h * qd));
    if (c.attention_bias) {
      SF_ASSIGN_OR_RETURN(l.bq, Load(checkpoint, name("self_attn.q_proj.bias"), qd));
      SF_ASSIGN_OR_RETURN(l.bk, Load(checkpoint, name("self_attn.k_proj.bias"), kvd));
      SF_ASSIGN_OR_RETURN(l.bv, Load(checkpoint, name("self_attn.v_proj.bias"), kvd));
    }
    if (c.qk_norm) {
      SF_ASSIGN_OR_RETURN(l.q_norm, Load(checkpoint, name("self_attn.q_norm.weight"), d));
      SF_ASSIGN_OR_RETURN(l.k_norm, Load(checkpoint, name("self_attn.k_norm.weight"), d));
    }
    SF_ASSIGN_OR_RETURN(std::vector<float> gate,
                        Load(checkpoint, name("mlp.gate_proj.weight"), inter * h));
    SF_ASSIGN_OR_RETURN(std::vector<float> up, Load(checkpoint, name("mlp.up_proj.weight"), inter * h));
    l.w_gate_up = std::move(gate);
    l.w_gate_up.insert(l.w_gate_up.end(), up.begin(), up.end());
    SF_ASSIGN_OR_RETURN(l.w_down, Load(checkpoint, name("mlp.down_proj.weight"), h * inter));
  }
  return w;
}

}  // namespace sparsefill::engine::cpu
