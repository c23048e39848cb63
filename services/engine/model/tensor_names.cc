// Hugging Face tensor names and the tensors each architecture needs.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/checkpoint.h"

namespace sparsefill::engine {
namespace {

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

int64_t TensorView::numel() const { return Product(shape); }
int64_t TensorSpec::numel() const { return Product(shape); }

std::string TensorNames::Embedding() { return "model.embed_tokens.weight"; }
std::string TensorNames::FinalNorm() { return "model.norm.weight"; }
std::string TensorNames::LmHead() { return "lm_head.weight"; }
std::string TensorNames::Layer(int layer, std::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", AsAbsl(suffix));
}

std::vector<TensorSpec> ExpectedTensors(const ModelConfig& c) {
  std::vector<TensorSpec> out;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    out.push_back(TensorSpec{std::move(name), c.dtype, std::move(shape)});
  };
  const int64_t h = c.hidden_size;
  add(TensorNames::Embedding(), {c.vocab_size, h});
  for (int i = 0; i < c.num_layers; ++i) {
    add(TensorNames::Layer(i, "input_layernorm.weight"), {h});
    add(TensorNames::Layer(i, "self_attn.q_proj.weight"), {c.q_dim(), h});
    add(TensorNames::Layer(i, "self_attn.k_proj.weight"), {c.kv_dim(), h});
    add(TensorNames::Layer(i, "self_attn.v_proj.weight"), {c.kv_dim(), h});
    if (c.attention_bias) {
      add(TensorNames::Layer(i, "self_attn.q_proj.bias"), {c.q_dim()});
      add(TensorNames::Layer(i, "self_attn.k_proj.bias"), {c.kv_dim()});
      add(TensorNames::Layer(i, "self_attn.v_proj.bias"), {c.kv_dim()});
    }
    if (c.qk_norm) {
      add(TensorNames::Layer(i, "self_attn.q_norm.weight"), {c.head_dim});
      add(TensorNames::Layer(i, "self_attn.k_norm.weight"), {c.head_dim});
    }
    add(TensorNames::Layer(i, "self_attn.o_proj.weight"), {h, c.q_dim()});
    add(TensorNames::Layer(i, "post_attention_layernorm.weight"), {h});
    add(TensorNames::Layer(i, "mlp.gate_proj.weight"), {c.intermediate_size, h});
    add(TensorNames::Layer(i, "mlp.up_proj.weight"), {c.intermediate_size, h});
    add(TensorNames::Layer(i, "mlp.down_proj.weight"), {h, c.intermediate_size});
  }
  add(TensorNames::FinalNorm(), {h});
  if (!c.tie_word_embeddings) add(TensorNames::LmHead(), {c.vocab_size, h});
  return out;
}

}  // namespace sparsefill::engine
