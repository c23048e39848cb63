// Block selection for sparse prefill (DESIGN §4), split so that a distributed worker can run it
// on its own shard:
//   1. BlockSummariesRef: compressed keys (InfLLM-V2) or punctuation-aware block representatives
//      (PHSA) of a contiguous key range. Chunk m depends only on keys s*m .. s*m+k-1, so the
//      summaries of consecutive shards concatenate into the summaries of the whole sequence.
//   2. SelectBlocksRef: queries + all summaries (+ optional query-agnostic block importance, NOSA)
//      -> one sorted block list per (KV head, query), in the BlockSelection layout of
//      sparsefill/kernels/attention.h.
//   3. BlockImportanceRef: the query-agnostic importance proxy (attention mass each block receives
//      from a few observer queries); NOSA's ranking and the KV store's hot/cold placement.
//
// Scores of query t (absolute position): chunk m is visible when its last key s*m+k-1 <= t;
// p_h = softmax over visible chunks of scale * (q_h . Kc[m]) (all zeros when none is visible);
// P = sum of p_h over the G query heads of the KV head's group. Block b's score is the max of P
// over the chunks that overlap block b's keys (window B/s + k/s - 1, stride B/s, padding k/s - 1:
// MiniCPM4's max_pool1d), 0 when none of them is visible. Init blocks and the local window
// (the query's own block and the local_blocks blocks before it) are forced; blocks after the
// query's own block are never chosen; ties go to the lower block index.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "sparsefill/kernels/stream.h"

namespace sparsefill::kernels {

// Number of complete chunks (kernel keys each, kernel_stride apart) in the first `num_keys` keys.
int64_t NumCompressedChunks(int64_t num_keys, int32_t kernel_size, int32_t kernel_stride);

struct BlockSummaryParams {
  // Keys after RoPE at absolute positions k_pos0 .. k_pos0 + num_kv - 1.
  const float* k = nullptr;  // [num_kv, kv_heads, head_dim]
  // Per-key punctuation flag (1 = the key's token is punctuation); PHSA only (lambda < 1).
  const uint8_t* punct = nullptr;  // [num_kv]; may be null when lambda == 1
  // Chunks first_chunk .. first_chunk + num_chunks - 1 of the whole sequence, where first_chunk =
  // ceil(k_pos0 / kernel_stride) and num_chunks = SummaryChunkRange(...).count: every chunk whose
  // keys all lie in the given range.
  float* summaries = nullptr;  // [num_chunks, kv_heads, head_dim]
  int64_t num_kv = 0;
  int64_t k_pos0 = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int32_t kernel_size = 0;
  int32_t kernel_stride = 0;
  // R = lambda * mean(chunk) + (1 - lambda) * mean(punctuation keys of the chunk); chunks
  // without punctuation (and lambda == 1) take the plain mean, computed by the same code as
  // InfLLM-V2's compressed keys (so lambda == 1 is bit-identical to it).
  float lambda = 1.0f;
};

struct ChunkRange {
  int64_t first = 0;  // index of the first chunk in the whole sequence
  int64_t count = 0;
};
// The chunks BlockSummariesRef produces for keys at k_pos0 .. k_pos0 + num_kv - 1.
ChunkRange SummaryChunkRange(int64_t k_pos0, int64_t num_kv, int32_t kernel_size,
                             int32_t kernel_stride);

[[nodiscard]] absl::Status BlockSummariesRef(const BlockSummaryParams& p);

struct SelectBlocksParams {
  // Queries at absolute positions q_pos0 .. q_pos0 + num_q - 1 (a shard of the sequence).
  const float* q = nullptr;  // [num_q, q_heads, head_dim]
  // Summaries of chunks 0 .. num_chunks - 1 of the whole sequence; must cover every chunk visible
  // to the last query: num_chunks >= NumCompressedChunks(q_pos0 + num_q, kernel, stride).
  const float* summaries = nullptr;  // [num_chunks, kv_heads, head_dim]
  // NOSA: query-agnostic importance of blocks 0 .. importance_blocks - 1 (higher = keep); needed
  // only when query_aware < topk; must cover the last query's block.
  const float* block_importance = nullptr;  // [kv_heads, importance_blocks]
  // Output: valid entries ascending, then -1.
  int32_t* blocks = nullptr;  // [kv_heads, num_q, topk]
  int64_t num_q = 0;
  int64_t q_pos0 = 0;
  int64_t num_chunks = 0;
  int64_t importance_blocks = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  float scale = 0.0f;  // usually 1/sqrt(head_dim)
  int32_t kernel_size = 0;
  int32_t kernel_stride = 0;
  int32_t block_size = 0;
  int32_t init_blocks = 0;
  int32_t local_blocks = 0;  // blocks before the query's own block that are forced
  int32_t topk = 0;          // entries per list, forced ones included
  // Entries ranked by score (forced ones included); the remaining topk - query_aware come from
  // block_importance. query_aware >= topk (or 0 meaning topk) is plain InfLLM-V2 / PHSA.
  int32_t query_aware = 0;
};

// Checks shapes and pointers; InvalidArgument names the first problem.
[[nodiscard]] absl::Status ValidateSelectBlocks(const SelectBlocksParams& p);
[[nodiscard]] absl::Status SelectBlocksRef(const SelectBlocksParams& p);

struct BlockImportanceParams {
  // Observer queries (usually the last few of the prompt) at positions q_pos0 .. q_pos0+num_q-1.
  const float* q = nullptr;  // [num_q, q_heads, head_dim]
  const float* k = nullptr;  // [num_kv, kv_heads, head_dim]
  // Sum over the observer queries and the query heads of each group of the causal dense softmax
  // mass landing in each block (block b = keys [b*B, (b+1)*B)).
  float* importance = nullptr;  // [kv_heads, ceil(num_kv / block_size)]
  int64_t num_q = 0;
  int64_t q_pos0 = 0;
  int64_t num_kv = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 0;
  float scale = 0.0f;
};

[[nodiscard]] absl::Status BlockImportanceRef(const BlockImportanceParams& p);

// ---------------------------------------------------------------- CUDA (sm_90a)
// The same contract on BF16 device tensors, fp32 accumulation. Builds with the CUDA backend;
// asynchronous on `stream`; the launchers allocate nothing and do not synchronise.
// InvalidArgument for bad parameters (checked on the host before any CUDA call), Internal naming
// the kernel when a launch fails.

struct BlockSummaryCudaParams {
  // Keys after RoPE at absolute positions k_pos0 .. k_pos0 + num_kv - 1; 4-byte aligned.
  const void* k = nullptr;         // [num_kv, kv_heads, head_dim]; bf16
  const uint8_t* punct = nullptr;  // [num_kv]; may be null when lambda == 1
  // Chunks SummaryChunkRange(k_pos0, num_kv, kernel_size, kernel_stride), as BlockSummariesRef.
  void* summaries = nullptr;  // [num_chunks, kv_heads, head_dim]; bf16
  int64_t num_kv = 0;
  int64_t k_pos0 = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;  // even
  int32_t kernel_size = 0;
  int32_t kernel_stride = 0;
  float lambda = 1.0f;
};

[[nodiscard]] absl::Status LaunchBlockSummaries(const BlockSummaryCudaParams& p,
                                                cudaStream_t stream);

// Fields as in SelectBlocksParams; q and summaries are BF16 and 16-byte aligned. The CUDA
// kernel supports head_dim 64 or 128, q_heads / kv_heads in {1, 2, 4, 8, 16},
// block_size / kernel_stride in {1, 2, 4, 8, 16, 32, 64}, kernel_size / kernel_stride <= 17 and
// topk <= 256; anything else is InvalidArgument naming the value.
struct SelectBlocksCudaParams {
  const void* q = nullptr;                  // [num_q, q_heads, head_dim]; bf16
  const void* summaries = nullptr;          // [num_chunks, kv_heads, head_dim]; bf16
  const float* block_importance = nullptr;  // [kv_heads, importance_blocks]; NOSA only
  int32_t* blocks = nullptr;                // [kv_heads, num_q, topk]
  int64_t num_q = 0;
  int64_t q_pos0 = 0;
  int64_t num_chunks = 0;
  int64_t importance_blocks = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  float scale = 0.0f;
  int32_t kernel_size = 0;
  int32_t kernel_stride = 0;
  int32_t block_size = 0;
  int32_t init_blocks = 0;
  int32_t local_blocks = 0;
  int32_t topk = 0;
  int32_t query_aware = 0;
  // Queries per chunk (rounded up to a multiple of 128); 0 sizes the chunk to about 1 GiB of
  // workspace. Smaller chunks cost less workspace and more launches.
  int64_t max_chunk_queries = 0;
  // true (the default): the materialised path (block scores of a chunk of queries in device
  // memory, then a top-k kernel). false: the fused path (running top-k lists in shared memory, no
  // score matrix in device memory) where its lists fit (not for large topk with groups of 1 or
  // 2). The fused path is opt-in: on the H100 it measured slower for the InfLLM-V2 config at 128K
  // (bench attention --selection-only times both side by side; tools/bench/attention/NOTES.md).
  bool materialize_scores = true;
};

// Device workspace LaunchSelectBlocks needs (bytes, 256-byte aligned pieces): the per-(query,
// head) log-sum-exp of one chunk of queries and, on the materialised path only, that chunk's
// block scores (see max_chunk_queries).
size_t SelectBlocksWorkspaceBytes(const SelectBlocksCudaParams& p);

// Two tensor-core passes over the summaries per chunk of queries: row max and sum, then the
// normalised, group-summed, max-pooled block scores. The second pass keeps a running top-k per
// (KV head, query) in shared memory and writes the lists itself (the fused path: no score matrix
// in device memory); when those lists do not fit, it writes the chunk's block scores and one warp
// per (KV head, query) takes the top-k by radix select. `workspace` holds at least
// SelectBlocksWorkspaceBytes(p) bytes.
[[nodiscard]] absl::Status LaunchSelectBlocks(const SelectBlocksCudaParams& p, void* workspace,
                                              size_t workspace_bytes, cudaStream_t stream);

}  // namespace sparsefill::kernels
