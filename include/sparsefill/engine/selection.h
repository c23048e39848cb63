// Selection policies (DESIGN §4): which key blocks each (KV head, query token) attends to.
// Policies are plain data; one scoring pipeline (kernels/selection) serves all of them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/engine/model_config.h"

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

  int32_t local_blocks() const { return local_tokens / block_size; }
  // InvalidArgument naming the field for any inconsistent value.
  absl::Status Validate() const;
  std::string ToString() const;
};

}  // namespace sparsefill::engine
