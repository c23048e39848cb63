// Selection policies (DESIGN §4): which key blocks each (KV head, query token) attends to.
// Policies are plain data; one scoring pipeline (kernels/selection) serves all of them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/engine/model_config.h"
#include "sparsefill/kernels/attention.h"

namespace sparsefill::engine {

enum class Policy : uint8_t { kDense, kInfLlmV2, kPhsa, kNosa };
std::string_view PolicyName(Policy p);
absl::StatusOr<Policy> ParsePolicy(std::string_view name);  // "dense", "infllmv2", "phsa", "nosa"

struct SelectionConfig {
  Policy policy = Policy::kInfLlmV2;
  // Selection block size B in tokens.
  int32_t block_size = 64;
  // Compressed keys: Kc[m] = mean(K[stride*m .. stride*m + kernel - 1]). PHSA uses
  // kernel == stride == block_size (its block representatives).
  int32_t kernel_size = 32;
  int32_t kernel_stride = 16;
  // Forced blocks: the first init_blocks blocks, and the local window of local_tokens / B blocks
  // before the query's own block plus that block (inclusive: L + 1 blocks).
  int32_t init_blocks = 1;
  int32_t local_tokens = 2048;
  // Blocks per (KV head, query token) in total, forced ones included.
  int32_t topk = 64;
  // Sequences shorter than this many tokens use dense attention.
  int64_t dense_below = 8192;
  // PHSA: R[b] = lambda * mean(K[b]) + (1 - lambda) * mean(punctuation keys of b).
  float lambda = 0.5f;
  // NOSA: of topk, this many come from the query-aware ranking (forced ones included); the
  // query-agnostic block importance fills the rest.
  int32_t nosa_query_aware = 48;
  // NOSA proxy importance (no eviction head): attention mass each block receives from the last
  // nosa_observe queries of the prompt.
  int32_t nosa_observe = 64;

  // MiniCPM4 / InfLLM-V2: kernel 32, stride 16, B 64, init 1, window 2048, top-k 64.
  static SelectionConfig InfLlmV2();
  // PHSA paper setting: B 16, init 128 tokens, local 512 tokens, 16 scored blocks beyond those
  // (topk = 8 + 33 + 16 = 57), lambda 0.5.
  static SelectionConfig Phsa();
  // NOSA on the InfLLM-V2 pipeline: 48 query-aware + 16 query-agnostic blocks.
  static SelectionConfig Nosa();
  static SelectionConfig Dense();
  // The default for `policy`, taking B/kernel/stride/init/window/top-k/dense_len from a
  // checkpoint's sparse_config when it has one (InfLLM-V2 and NOSA only).
  static SelectionConfig ForPolicy(Policy policy, const ModelConfig& model);

  // Whole blocks in the local window (local_tokens / B, rounded down like MiniCPM4's
  // window_size // block_size).
  int32_t local_blocks() const { return local_tokens / block_size; }
  // Blocks every query keeps when it has that many before it: init + local window.
  int32_t forced_blocks() const { return init_blocks + local_blocks() + 1; }
  // InvalidArgument naming the field for any inconsistent value.
  absl::Status Validate() const;
  std::string ToString() const;
};

// True when a sequence of `seq_len` tokens runs dense attention (policy dense, or shorter than
// dense_below); the engine then skips selection.
bool UsesDense(const SelectionConfig& config, int64_t seq_len);

// One layer's inputs to selection, fp32, keys after RoPE.
struct LayerSelectionInput {
  const float* q = nullptr;  // [num_q, q_heads, head_dim], queries at q_pos0 .. q_pos0 + num_q - 1
  const float* k = nullptr;  // [num_kv, kv_heads, head_dim], keys at 0 .. num_kv - 1
  // PHSA with lambda < 1: 1 where the key's token is punctuation (the tokenizer's table).
  const uint8_t* punct = nullptr;  // [num_kv]
  // NOSA: query-agnostic block importance computed elsewhere (e.g. by the shard holding the end
  // of the prompt). When null, SelectLayer computes it from the last nosa_observe queries of q,
  // which must then end the prompt (q_pos0 + num_q == num_kv).
  const float* block_importance = nullptr;  // [kv_heads, importance_blocks]
  int64_t importance_blocks = 0;
  int64_t num_q = 0;
  int64_t q_pos0 = 0;
  int64_t num_kv = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  float scale = 0.0f;  // softmax scale, usually 1/sqrt(head_dim)
};

// The block lists of one layer for one shard of queries, plus its sparsity counters.
struct LayerSelection {
  std::vector<int32_t> blocks;  // [kv_heads, num_q, max_blocks]; ascending, then -1
  int32_t max_blocks = 0;       // topk (dense policy: blocks up to the last query's)
  int32_t block_size = 0;
  int32_t kv_heads = 0;
  int64_t num_q = 0;
  int64_t q_pos0 = 0;
  // Summed over KV heads and queries: keys the lists cover up to each query's position, and all
  // causal keys (position + 1). sparsity = 1 - selected / causal.
  int64_t selected_keys = 0;
  int64_t causal_keys = 0;
  // NOSA only: the query-agnostic importance used, [kv_heads, ceil(num_kv / block_size)]
  // (or the caller's, copied).
  std::vector<float> block_importance;

  kernels::BlockSelection view() const {
    return kernels::BlockSelection{blocks.data(), max_blocks, block_size};
  }
  double sparsity() const {
    return causal_keys > 0 ? 1.0 - static_cast<double>(selected_keys) / causal_keys : 0.0;
  }
};

// Runs the config's policy on one layer: summaries of the keys up to the last query, scores,
// top-k. Policy dense returns every causal block (so sparse attention equals dense attention).
// InvalidArgument names any bad config field or input shape.
absl::StatusOr<LayerSelection> SelectLayer(const SelectionConfig& config,
                                           const LayerSelectionInput& input);

// The query-agnostic block importance [kv_heads, ceil(num_kv / block_size)] from the last
// min(observe, num_q) queries of `input` (which should end the prompt). NOSA's ranking, and the
// KV store's hot/cold ranking after prefill for every policy.
absl::StatusOr<std::vector<float>> ComputeBlockImportance(const LayerSelectionInput& input,
                                                          int32_t block_size, int32_t observe);

}  // namespace sparsefill::engine
