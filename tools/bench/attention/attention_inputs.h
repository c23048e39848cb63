// Synthetic inputs of `bench attention`, generated on the device from a seed. Every value is a
// hash of (seed, tensor, position, head, dim), so the tensors of a shorter sequence are the
// prefixes of a longer one's: one fill serves every length of a run.
//
// The structure keeps the selections realistic rather than uniform: each KV head has 4 "topic"
// directions; about 10% of the 64-token key blocks are salient and lean towards one topic, and
// each query leans towards the topic of its 8K-token span. Block scores therefore peak on a few
// salient blocks that change along the sequence.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "sparsefill/kernels/stream.h"

namespace sparsefill::bench {

struct AttentionInputs {
  void* q = nullptr;         // [tokens, q_heads, head_dim]; bf16
  void* k = nullptr;         // [tokens, kv_heads, head_dim]; bf16
  void* v = nullptr;         // [tokens, kv_heads, head_dim]; bf16
  uint8_t* punct = nullptr;  // [tokens]: about 8% punctuation tokens
  int64_t tokens = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  uint64_t seed = 1;
};

[[nodiscard]] absl::Status FillAttentionInputs(const AttentionInputs& in, cudaStream_t stream);

}  // namespace sparsefill::bench
