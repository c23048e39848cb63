// Causal attention over one sequence: dense, and block-sparse for any block selection.
//
// Queries may be a contiguous slice of the sequence (a worker's shard): query i sits at absolute
// position q_pos0 + i and sees keys 0 .. q_pos0 + i. Keys and values cover positions 0 .. num_kv-1.
// GQA: query head h reads KV head h / (q_heads / kv_heads).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/kernels/stream.h"

namespace sparsefill::kernels {

struct AttentionParams {
  const void* q = nullptr;  // [num_q, q_heads, head_dim]; dtype
  const void* k = nullptr;  // [num_kv, kv_heads, head_dim]; dtype
  const void* v = nullptr;  // [num_kv, kv_heads, head_dim]; dtype
  void* out = nullptr;      // [num_q, q_heads, head_dim]; dtype
  float* lse = nullptr;     // [q_heads, num_q] natural log-sum-exp of scaled scores; optional
  int64_t num_q = 0;
  int64_t num_kv = 0;
  int64_t q_pos0 = 0;  // absolute position of query 0; q_pos0 + num_q <= num_kv
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  float scale = 0.0f;  // softmax scale, usually 1/sqrt(head_dim)
  DType dtype = DType::kF32;
};

// A block selection: for every (KV head, query) a list of key blocks of `block_size` tokens.
// Block b covers keys [b * block_size, (b + 1) * block_size). Each list holds its valid entries
// first, unique and ascending, then -1 padding. All query heads of a GQA group share the list of
// their KV head. Keys after the query's position are masked token by token (the causal diagonal).
// An empty list (all -1) is allowed: that query's output is 0 and its LSE -inf, the identity of a
// log-sum-exp merge of partial outputs.
struct BlockSelection {
  const int32_t* blocks = nullptr;  // [kv_heads, num_q, max_blocks]
  int32_t max_blocks = 0;
  int32_t block_size = 0;
  // Optional, CUDA only (device memory): the kernel ADDS the token-key pairs it computed, summed
  // over KV heads. A CTA computes the union of its tokens' lists for each of its tokens (masked
  // pairs included), so this over the selected keys is what per-token lists cost the CTA shape.
  unsigned long long* computed_keys = nullptr;
};

// The CPU backend's attention (fp32 only; other dtypes are InvalidArgument). Both validate first
// (ValidateAttention / ValidateSelection), accumulate in fp32 and run OpenMP-parallel; the dense
// one is a tiled online-softmax loop, the sparse one visits only the selected blocks.
[[nodiscard]] absl::Status DenseAttentionRef(const AttentionParams& p);
[[nodiscard]] absl::Status SparseAttentionRef(const AttentionParams& p, const BlockSelection& sel);

// The CUDA backend's attention (sm_90a; builds with the CUDA backend): q, k, v and out in BF16,
// fp32 accumulation, LSE in fp32 when p.lse is set; head_dim 64 or 128; q_heads / kv_heads from
// 1 to 16; q, k and v 16-byte aligned (out and lse 4-byte); selection block_size 1 .. 2^20 (16,
// 32, 64 and 128 are the tested ones; blocks are gathered into full key tiles whatever the size)
// and max_blocks up to 2^24. Asynchronous on `stream`; the launchers do not synchronise and
// allocate nothing.
// InvalidArgument for bad parameters (checked on the host, before any CUDA call; selection lists
// live on the device and are trusted to be well formed, as ValidateSelection describes), Internal
// naming the kernel when a launch fails.
[[nodiscard]] absl::Status LaunchDenseAttention(const AttentionParams& p, cudaStream_t stream);
[[nodiscard]] absl::Status LaunchSparseAttention(const AttentionParams& p,
                                                 const BlockSelection& sel, cudaStream_t stream);

// Several independent sequences packed along the token axis (FlashAttention's cu_seqlens layout),
// for the CUDA backend. Sequence i owns queries cu_seqlens_q[i] .. cu_seqlens_q[i + 1] - 1 and keys
// cu_seqlens_kv[i] .. cu_seqlens_kv[i + 1] - 1; its q_len queries are its LAST q_len positions
// (query j sits at position kv_len - q_len + j of its own sequence, so a chunk that continues a
// cached prefix has kv_len > q_len) and see only their own sequence's keys, causally. Offsets
// live on the device and are trusted like selection lists; a sequence whose offsets are malformed
// (decreasing, past total_q / total_kv, or q_len > kv_len) is skipped, never read out of bounds.
// With a selection, lists are indexed by packed query ([kv_heads, total_q, max_blocks]) and block
// b of sequence i covers that sequence's keys [b * block_size, (b + 1) * block_size).
struct VarlenAttentionParams {
  const void* q = nullptr;                 // [total_q, q_heads, head_dim]; BF16
  const void* k = nullptr;                 // [total_kv, kv_heads, head_dim]; BF16
  const void* v = nullptr;                 // [total_kv, kv_heads, head_dim]; BF16
  void* out = nullptr;                     // [total_q, q_heads, head_dim]; BF16
  float* lse = nullptr;                    // [q_heads, total_q]; optional
  const int32_t* cu_seqlens_q = nullptr;   // [num_seqs + 1] device: 0 .. total_q, ascending
  const int32_t* cu_seqlens_kv = nullptr;  // [num_seqs + 1] device: 0 .. total_kv, ascending
  int32_t num_seqs = 0;                    // 1 .. 65535
  int32_t max_seqlen_q = 0;  // >= every sequence's q_len (sizes the grid; longer ones are cut)
  int64_t total_q = 0;
  int64_t total_kv = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  float scale = 0.0f;
  DType dtype = DType::kBF16;
};

// Varlen twins of the launchers above; same dtype, head_dim, GQA and error rules.
[[nodiscard]] absl::Status LaunchVarlenDenseAttention(const VarlenAttentionParams& p,
                                                      cudaStream_t stream);
[[nodiscard]] absl::Status LaunchVarlenSparseAttention(const VarlenAttentionParams& p,
                                                       const BlockSelection& sel,
                                                       cudaStream_t stream);

// Checks shapes, the causal range and (for the reference) that every selection list is
// well formed; InvalidArgument names the first problem.
[[nodiscard]] absl::Status ValidateAttention(const AttentionParams& p);
[[nodiscard]] absl::Status ValidateSelection(const AttentionParams& p, const BlockSelection& sel);

}  // namespace sparsefill::kernels
