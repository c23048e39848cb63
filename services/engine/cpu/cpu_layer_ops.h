// The pieces of one transformer layer on a block of consecutive rows, shared by the prefill (any
// shard, any row count) and the decode step, so that both use the same weights and kernels.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "services/engine/cpu/cpu_weights.h"
#include "sparsefill/engine/model_config.h"

namespace sparsefill::engine::cpu {

// y[rows, out] = x[rows, in] (row stride ldx) . W[out, in]^T (+ b)
void Linear(const float* x, int64_t ldx, int64_t rows, const std::vector<float>& w, int64_t in,
            int64_t out, const std::vector<float>& bias, float* y);

struct RopeTable {
  std::vector<float> inv_freq;  // [head_dim / 2]
  float attention_scaling = 1.0f;
};

// Buffers reused across layers; sized on first use.
struct LayerScratch {
  std::vector<float> h;        // [rows, hidden] normed input
  std::vector<float> gate_up;  // [chunk, 2 * intermediate]
  std::vector<float> delta;    // [rows, hidden]
};

class LayerOps {
 public:
  LayerOps(const ModelConfig& config, const Weights& weights) : c_(config), w_(weights) {}

  // RoPE of a prompt of `seq_len` tokens (dynamic scalings depend on it).
  RopeTable Rope(int64_t seq_len) const;
  // x [rows, hidden] = the tokens' embeddings (MiniCPM scales them).
  void Embed(std::span<const int32_t> tokens, float* x) const;
  // q [rows, q_heads, head_dim], k and v [rows, kv_heads, head_dim] of the hidden rows x at
  // `positions` [rows]: input norm, projections (+ bias), q/k norm, RoPE.
  absl::Status Qkv(int32_t layer, const float* x, int64_t rows, const int64_t* positions,
                   const RopeTable& rope, LayerScratch& s, float* q, float* k, float* v) const;
  // x += o_proj(attn) and x += mlp(post_norm(x)) (both scaled by MiniCPM's residual scale), the
  // MLP over row chunks of at most `chunk` rows. attn [rows, q_heads, head_dim].
  absl::Status OutputAndMlp(int32_t layer, const float* attn, int64_t rows, int64_t chunk,
                            LayerScratch& s, float* x) const;
  // out [rows, hidden] = the final norm of x rows (MiniCPM divides by hidden / dim_model_base).
  absl::Status FinalNorm(const float* x, int64_t rows, float* out) const;
  // logits [rows, vocab] of final normed rows [rows, hidden].
  void Logits(const float* hidden, int64_t rows, float* logits) const;

 private:
  const ModelConfig& c_;
  const Weights& w_;
};

}  // namespace sparsefill::engine::cpu
