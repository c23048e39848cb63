// Top-k of the block scores: one warp per (KV head, query). A radix select over order-preserving
// 32-bit keys (4 passes of 8 bits, a 256-bin histogram per warp in shared memory) finds the k-th
// best key; one pass in block order then takes every key above it and, of the keys equal to it,
// the ones with the lowest block index (the reference's tie rule), so the list comes out sorted.
// NOSA runs the same select a second time on the query-agnostic importance, skipping the blocks
// the scores already took, and the two sorted lists are merged. This kernel serves the
// materialised path; the fused scoring pass (selection_score_kernel.cuh) uses the same warp
// select on its running lists and the same PlanRow / FinishRow.
#pragma once

#include <cstdint>

namespace sparsefill::kernels::cuda {

constexpr int kTopkWarps = 4;
constexpr int kTopkMax = 256;  // entries per list the kernel supports

struct SelectTopkArgs {
  const float* block_scores;  // [kv_heads, chunk_q, score_stride]
  const float* importance;    // [kv_heads, importance_blocks]; NOSA only
  int32_t* blocks;            // [kv_heads, num_q, topk]
  int64_t q_begin;            // first query of this chunk (index into blocks' num_q)
  int64_t nq;                 // queries in this chunk
  int64_t q_pos0;
  int64_t num_q;
  int64_t chunk_q;
  int64_t score_stride;
  int64_t importance_blocks;
  int32_t kv_heads;
  int32_t block_size;
  int32_t init_blocks;
  int32_t local_blocks;
  int32_t topk;
  int32_t query_aware;  // already resolved: 1 .. topk
};

// Larger float -> larger key; NaN ranks as -inf and -0 as +0 (the reference compares floats).
// Key 0 is below every float: it marks blocks that must not be taken.
__device__ __forceinline__ uint32_t OrderedKey(float v) {
  if (isnan(v)) v = -INFINITY;
  if (v == 0.0f) v = 0.0f;
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ int LowerBound(const int32_t* list, int n, int32_t v) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (list[mid] < v) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Takes the best `n` of blocks [lo, hi) by key(b) (key 0 = excluded; at least n blocks are not)
// into `list`, ascending. `eligible` is the number of non-excluded blocks. Returns the n-th best
// key when n < eligible (every block with a larger key was taken), else 0.
template <typename KeyFn>
__device__ uint32_t WarpSelectTop(int64_t lo, int64_t hi, int n, int64_t eligible, KeyFn key,
                                  uint32_t* hist, int32_t* list) {
  const int lane = threadIdx.x % 32;
  const uint32_t lt = (1u << lane) - 1u;
  if (n <= 0) return 0;
  uint32_t threshold = 0;       // take every non-excluded block ...
  int64_t need_eq = 1LL << 62;  // ... unless fewer are wanted
  if (n < eligible) {
    uint32_t prefix = 0, mask = 0;
    int64_t remaining = n;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = lane; b < 256; b += 32) hist[b] = 0;
      __syncwarp();
      for (int64_t b = lo + lane; b < hi; b += 32) {
        const uint32_t k = key(b);
        if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
      }
      __syncwarp();
      uint32_t c[8];
      uint32_t tot = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        c[j] = hist[lane * 8 + j];
        tot += c[j];
      }
      uint32_t suffix = tot;  // keys in this lane's bins and all higher lanes
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t v = __shfl_down_sync(0xffffffffu, suffix, o);
        if (lane + o < 32) suffix += v;
      }
      const uint32_t enough = __ballot_sync(0xffffffffu, suffix >= remaining);
      const int owner = 31 - __clz(enough);
      int digit = 0;
      int64_t rem = remaining;
      if (lane == owner) {
        int64_t above = suffix - tot;
        for (int j = 7; j >= 0; --j) {
          if (above + c[j] >= remaining) {
            digit = lane * 8 + j;
            rem = remaining - above;
            break;
          }
          above += c[j];
        }
      }
      digit = __shfl_sync(0xffffffffu, digit, owner);
      rem = __shfl_sync(0xffffffffu, rem, owner);
      prefix |= static_cast<uint32_t>(digit) << shift;
      mask |= 255u << shift;
      remaining = rem;
      __syncwarp();
    }
    threshold = prefix;
    need_eq = remaining;
  }
  int taken = 0;
  int64_t eq_seen = 0;
  for (int64_t base = lo; base < hi && taken < n; base += 32) {
    const int64_t b = base + lane;
    const uint32_t k = b < hi ? key(b) : 0u;
    const bool gt = k > threshold;
    const bool eq = k != 0u && k == threshold;
    const uint32_t eq_mask = __ballot_sync(0xffffffffu, eq);
    const bool take = gt || (eq && eq_seen + __popc(eq_mask & lt) < need_eq);
    const uint32_t take_mask = __ballot_sync(0xffffffffu, take);
    if (take) list[taken + __popc(take_mask & lt)] = static_cast<int32_t>(b);
    taken += __popc(take_mask);
    eq_seen += __popc(eq_mask);
  }
  __syncwarp();
  return threshold;
}

// Which blocks of query t (absolute position) are forced and how many are chosen by score.
struct RowPlan {
  int64_t qb;       // the query's own block
  int64_t n_out;    // valid entries in its list
  int64_t cand_lo;  // candidates (neither init nor local) are [cand_lo, cand_hi)
  int64_t cand_hi;
  int64_t n_forced;  // init + local blocks
  int by_score;      // candidates taken by score
  int by_imp;        // candidates taken by query-agnostic importance (NOSA)
};

__device__ __forceinline__ RowPlan PlanRow(const SelectTopkArgs& a, int64_t t) {
  RowPlan r;
  r.qb = t / a.block_size;
  const int64_t n_valid = r.qb + 1;
  r.n_out = min(int64_t{a.topk}, n_valid);
  r.cand_lo = min(int64_t{a.init_blocks}, n_valid);
  r.cand_hi = max(r.cand_lo, r.qb - a.local_blocks);
  r.n_forced = n_valid - (r.cand_hi - r.cand_lo);
  r.by_score = static_cast<int>(min(int64_t{a.query_aware}, r.n_out) - r.n_forced);
  r.by_imp = static_cast<int>(r.n_out - r.n_forced - r.by_score);
  return r;
}

// One warp: given the row's score choice `sl` (by_score blocks, ascending), takes the importance
// part into `il` (NOSA) and writes the list: init blocks, the two chosen lists merged, the local
// window, then -1. `i` is the query's index within the chunk.
__device__ void FinishRow(const SelectTopkArgs& a, const RowPlan& r, int64_t g, int64_t i,
                          const int32_t* sl, int32_t* il, uint32_t* hist) {
  const int lane = threadIdx.x % 32;
  const int by_score = r.by_score, by_imp = r.by_imp;
  if (by_imp > 0) {
    const float* imp = a.importance + g * a.importance_blocks;
    WarpSelectTop(
        r.cand_lo, r.cand_hi, by_imp, r.cand_hi - r.cand_lo - by_score,
        [imp, sl, by_score](int64_t b) {
          const int pos = LowerBound(sl, by_score, static_cast<int32_t>(b));
          return pos < by_score && sl[pos] == b ? 0u : OrderedKey(imp[b]);
        },
        hist, il);
  }
  int32_t* out = a.blocks + (g * a.num_q + a.q_begin + i) * a.topk;
  for (int64_t j = lane; j < r.cand_lo; j += 32) out[j] = static_cast<int32_t>(j);
  for (int j = lane; j < by_score; j += 32)
    out[r.cand_lo + j + LowerBound(il, by_imp, sl[j])] = sl[j];
  for (int j = lane; j < by_imp; j += 32)
    out[r.cand_lo + j + LowerBound(sl, by_score, il[j])] = il[j];
  const int64_t chosen_end = r.cand_lo + by_score + by_imp;
  for (int64_t j = lane; j < r.n_forced - r.cand_lo; j += 32) {
    out[chosen_end + j] = static_cast<int32_t>(r.cand_hi + j);
  }
  for (int64_t j = r.n_out + lane; j < a.topk; j += 32) out[j] = -1;
  __syncwarp();
}

// Grid: ceil(kv_heads * nq / kTopkWarps) CTAs of kTopkWarps warps.
__global__ void __launch_bounds__(kTopkWarps * 32) SelectTopkKernel(const SelectTopkArgs a) {
  __shared__ uint32_t hist_all[kTopkWarps][256];
  __shared__ int32_t score_list[kTopkWarps][kTopkMax];
  __shared__ int32_t imp_list[kTopkWarps][kTopkMax];
  const int warp = threadIdx.x / 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kTopkWarps + warp;
  if (row >= a.kv_heads * a.nq) return;  // whole warps only: the warp functions stay converged
  const int64_t g = row / a.nq, i = row % a.nq;
  const RowPlan r = PlanRow(a, a.q_pos0 + a.q_begin + i);
  int32_t* sl = score_list[warp];
  const float* scores = a.block_scores + (g * a.chunk_q + i) * a.score_stride;
  WarpSelectTop(
      r.cand_lo, r.cand_hi, r.by_score, r.cand_hi - r.cand_lo,
      [scores](int64_t b) { return OrderedKey(scores[b]); }, hist_all[warp], sl);
  FinishRow(a, r, g, i, sl, imp_list[warp], hist_all[warp]);
}

}  // namespace sparsefill::kernels::cuda
