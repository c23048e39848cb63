// The cuda engine's small kernels (engine_kernels.h). Plain CUDA-core code: each is bandwidth-
// bound or tiny next to the GEMMs and attention.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "services/engine/cuda/engine_kernels.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::cuda {
namespace {

absl::Status Launched(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": launch failed: ", cudaGetErrorString(err)));
}

__device__ __forceinline__ float B2F(uint16_t v) {
  return __uint_as_float(static_cast<uint32_t>(v) << 16);
}
__device__ __forceinline__ uint16_t F2B(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

unsigned GridFor(int64_t items, int threads) {
  return static_cast<unsigned>(std::clamp<int64_t>((items + threads - 1) / threads, 1, 1 << 20));
}

__global__ void EmbedRowsKernel(const int32_t* __restrict__ tokens,
                                const uint16_t* __restrict__ table, uint16_t* __restrict__ out,
                                int64_t rows, int64_t dim, float scale) {
  const int64_t total = rows * dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / dim, c = i - r * dim;
    const uint16_t v = table[int64_t{tokens[r]} * dim + c];
    out[i] = scale == 1.0f ? v : F2B(B2F(v) * scale);
  }
}

__global__ void AddScaledKernel(uint16_t* __restrict__ x, const uint16_t* __restrict__ delta,
                                int64_t count, float scale) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = F2B(B2F(x[i]) + scale * B2F(delta[i]));
  }
}

__global__ void Bf16ToF32Kernel(const uint16_t* __restrict__ in, float* __restrict__ out,
                                int64_t count) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = B2F(in[i]);
  }
}

__global__ void CountSelectedKeysKernel(const int32_t* __restrict__ blocks, int64_t kv_heads,
                                        int64_t num_q, int32_t max_blocks, int64_t q_pos0,
                                        int32_t block_size, unsigned long long* counts) {
  unsigned long long mine = 0;
  const int64_t lists = kv_heads * num_q;
  for (int64_t l = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; l < lists;
       l += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = q_pos0 + l % num_q;
    const int32_t* row = blocks + l * max_blocks;
    for (int32_t j = 0; j < max_blocks; ++j) {
      const int32_t e = row[j];
      if (e < 0) break;
      const int64_t keys = t + 1 - int64_t{e} * block_size;
      mine +=
          static_cast<unsigned long long>(keys < 0 ? 0 : (keys > block_size ? block_size : keys));
    }
  }
  for (int off = 16; off > 0; off >>= 1) mine += __shfl_down_sync(0xffffffffu, mine, off);
  if ((threadIdx.x & 31) == 0 && mine != 0) atomicAdd(counts, mine);
}

// Block importance in three steps over key tiles of kTile keys, for the R = num_q * group rows
// (observer, head) of one KV head:
//   1. per (row, tile): max and sum of exp of the tile's scaled scores (causal);
//   2. per row: log-sum-exp over the tiles;
//   3. per tile: each block's mass sum over rows of exp(score - lse), written once (a tile holds
//      whole blocks), so every sum has one fixed order.
constexpr int kTile = 128;
constexpr int kThreads = 256;
constexpr int kRowChunk = kThreads / 32;  // one warp per row at a time
constexpr int kMaxDim = 128;

struct ImpArgs {
  DeviceImportanceParams p;
  int64_t tiles;
  int64_t rows;  // per KV head
};

// Scores of row `r` (of KV head g) against the tile's keys held in smem; lane l holds keys
// l, l + 32, l + 64, l + 96 of the tile (-inf past the causal limit or the end).
__device__ __forceinline__ void RowScores(const ImpArgs& a, int g, int64_t r, int64_t tile,
                                          const float* ks, float s[kTile / 32]) {
  const int group = a.p.q_heads / a.p.kv_heads;
  const int64_t o = r / group;
  const int h = g * group + static_cast<int>(r % group);
  const int d = a.p.head_dim;
  const int lane = threadIdx.x & 31;
  const uint16_t* q = a.p.q + (o * a.p.q_heads + h) * int64_t{d};
  const int64_t limit = a.p.q_pos0 + o;  // last visible key
#pragma unroll
  for (int j = 0; j < kTile / 32; ++j) s[j] = 0.0f;
  for (int c = 0; c < d; ++c) {
    const float qc = B2F(q[c]);
#pragma unroll
    for (int j = 0; j < kTile / 32; ++j) s[j] += qc * ks[(lane + 32 * j) * (kMaxDim + 1) + c];
  }
#pragma unroll
  for (int j = 0; j < kTile / 32; ++j) {
    const int64_t key = tile * kTile + lane + 32 * j;
    s[j] = (key <= limit && key < a.p.num_kv) ? s[j] * a.p.scale : -INFINITY;
  }
}

__device__ void LoadKeys(const ImpArgs& a, int g, int64_t tile, float* ks) {
  const int d = a.p.head_dim;
  for (int i = threadIdx.x; i < kTile * d; i += blockDim.x) {
    const int kk = i / d, c = i - kk * d;
    const int64_t key = tile * kTile + kk;
    ks[kk * (kMaxDim + 1) + c] =
        key < a.p.num_kv ? B2F(a.p.k[(key * a.p.kv_heads + g) * int64_t{d} + c]) : 0.0f;
  }
  __syncthreads();
}

__global__ void ImportancePartials(ImpArgs a) {
  extern __shared__ float ks[];
  const int64_t tile = blockIdx.x;
  const int g = blockIdx.y;
  LoadKeys(a, g, tile, ks);
  float* part = a.p.workspace;  // [kv_heads, rows, tiles, 2]
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  for (int64_t r = warp; r < a.rows; r += kRowChunk) {
    float s[kTile / 32];
    RowScores(a, g, r, tile, ks, s);
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < kTile / 32; ++j) m = fmaxf(m, s[j]);
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    float l = 0.0f;
    if (m != -INFINITY) {
#pragma unroll
      for (int j = 0; j < kTile / 32; ++j) l += __expf(s[j] - m);
    }
    for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
    if (lane == 0) {
      float* out = part + ((int64_t{g} * a.rows + r) * a.tiles + tile) * 2;
      out[0] = m;
      out[1] = l;
    }
  }
}

__global__ void ImportanceLse(ImpArgs a) {
  // One warp per (KV head, row).
  const int64_t warp_id = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (warp_id >= a.p.kv_heads * a.rows) return;
  const float* part = a.p.workspace + warp_id * a.tiles * 2;
  float m = -INFINITY;
  for (int64_t t = lane; t < a.tiles; t += 32) m = fmaxf(m, part[t * 2]);
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  float l = 0.0f;
  if (m != -INFINITY) {
    for (int64_t t = lane; t < a.tiles; t += 32) {
      const float mt = part[t * 2];
      if (mt != -INFINITY) l += part[t * 2 + 1] * __expf(mt - m);
    }
  }
  for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
  float* lse = a.p.workspace + a.p.kv_heads * a.rows * a.tiles * 2;
  if (lane == 0) lse[warp_id] = m == -INFINITY ? INFINITY : m + __logf(l);
}

__global__ void ImportanceMass(ImpArgs a) {
  extern __shared__ float ks[];
  __shared__ float mass[kRowChunk][kTile];
  const int64_t tile = blockIdx.x;
  const int g = blockIdx.y;
  LoadKeys(a, g, tile, ks);
  const float* lse = a.p.workspace + a.p.kv_heads * a.rows * a.tiles * 2 + int64_t{g} * a.rows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  float acc[kTile / 32];
#pragma unroll
  for (int j = 0; j < kTile / 32; ++j) acc[j] = 0.0f;
  for (int64_t r = warp; r < a.rows; r += kRowChunk) {
    float s[kTile / 32];
    RowScores(a, g, r, tile, ks, s);
    const float row_lse = lse[r];
#pragma unroll
    for (int j = 0; j < kTile / 32; ++j)
      acc[j] += s[j] == -INFINITY ? 0.0f : __expf(s[j] - row_lse);
  }
#pragma unroll
  for (int j = 0; j < kTile / 32; ++j) mass[warp][lane + 32 * j] = acc[j];
  __syncthreads();
  const int bs = a.p.block_size;
  const int blocks_in_tile = kTile / bs;
  const int64_t num_blocks = (a.p.num_kv + bs - 1) / bs;
  for (int b = threadIdx.x; b < blocks_in_tile; b += blockDim.x) {
    const int64_t blk = tile * blocks_in_tile + b;
    if (blk >= num_blocks) continue;
    float total = 0.0f;
    for (int w = 0; w < kRowChunk; ++w) {
      for (int kk = b * bs; kk < (b + 1) * bs; ++kk) total += mass[w][kk];
    }
    a.p.importance[int64_t{g} * num_blocks + blk] = total;
  }
}

}  // namespace

absl::Status LaunchEmbedRows(const int32_t* tokens, const uint16_t* table, uint16_t* out,
                             int64_t rows, int64_t dim, float scale, cudaStream_t stream) {
  if (rows < 0 || dim <= 0 || (rows > 0 && (tokens == nullptr || table == nullptr || !out))) {
    return absl::InvalidArgumentError(absl::StrCat("EmbedRows: bad rows ", rows, " / dim ", dim));
  }
  if (rows == 0) return absl::OkStatus();
  EmbedRowsKernel<<<GridFor(rows * dim, 256), 256, 0, stream>>>(tokens, table, out, rows, dim,
                                                                scale);
  return Launched("EmbedRows");
}

absl::Status LaunchAddScaled(uint16_t* x, const uint16_t* delta, int64_t count, float scale,
                             cudaStream_t stream) {
  if (count < 0 || (count > 0 && (x == nullptr || delta == nullptr))) {
    return absl::InvalidArgumentError(absl::StrCat("AddScaled: bad count ", count));
  }
  if (count == 0) return absl::OkStatus();
  AddScaledKernel<<<GridFor(count, 256), 256, 0, stream>>>(x, delta, count, scale);
  return Launched("AddScaled");
}

absl::Status LaunchBf16ToF32(const uint16_t* in, float* out, int64_t count, cudaStream_t stream) {
  if (count < 0 || (count > 0 && (in == nullptr || out == nullptr))) {
    return absl::InvalidArgumentError(absl::StrCat("Bf16ToF32: bad count ", count));
  }
  if (count == 0) return absl::OkStatus();
  Bf16ToF32Kernel<<<GridFor(count, 256), 256, 0, stream>>>(in, out, count);
  return Launched("Bf16ToF32");
}

absl::Status LaunchCountSelectedKeys(const int32_t* blocks, int64_t kv_heads, int64_t num_q,
                                     int32_t max_blocks, int64_t q_pos0, int32_t block_size,
                                     unsigned long long* counts, cudaStream_t stream) {
  if (kv_heads <= 0 || num_q < 0 || max_blocks <= 0 || q_pos0 < 0 || block_size <= 0 ||
      counts == nullptr || (num_q > 0 && blocks == nullptr)) {
    return absl::InvalidArgumentError("CountSelectedKeys: bad parameters");
  }
  if (num_q == 0) return absl::OkStatus();
  CountSelectedKeysKernel<<<GridFor(kv_heads * num_q, 256), 256, 0, stream>>>(
      blocks, kv_heads, num_q, max_blocks, q_pos0, block_size, counts);
  return Launched("CountSelectedKeys");
}

int64_t ImportanceWorkspaceFloats(int64_t num_q, int32_t q_heads, int64_t num_kv) {
  const int64_t tiles = (num_kv + kTile - 1) / kTile;
  // Partials (max, sum) per (row, tile) for every KV head, then one LSE per row.
  return int64_t{q_heads} * num_q * (tiles * 2 + 1);
}

absl::Status LaunchBlockImportance(const DeviceImportanceParams& p, cudaStream_t stream) {
  if (p.q_heads <= 0 || p.kv_heads <= 0 || p.q_heads % p.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("BlockImportance: q_heads ", p.q_heads,
                                                   " must be a positive multiple of kv_heads ",
                                                   p.kv_heads));
  }
  if (p.head_dim <= 0 || p.head_dim > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("BlockImportance: head_dim ", p.head_dim, " must be in 1..", kMaxDim));
  }
  if (p.block_size <= 0 || kTile % p.block_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("BlockImportance: block_size ", p.block_size, " must divide ", kTile));
  }
  if (p.num_q <= 0 || p.q_pos0 < 0 || p.q_pos0 + p.num_q > p.num_kv) {
    return absl::InvalidArgumentError(absl::StrCat("BlockImportance: observers at ", p.q_pos0,
                                                   " + ", p.num_q, " must lie within num_kv ",
                                                   p.num_kv));
  }
  if (!p.q || !p.k || !p.importance || !p.workspace || !std::isfinite(p.scale)) {
    return absl::InvalidArgumentError("BlockImportance: null pointer or non-finite scale");
  }
  ImpArgs a{p, (p.num_kv + kTile - 1) / kTile, p.num_q * (p.q_heads / p.kv_heads)};
  const size_t smem = sizeof(float) * kTile * (kMaxDim + 1);
  // The dynamic shared-memory limit, raised once per process.
  static const cudaError_t raised = [smem] {
    const cudaError_t e = cudaFuncSetAttribute(
        ImportancePartials, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    return cudaFuncSetAttribute(ImportanceMass, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(smem));
  }();
  if (raised != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("BlockImportance: shared memory limit: ", cudaGetErrorString(raised)));
  }
  const dim3 grid(static_cast<unsigned>(a.tiles), static_cast<unsigned>(p.kv_heads));
  ImportancePartials<<<grid, kThreads, smem, stream>>>(a);
  SF_RETURN_IF_ERROR(Launched("BlockImportance (partials)"));
  const int64_t warps = p.kv_heads * a.rows;
  ImportanceLse<<<GridFor(warps * 32, 256), 256, 0, stream>>>(a);
  SF_RETURN_IF_ERROR(Launched("BlockImportance (lse)"));
  ImportanceMass<<<grid, kThreads, smem, stream>>>(a);
  return Launched("BlockImportance (mass)");
}

}  // namespace sparsefill::engine::cuda
