// Host side of the flash attention launchers: parameter checks (InvalidArgument naming the field,
// before any CUDA call), AttentionParams / VarlenAttentionParams -> FlashParams, the head_dim x
// row-tile dispatch and the launch itself. Private to kernels/.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/common/cuda_dtype.cuh"
#include "kernels/common/flash_fwd.cuh"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kernels/attention.h"

namespace sparsefill::kernels::cuda::flash {

// Positions are int32 on the device; the last tile may reach a tile past the last key.
constexpr int64_t kMaxTokens = std::numeric_limits<int32_t>::max() - 128;
constexpr int kMaxGroup = 16;

struct FlashShape {
  int32_t q_heads, kv_heads, head_dim;
  float scale;
  DType dtype;
};

inline absl::Status CheckShape(const char* op, const FlashShape& s) {
  if (s.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": dtype ", static_cast<int>(s.dtype), " not supported (BF16 only)"));
  }
  if (s.q_heads <= 0 || s.kv_heads <= 0 || s.q_heads % s.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": q_heads ", s.q_heads, " / kv_heads ",
                                                   s.kv_heads,
                                                   " must be positive, q_heads a multiple"));
  }
  if (s.q_heads / s.kv_heads > kMaxGroup) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": GQA group q_heads / kv_heads = ", s.q_heads / s.kv_heads, " exceeds ", kMaxGroup));
  }
  if (s.kv_heads > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": kv_heads ", s.kv_heads, " exceeds 65535 (grid dimension)"));
  }
  if (s.head_dim != 64 && s.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": head_dim ", s.head_dim, " not supported (64 or 128)"));
  }
  if (!std::isfinite(s.scale) || s.scale == 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": scale ", s.scale, " must be finite and non-zero"));
  }
  return absl::OkStatus();
}

inline absl::Status CheckPointers(const char* op, const void* q, const void* k, const void* v,
                                  const void* out, const float* lse) {
  if (q == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": q is null"));
  if (k == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": k is null"));
  if (v == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": v is null"));
  if (out == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": out is null"));
  // cp.async moves 16-byte chunks; the output is stored as bf16 pairs.
  if (!Aligned16(q) || !Aligned16(k) || !Aligned16(v)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": q, k and v must be 16-byte aligned"));
  }
  if (reinterpret_cast<uintptr_t>(out) % 4 != 0 || reinterpret_cast<uintptr_t>(lse) % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": out and lse must be 4-byte aligned"));
  }
  return absl::OkStatus();
}

inline absl::Status CheckSelection(const char* op, const BlockSelection& sel, bool has_work) {
  // Slots of one merge window (1024 blocks) are counted in int32.
  if (sel.block_size <= 0 || sel.block_size > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": selection block_size ", sel.block_size, " outside 1 .. 2^20"));
  }
  if (sel.max_blocks < 0 || sel.max_blocks > (1 << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": selection max_blocks ", sel.max_blocks, " outside 0 .. 2^24"));
  }
  if (has_work && sel.max_blocks > 0 && sel.blocks == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": selection blocks is null"));
  }
  return absl::OkStatus();
}

inline FlashParams ToFlash(const FlashShape& s, const void* q, const void* k, const void* v,
                           void* out, float* lse) {
  FlashParams f;
  f.q = static_cast<const __nv_bfloat16*>(q);
  f.k = static_cast<const __nv_bfloat16*>(k);
  f.v = static_cast<const __nv_bfloat16*>(v);
  f.out = static_cast<__nv_bfloat16*>(out);
  f.lse = lse;
  f.q_heads = s.q_heads;
  f.kv_heads = s.kv_heads;
  f.group = s.q_heads / s.kv_heads;
  f.scale_log2 = s.scale * 1.4426950408889634f;
  return f;
}

// Checks a single-sequence call and fills `f`; `*has_work` is false when there are no queries.
inline absl::Status FromAttention(const char* op, const AttentionParams& p, FlashParams* f,
                                  bool* has_work) {
  const FlashShape shape{p.q_heads, p.kv_heads, p.head_dim, p.scale, p.dtype};
  SF_RETURN_IF_ERROR(CheckShape(op, shape));
  if (p.num_q < 0 || p.num_kv < 0 || p.q_pos0 < 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": num_q ", p.num_q, ", num_kv ", p.num_kv,
                                                   " and q_pos0 ", p.q_pos0, " must be >= 0"));
  }
  if (p.num_q > p.num_kv - p.q_pos0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": q_pos0 + num_q = ", p.q_pos0, " + ",
                                                   p.num_q, " exceeds num_kv ", p.num_kv));
  }
  if (p.num_kv > kMaxTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": num_kv ", p.num_kv, " exceeds ", kMaxTokens));
  }
  *has_work = p.num_q > 0;
  if (*has_work) SF_RETURN_IF_ERROR(CheckPointers(op, p.q, p.k, p.v, p.out, p.lse));
  *f = ToFlash(shape, p.q, p.k, p.v, p.out, p.lse);
  f->total_q = static_cast<int32_t>(p.num_q);
  f->total_kv = static_cast<int32_t>(p.num_kv);
  f->q_pos0 = static_cast<int32_t>(p.q_pos0);
  return absl::OkStatus();
}

inline absl::Status FromVarlen(const char* op, const VarlenAttentionParams& p, FlashParams* f,
                               bool* has_work) {
  const FlashShape shape{p.q_heads, p.kv_heads, p.head_dim, p.scale, p.dtype};
  SF_RETURN_IF_ERROR(CheckShape(op, shape));
  if (p.num_seqs < 1 || p.num_seqs > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": num_seqs ", p.num_seqs, " outside 1 .. 65535"));
  }
  if (p.total_q < 0 || p.total_kv < 0 || p.total_q > kMaxTokens || p.total_kv > kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": total_q ", p.total_q, " / total_kv ",
                                                   p.total_kv, " outside 0 .. ", kMaxTokens));
  }
  if (p.max_seqlen_q < 0 || p.max_seqlen_q > p.total_q) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": max_seqlen_q ", p.max_seqlen_q, " outside 0 .. total_q ", p.total_q));
  }
  if (p.cu_seqlens_q == nullptr || p.cu_seqlens_kv == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": cu_seqlens_q / cu_seqlens_kv is null"));
  }
  *has_work = p.total_q > 0 && p.max_seqlen_q > 0;
  if (*has_work) SF_RETURN_IF_ERROR(CheckPointers(op, p.q, p.k, p.v, p.out, p.lse));
  *f = ToFlash(shape, p.q, p.k, p.v, p.out, p.lse);
  f->cu_q = p.cu_seqlens_q;
  f->cu_kv = p.cu_seqlens_kv;
  f->total_q = static_cast<int32_t>(p.total_q);
  f->total_kv = static_cast<int32_t>(p.total_kv);
  return absl::OkStatus();
}

// Raises kernel's dynamic shared memory to smem_bytes and launches it with (f, args...) over
// grid x = query tiles of the longest sequence (f.tokens_per_cta tokens each), y = sequence,
// z = KV head. Every flash launcher (mma.sync, dense and sparse wgmma) ends here.
template <typename... KernelArgs, typename... Args>
absl::Status LaunchOverQueryTiles(const char* op, void (*kernel)(FlashParams, KernelArgs...),
                                  int threads, int smem_bytes, const FlashParams& f, int num_seqs,
                                  int64_t max_q, cudaStream_t stream, const Args&... args) {
  const int64_t tiles = (max_q + f.tokens_per_cta - 1) / f.tokens_per_cta;
  const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (attr != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat(op, ": cudaFuncSetAttribute(", smem_bytes,
                     " bytes of shared memory) failed: ", cudaGetErrorString(attr)));
  }
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(num_seqs),
                  static_cast<unsigned>(f.kv_heads));
  kernel<<<grid, threads, smem_bytes, stream>>>(f, args...);
  return LaunchStatus(op);
}

template <int kD, int kMTiles, int kN>
absl::Status LaunchFlashKernel(const char* op, void (*kernel)(FlashParams), int smem_bytes,
                               FlashParams f, int num_seqs, int64_t max_q, cudaStream_t stream) {
  f.tokens_per_cta = FlashTile<kD, kMTiles, kN>::kRows / f.group;
  return LaunchOverQueryTiles(op, kernel, kThreads, smem_bytes, f, num_seqs, max_q, stream);
}

}  // namespace sparsefill::kernels::cuda::flash
