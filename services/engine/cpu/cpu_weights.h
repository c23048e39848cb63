// The model's weights converted to fp32 host memory for the cpu backend.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/engine/checkpoint.h"

namespace sparsefill::engine::cpu {

struct LayerWeights {
  std::vector<float> input_norm;  // [hidden]
  std::vector<float> post_norm;   // [hidden]
  std::vector<float> q_norm;      // [head_dim] (Qwen3), else empty
  std::vector<float> k_norm;      // [head_dim] (Qwen3), else empty
  std::vector<float> wq;          // [q_heads * head_dim, hidden]
  std::vector<float> wk;          // [kv_heads * head_dim, hidden]
  std::vector<float> wv;          // [kv_heads * head_dim, hidden]
  std::vector<float> bq, bk, bv;  // [out] (Qwen2), else empty
  std::vector<float> wo;          // [hidden, q_heads * head_dim]
  std::vector<float> w_gate_up;   // [2 * intermediate, hidden]: gate rows, then up rows
  std::vector<float> w_down;      // [hidden, intermediate]
};

struct Weights {
  std::vector<float> embed;       // [vocab, hidden]
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;     // [vocab, hidden]; empty when tied to embed
  std::vector<LayerWeights> layers;
  const std::vector<float>& head() const { return lm_head.empty() ? embed : lm_head; }
};

// Reads every tensor the config needs and converts it to fp32.
absl::StatusOr<Weights> LoadWeights(const Checkpoint& checkpoint);

}  // namespace sparsefill::engine::cpu
