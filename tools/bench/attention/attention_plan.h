// Pure bookkeeping of `bench attention`: the selection configurations it compares, the tile-level
// block lists handed to FlexAttention (the union over each tile of queries of our per-token
// lists) and the key / FLOP counts behind its TFLOP/s figures. No CUDA here, so it is unit-tested
// on any machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sparsefill::bench {

struct SelectionConfig {
  std::string name;
  int32_t kernel_size = 0;
  int32_t kernel_stride = 0;
  int32_t block_size = 0;
  int32_t init_blocks = 0;
  int32_t local_blocks = 0;  // blocks before the query's own block
  int32_t topk = 0;          // entries per list, forced ones included
  float lambda = 1.0f;       // < 1: PHSA punctuation mixing
};

// "infllmv2" (MiniCPM4: kernel 32, stride 16, B 64, init 1, window 2048 tokens, top-k 64),
// "phsa" (B 16, init 128 tokens, local 512 tokens, 16 blocks by score, lambda 0.5) and
// "b64-eqkeys" (B 64 with about PHSA's number of selected keys: init 2, local 8, 4 by score),
// the 64-token reference for PHSA's cost per key.
std::vector<SelectionConfig> DefaultSelectionConfigs();

// Per KV head and tile of q_tile queries, the sorted union of the blocks the tile's queries
// selected, re-expressed in units of out_block tokens (a multiple of the selection's block size:
// FlexAttention needs KV blocks of at least its kernel tile). CSR layout.
struct TileBlocks {
  int32_t kv_heads = 0;
  int64_t num_tiles = 0;
  int32_t q_tile = 0;
  int32_t out_block = 0;
  std::vector<int64_t> offsets;  // [kv_heads * num_tiles + 1]
  std::vector<int32_t> blocks;   // entries of (head, tile) i at [offsets[i], offsets[i + 1])
};

// `lists` is [kv_heads, num_q, max_blocks] in the BlockSelection layout (valid entries, then -1)
// for queries at positions q_pos0 .. q_pos0 + num_q - 1. An entry outside [-1, last block of its
// query] is InvalidArgument.
absl::StatusOr<TileBlocks> TileUnion(const int32_t* lists, int32_t kv_heads, int64_t num_q,
                                     int64_t q_pos0, int32_t max_blocks, int32_t block_size,
                                     int32_t q_tile, int32_t out_block);

// (query, key) pairs the lists attend, summed over KV heads and queries: each block counts its
// keys up to the query's own position (the causal diagonal).
absl::StatusOr<int64_t> SelectedPairs(const int32_t* lists, int32_t kv_heads, int64_t num_q,
                                      int64_t q_pos0, int32_t max_blocks, int32_t block_size);

// The same count for tile-level lists (what FlexAttention computes with them, causal mask
// applied), summed over KV heads; queries are 0 .. num_q - 1.
int64_t TilePairs(const TileBlocks& tiles, int64_t num_q);

// Causal (query, key) pairs of one head: sum over queries of (position + 1).
int64_t CausalPairs(int64_t num_q, int64_t q_pos0);

// Scored (query, chunk) pairs of one head: sum over queries of their visible chunks.
int64_t VisibleChunkPairs(int64_t num_q, int64_t q_pos0, int32_t kernel_size,
                          int32_t kernel_stride);

// FLOPs of attention over `pairs` (query, key) pairs per head: QK^T and PV, 2 FLOPs per MAC.
inline double AttentionFlops(int64_t pairs_per_head, int32_t heads, int32_t head_dim) {
  return 4.0 * static_cast<double>(pairs_per_head) * heads * head_dim;
}

}  // namespace sparsefill::bench
