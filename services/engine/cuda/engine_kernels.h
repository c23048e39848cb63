// Small device kernels only the cuda engine needs: embedding rows, the residual update, bf16 to
// fp32 for the layer sink, key counting over block lists, and the query-agnostic block importance
// (the device twin of kernels::BlockImportanceRef). All asynchronous on `stream`; InvalidArgument
// for bad parameters (checked before any CUDA call), Internal naming the kernel when a launch
// fails. Device pointers throughout.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "sparsefill/kernels/stream.h"

namespace sparsefill::engine::cuda {

// out[r, :] = bf16(float(table[tokens[r], :]) * scale). Token ids are checked on the host.
[[nodiscard]] absl::Status LaunchEmbedRows(const int32_t* tokens,  // [rows]
                                           const uint16_t* table,  // [vocab, dim] bf16
                                           uint16_t* out,          // [rows, dim] bf16
                                           int64_t rows, int64_t dim, float scale,
                                           cudaStream_t stream);

// x[i] = bf16(float(x[i]) + scale * float(delta[i])), i < count.
[[nodiscard]] absl::Status LaunchAddScaled(uint16_t* x, const uint16_t* delta, int64_t count,
                                           float scale, cudaStream_t stream);

// out[i] = float(in[i]) for bf16 in.
[[nodiscard]] absl::Status LaunchBf16ToF32(const uint16_t* in, float* out, int64_t count,
                                           cudaStream_t stream);

// counts[0] += sum over (kv head, query i) and list entries e of
// clamp(q_pos0 + i + 1 - e * block_size, 0, block_size): the keys the lists cover (the CPU
// runner's CountKeys). Integer sums, so the total does not depend on the launch order.
[[nodiscard]] absl::Status LaunchCountSelectedKeys(const int32_t* blocks,  // [kv_heads, num_q, k]
                                                   int64_t kv_heads, int64_t num_q,
                                                   int32_t max_blocks, int64_t q_pos0,
                                                   int32_t block_size,
                                                   unsigned long long* counts,  // [1]
                                                   cudaStream_t stream);

struct DeviceImportanceParams {
  const uint16_t* q = nullptr;  // [num_q, q_heads, head_dim] bf16: the observer queries
  const uint16_t* k = nullptr;  // [num_kv, kv_heads, head_dim] bf16
  float* importance = nullptr;  // [kv_heads, ceil(num_kv / block_size)]
  float* workspace = nullptr;   // ImportanceWorkspaceFloats(...) floats
  int64_t num_q = 0;
  int64_t q_pos0 = 0;  // observer i sits at q_pos0 + i and sees keys 0 .. q_pos0 + i
  int64_t num_kv = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;    // <= 128
  int32_t block_size = 0;  // divides 128
  float scale = 0.0f;
};
int64_t ImportanceWorkspaceFloats(int64_t num_q, int32_t q_heads, int64_t num_kv);
[[nodiscard]] absl::Status LaunchBlockImportance(const DeviceImportanceParams& p,
                                                 cudaStream_t stream);

}  // namespace sparsefill::engine::cuda
