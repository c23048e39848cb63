#include <cuda_bf16.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "tools/bench/attention/attention_inputs.h"

namespace sparsefill::bench {
namespace {

__device__ __forceinline__ uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from 24 bits of a hash.
__device__ __forceinline__ float Unit(uint64_t h) {
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

// About N(0, 1): the sum of three uniforms, rescaled (variance 1).
__device__ __forceinline__ float Noise(uint64_t h) {
  return (Unit(h) + Unit(Mix(h)) + Unit(Mix(h + 1)) - 1.5f) * 2.0f;
}

// +-1 entries of topic direction `topic` of KV head `g`.
__device__ __forceinline__ float Direction(uint64_t seed, int g, int topic, int c) {
  return (Mix(seed ^ (0xD1ull << 56) ^ (uint64_t(g) << 40) ^ (uint64_t(topic) << 32) ^ c) & 1)
             ? 1.0f
             : -1.0f;
}

constexpr int kTopics = 4;
constexpr int64_t kTopicSpan = 8192;  // tokens of queries sharing a topic
constexpr int64_t kSalientBlock = 64;

__global__ void FillKernel(__nv_bfloat16* q, __nv_bfloat16* k, __nv_bfloat16* v, uint8_t* punct,
                           int64_t tokens, int q_heads, int kv_heads, int d, uint64_t seed) {
  const int64_t q_row = int64_t{q_heads} * d, kv_row = int64_t{kv_heads} * d;
  const int64_t total = tokens * (q_row + 2 * kv_row + 1);
  const int group = q_heads / kv_heads;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    // (tensor, index within it): the hash must not depend on `tokens` (prefix property).
    int tensor = 0;
    int64_t j = idx;
    if (j >= tokens * q_row) {
      j -= tokens * q_row;
      tensor = 1;
      if (j >= tokens * kv_row) {
        j -= tokens * kv_row;
        tensor = 2;
        if (j >= tokens * kv_row) {
          j -= tokens * kv_row;
          tensor = 3;
        }
      }
    }
    const uint64_t h = Mix(seed ^ Mix((uint64_t(tensor) << 60) ^ static_cast<uint64_t>(j)));
    if (tensor == 0) {
      const int64_t t = j / q_row;
      const int head = static_cast<int>(j % q_row / d), c = static_cast<int>(j % d);
      const int topic = static_cast<int>((t / kTopicSpan) % kTopics);
      q[j] = __float2bfloat16_rn(Noise(h) + 0.5f * Direction(seed, head / group, topic, c));
    } else if (tensor == 1) {
      const int64_t t = j / kv_row;
      const int g = static_cast<int>(j % kv_row / d), c = static_cast<int>(j % d);
      const uint64_t bh = Mix(seed ^ (0xB1ull << 56) ^ (uint64_t(g) << 40) ^ (t / kSalientBlock));
      const bool salient = Unit(bh) < 0.1f;
      const int topic = static_cast<int>(Mix(bh) % kTopics);
      k[j] = __float2bfloat16_rn(Noise(h) + (salient ? Direction(seed, g, topic, c) : 0.0f));
    } else if (tensor == 2) {
      v[j] = __float2bfloat16_rn(Noise(h));
    } else {
      punct[j] = Unit(h) < 0.08f ? 1 : 0;
    }
  }
}

}  // namespace

absl::Status FillAttentionInputs(const AttentionInputs& in, cudaStream_t stream) {
  if (in.tokens <= 0 || in.q_heads <= 0 || in.kv_heads <= 0 || in.head_dim <= 0 ||
      in.q_heads % in.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention inputs: tokens ", in.tokens,
                                                   ", q_heads ", in.q_heads, ", kv_heads ",
                                                   in.kv_heads, ", head_dim ", in.head_dim));
  }
  if (in.q == nullptr || in.k == nullptr || in.v == nullptr || in.punct == nullptr) {
    return absl::InvalidArgumentError("attention inputs: null buffer");
  }
  FillKernel<<<132 * 16, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(in.q),
                                           static_cast<__nv_bfloat16*>(in.k),
                                           static_cast<__nv_bfloat16*>(in.v), in.punct, in.tokens,
                                           in.q_heads, in.kv_heads, in.head_dim, in.seed);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("attention inputs: launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::bench
