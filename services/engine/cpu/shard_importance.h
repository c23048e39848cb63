// NOSA's query-agnostic block importance (the attention mass each key block receives from the
// last `observe` queries of the prompt), decomposed over the ranks of a sharded prefill so that
// the result does not depend on how many ranks there are:
//   1. the observer queries are all-gathered (they sit on the last rank(s));
//   2. every rank scores them against its own keys; the softmax maxima are all-gathered (max is
//      exact in any order);
//   3. the normalisers are sums of exp(s - max) rounded onto a 2^-62 fixed-point grid and added
//      as 128-bit integers, which is associative: any split of the keys gives the same bits;
//   4. every block lives on one rank, which sums its mass in one fixed order; the blocks'
//      importances are all-gathered.
// Scores are fixed-order dot products (not a BLAS), so a key's score does not depend on which
// rank computes it. The single-process prefill runs the same code on one rank.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/engine/shard.h"

namespace sparsefill::engine::cpu {

struct ShardImportanceInput {
  const float* q = nullptr;  // [shard tokens, q_heads, head_dim] this shard's queries, after RoPE
  const float* k = nullptr;  // [shard tokens, kv_heads, head_dim] this shard's keys, after RoPE
  int64_t num_tokens = 0;    // the whole prompt
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 0;
  int32_t observe = 0;
  float scale = 0.0f;
};

struct ShardImportance {
  std::vector<float> all;   // [kv_heads, ceil(num_tokens / block_size)] every block of the prompt
  std::vector<float> mine;  // [kv_heads, this shard's blocks]
};

// Collective: every rank calls it for the same `layer` (tags "imp-q", "imp-max", "imp-sum",
// "imp-blocks").
absl::StatusOr<ShardImportance> ComputeShardImportance(ShardExchange& exchange, int32_t layer,
                                                       const ShardImportanceInput& in);

}  // namespace sparsefill::engine::cpu
