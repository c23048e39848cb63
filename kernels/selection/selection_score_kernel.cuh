// Block-selection scoring on tensor cores (bf16 mma.sync m16n8k16, fp32 accumulation).
//
// The product is computed transposed, S^T = Kc . Q^T: summaries (chunks) are the M side, read
// from shared memory by ldmatrix, and a CTA's kSelCols (query, head) columns are the N side, held
// in registers for the whole kernel (column c = query * G + head, so the G heads of one query
// are neighbouring columns). In that layout each thread owns a few columns over many chunks:
//   - pass 1 (kScores = false) keeps a running max / sum per owned column with no shuffles at
//     all, and merges the 8 lanes sharing a column once at the end;
//   - pass 2 (kScores = true) recomputes the scores, turns them into probabilities with pass 1's
//     log-sum-exp, sums the group (in-thread adds plus at most two shuffles per pair of values),
//     stores the tile's chunk scores per query in shared memory and max-pools them onto blocks
//     right away. Then either
//       - (kFused) each query keeps a running top-k in shared memory: a block enters its list
//         only when it beats the k-th best key so far (blocks arrive in index order, so a tie
//         never displaces an earlier block: the reference's tie rule), and a full list is cut
//         back to k by a warp radix select. The block scores never reach device memory and the
//         kernel writes the finished lists itself; or
//       - the pooled block scores of the current chunk of queries go to device memory for
//         SelectTopkKernel (when the running lists do not fit in shared memory).
// The exact per-head softmax needs every column's LSE before the group sum, hence two passes.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/selection/selection_topk_kernel.cuh"

namespace sparsefill::kernels::cuda {

constexpr int kSelThreads = 128;              // 4 warps
constexpr int kSelNTiles = 4;                 // n8 tiles per warp: 32 columns
constexpr int kSelCols = 4 * 8 * kSelNTiles;  // (query, head) columns per CTA
constexpr int kSelChunkTile = 64;             // summaries per shared-memory tile (4 m16 tiles)
constexpr int kSelHalo = 16;  // max pooling padding (kernel_size / kernel_stride - 1)

struct SelectScoreArgs {
  const __nv_bfloat16* q;          // [num_q, q_heads, head_dim]
  const __nv_bfloat16* summaries;  // [num_chunks, kv_heads, head_dim]
  float* lse;                      // [chunk_q, q_heads]: log2-domain LSE of scaled scores
  float* block_scores;             // [kv_heads, chunk_q, score_stride]
  int64_t q_begin;                 // first query of this chunk (index into q)
  int64_t nq;                      // queries in this chunk
  int64_t q_pos0;                  // absolute position of q[0]
  int64_t num_chunks;
  int64_t chunk_q;       // rows per KV head in block_scores
  int64_t score_stride;  // blocks per row in block_scores
  int32_t q_heads;
  int32_t kv_heads;
  float scale_log2;  // softmax scale * log2(e)
  int32_t kernel_size;
  int32_t kernel_stride;
  int32_t block_size;
  int32_t list_cap;     // kFused: entries of each query's running list (>= topk + blocks per tile)
  SelectTopkArgs topk;  // kFused: what the lists are cut to and where they are written
};

// Chunks whose last key is at or before position t.
__device__ __forceinline__ int64_t VisibleChunks(int64_t t, int32_t kernel, int32_t stride) {
  return t + 1 >= kernel ? (t + 1 - kernel) / stride + 1 : 0;
}

__device__ __forceinline__ void MmaBf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(addr), "l"(gmem));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n"); }
__device__ __forceinline__ void CpAsyncWaitAll() { asm volatile("cp.async.wait_all;\n" ::); }

__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

constexpr int kSelWarps = kSelThreads / 32;

// Shared memory of the fused top-k besides the running lists: per warp a histogram and two
// lists, per query the list length and threshold.
constexpr int SelectFusedFixedBytes(int queries) {
  return kSelWarps * (256 + 2 * kTopkMax) * 4 + queries * 8;
}

// Without the running lists (list_cap = 0 for pass 1 and the unfused pass 2).
template <int kD>
constexpr int SelectScoreSmemBytes(int group) {
  return 2 * kSelChunkTile * (kD + 8) * 2 + (kSelCols / group) * (kSelHalo + kSelChunkTile) * 4;
}

// kFused: the shared memory after the pooled rows.
struct FusedLists {
  uint32_t* hist;  // this warp's [256] radix histogram
  int32_t* sl;     // this warp's [kTopkMax] score list
  int32_t* il;     // this warp's [kTopkMax] importance list
  int32_t* cnt;    // [queries] running list lengths
  uint32_t* thr;   // [queries] keys a new block must beat
  uint32_t* keys;  // [queries][list_cap]
  int32_t* idx;    // [queries][list_cap] block indices, ascending within a list
};

__device__ __forceinline__ FusedLists FusedSmem(float* base, int queries, int list_cap) {
  const int warp = threadIdx.x / 32;
  FusedLists f;
  uint32_t* u = reinterpret_cast<uint32_t*>(base);
  f.hist = u + warp * 256;
  f.sl = reinterpret_cast<int32_t*>(u + kSelWarps * 256) + warp * kTopkMax;
  f.il = f.sl + kSelWarps * kTopkMax;
  f.cnt = reinterpret_cast<int32_t*>(u + kSelWarps * (256 + 2 * kTopkMax));
  f.thr = reinterpret_cast<uint32_t*>(f.cnt + queries);
  f.keys = f.thr + queries;
  f.idx = reinterpret_cast<int32_t*>(f.keys + queries * list_cap);
  return f;
}

template <int kD>
constexpr int SelectFusedSmemBytes(int group, int list_cap) {
  return SelectScoreSmemBytes<kD>(group) + SelectFusedFixedBytes(kSelCols / group) +
         (kSelCols / group) * list_cap * 8;
}

// Grid: (ceil(nq / (kSelCols / kG)), kv_heads); kSelThreads threads; SelectScoreSmemBytes<kD>(kG)
// bytes of dynamic shared memory, SelectFusedSmemBytes<kD>(kG, a.list_cap) when kFused.
template <int kD, int kG, bool kScores, bool kFused>
__global__ void __launch_bounds__(kSelThreads) SelectScoreKernel(const SelectScoreArgs a) {
  static_assert(kD % 32 == 0 && 16 % kG == 0);
  static_assert(kScores || !kFused);
  constexpr int kTq = kSelCols / kG;  // queries per CTA
  constexpr int kPitch = kD + 8;      // bf16 per smem row: 16 bytes of padding, no bank conflicts
  constexpr int kPW = kSelHalo + kSelChunkTile;  // floats per pooled row in smem
  constexpr int kMTiles = kSelChunkTile / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* sk = reinterpret_cast<__nv_bfloat16*>(smem);  // [2][kSelChunkTile][kPitch]
  float* sp = reinterpret_cast<float*>(sk + 2 * kSelChunkTile * kPitch);  // [kTq][kPW]

  const int64_t tiles = (a.nq + kTq - 1) / kTq;
  const int64_t tile = tiles - 1 - blockIdx.x;  // latest (heaviest) queries start first
  const int g = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gid = lane / 4, tig = lane % 4;
  const int64_t i0 = tile * kTq;  // first query of the tile, within the chunk
  const int nq_tile = static_cast<int>(min(int64_t{kTq}, a.nq - i0));
  const int64_t t_first = a.q_pos0 + a.q_begin + i0;
  const int64_t t_last = t_first + nq_tile - 1;

  // Q as mma B fragments: column warp * 32 + nt * 8 + gid, dims ks * 16 + 2 * tig (+1, +8, +9).
  uint32_t qf[kSelNTiles][kD / 16][2];
#pragma unroll
  for (int nt = 0; nt < kSelNTiles; ++nt) {
    const int col = warp * 32 + nt * 8 + gid;
    const int qi = col / kG, h = col % kG;
    const bool ok = qi < nq_tile;
    const __nv_bfloat16* row =
        a.q + ((a.q_begin + i0 + (ok ? qi : 0)) * a.q_heads + g * kG + h) * int64_t{kD};
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      const int c0 = ks * 16 + 2 * tig;
      qf[nt][ks][0] = ok ? *reinterpret_cast<const uint32_t*>(row + c0) : 0u;
      qf[nt][ks][1] = ok ? *reinterpret_cast<const uint32_t*>(row + c0 + 8) : 0u;
    }
  }
  // The accumulator columns this thread owns: warp * 32 + nt * 8 + 2 * tig + e.
  int vis[kSelNTiles][2];
#pragma unroll
  for (int nt = 0; nt < kSelNTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int qi = (warp * 32 + nt * 8 + 2 * tig + e) / kG;
      vis[nt][e] =
          qi < nq_tile
              ? static_cast<int>(VisibleChunks(t_first + qi, a.kernel_size, a.kernel_stride))
              : 0;
    }
  }
  // Tiles that end at or before vis_min need no mask.
  const int64_t vis_min = VisibleChunks(t_first, a.kernel_size, a.kernel_stride);
  const int64_t vis_last = VisibleChunks(t_last, a.kernel_size, a.kernel_stride);
  const int pool_stride = a.block_size / a.kernel_stride;
  const int pool_pad = a.kernel_size / a.kernel_stride - 1;
  // Pass 2 also covers every chunk of the blocks before the last query's own block, visible or
  // not, so each candidate block gets a (possibly 0) score.
  const int64_t need =
      kScores ? max(vis_last, (t_last / a.block_size) * static_cast<int64_t>(pool_stride))
              : vis_last;
  const int64_t n_tiles = (need + kSelChunkTile - 1) / kSelChunkTile;

  auto load_tile = [&](int64_t it, int buf) {
    constexpr int kPieces = kD / 8;  // 16-byte pieces per summary row
    __nv_bfloat16* dst = sk + buf * kSelChunkTile * kPitch;
    for (int p = threadIdx.x; p < kSelChunkTile * kPieces; p += kSelThreads) {
      const int r = p / kPieces, c = (p % kPieces) * 8;
      const int64_t m = it * kSelChunkTile + r;
      if (m < a.num_chunks) {
        CpAsync16(dst + r * kPitch + c, a.summaries + (m * a.kv_heads + g) * int64_t{kD} + c);
      } else {
        *reinterpret_cast<uint4*>(dst + r * kPitch + c) = make_uint4(0, 0, 0, 0);
      }
    }
    CpAsyncCommit();
  };

  // Pass 1: running max / sum (log2 domain) per owned column. Pass 2: the columns' LSE.
  float run_max[kSelNTiles][2], run_sum[kSelNTiles][2], lse[kSelNTiles][2];
#pragma unroll
  for (int nt = 0; nt < kSelNTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      run_max[nt][e] = -INFINITY;
      run_sum[nt][e] = 0.0f;
      // Columns past the last query get +inf: their probabilities are 0, not inf.
      lse[nt][e] = INFINITY;
      if constexpr (kScores) {
        const int col = warp * 32 + nt * 8 + 2 * tig + e;
        if (col / kG < nq_tile) {
          lse[nt][e] = a.lse[(i0 + col / kG) * a.q_heads + g * kG + col % kG];
        }
      }
    }
  }
  if constexpr (kScores) {
    for (int p = threadIdx.x; p < kTq * kSelHalo; p += kSelThreads) {
      sp[(p / kSelHalo) * kPW + p % kSelHalo] = 0.0f;  // chunks before 0 pool as 0
    }
  }
  if constexpr (kFused) {
    const FusedLists fl = FusedSmem(sp + kTq * kPW, kTq, a.list_cap);
    for (int qi = threadIdx.x; qi < kTq; qi += kSelThreads) {
      fl.cnt[qi] = 0;
      fl.thr[qi] = 0;  // key 0 is below every float: take everything until a list is full
    }
  }

  if (n_tiles > 0) load_tile(0, 0);
  for (int64_t it = 0; it < n_tiles; ++it) {
    CpAsyncWaitAll();
    __syncthreads();
    if (it + 1 < n_tiles) load_tile(it + 1, (it + 1) & 1);
    const __nv_bfloat16* tk = sk + (it & 1) * kSelChunkTile * kPitch;

    float acc[kMTiles][kSelNTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int nt = 0; nt < kSelNTiles; ++nt) {
        acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
      }
    }
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        uint32_t af[4];
        LdMatrixX4(af, tk + (mt * 16 + (lane % 8) + ((lane / 8) % 2) * 8) * kPitch + ks * 16 +
                           (lane / 16) * 8);
#pragma unroll
        for (int nt = 0; nt < kSelNTiles; ++nt) {
          MmaBf16(acc[mt][nt], af, qf[nt][ks][0], qf[nt][ks][1]);
        }
      }
    }

    const int64_t m0 = it * kSelChunkTile;
    const bool masked = m0 + kSelChunkTile > vis_min;
    // Chunk of accumulator (mt, r): m0 + mt * 16 + gid + 8 * r (r = 0: c0, c1; r = 1: c2, c3).
    const int mrel = static_cast<int>(min(m0, int64_t{1} << 30));  // only compared when masked
    if constexpr (!kScores) {
#pragma unroll
      for (int nt = 0; nt < kSelNTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float s[kMTiles][2];
          float tmax = -INFINITY;
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              float v = acc[mt][nt][2 * r + e] * a.scale_log2;
              if (masked && mrel + mt * 16 + gid + 8 * r >= vis[nt][e]) v = -INFINITY;
              s[mt][r] = v;
              tmax = fmaxf(tmax, v);
            }
          }
          const float nmax = fmaxf(run_max[nt][e], tmax);
          if (nmax != -INFINITY) {
            float sum = run_sum[nt][e] * FastExp2(run_max[nt][e] - nmax);
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              sum += FastExp2(s[mt][0] - nmax) + FastExp2(s[mt][1] - nmax);
            }
            run_sum[nt][e] = sum;
            run_max[nt][e] = nmax;
          }
        }
      }
    } else {
      // Probabilities, summed over each query's G columns, into smem as one row per query.
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int mloc = mt * 16 + gid + 8 * r;  // chunk within the tile
          float p[kSelNTiles][2];
#pragma unroll
          for (int nt = 0; nt < kSelNTiles; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float v = FastExp2(acc[mt][nt][2 * r + e] * a.scale_log2 - lse[nt][e]);
              if (masked && mrel + mloc >= vis[nt][e]) v = 0.0f;
              p[nt][e] = v;
            }
          }
          float* row = sp + kSelHalo + mloc;
          if constexpr (kG == 1) {
#pragma unroll
            for (int nt = 0; nt < kSelNTiles; ++nt) {
              const int q0 = warp * 32 + nt * 8 + 2 * tig;
              row[q0 * kPW] = p[nt][0];
              row[(q0 + 1) * kPW] = p[nt][1];
            }
          } else if constexpr (kG <= 8) {
#pragma unroll
            for (int nt = 0; nt < kSelNTiles; ++nt) {
              float v = p[nt][0] + p[nt][1];
#pragma unroll
              for (int o = 1; o < kG / 2; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
              const int col = warp * 32 + nt * 8 + 2 * tig;
              if ((2 * tig) % kG == 0) row[(col / kG) * kPW] = v;
            }
          } else {  // kG == 16: a query spans two n-tiles
#pragma unroll
            for (int nt = 0; nt < kSelNTiles; nt += 2) {
              float v = p[nt][0] + p[nt][1] + p[nt + 1][0] + p[nt + 1][1];
              v += __shfl_xor_sync(0xffffffffu, v, 1);
              v += __shfl_xor_sync(0xffffffffu, v, 2);
              if (tig == 0) row[((warp * 32 + nt * 8) / 16) * kPW] = v;
            }
          }
        }
      }
      __syncthreads();
      // Max-pool: block b owns chunks [b * ps, (b + 1) * ps) and also looks back pool_pad chunks
      // (the halo, carried over from the previous tile). Probabilities are >= 0, so chunks that
      // are not visible (stored as 0) never raise a maximum, and a block with none scores 0.
      const int nb = kSelChunkTile / pool_stride;
      const int64_t b0 = m0 / pool_stride;
      if constexpr (kFused) {
        // One warp per query (whole warps: the warp functions need all lanes).
        const FusedLists fl = FusedSmem(sp + kTq * kPW, kTq, a.list_cap);
        for (int qi = warp; qi < nq_tile; qi += kSelWarps) {
          const RowPlan r = PlanRow(a.topk, t_first + qi);
          if (r.by_score <= 0 || b0 >= r.cand_hi || b0 + nb <= r.cand_lo) continue;
          uint32_t* keys = fl.keys + qi * a.list_cap;
          int32_t* idx = fl.idx + qi * a.list_cap;
          int n = fl.cnt[qi];
          uint32_t thr = fl.thr[qi];
          if (n + nb > a.list_cap) {
            // Cut back to the best by_score (n > by_score here); later blocks must beat thr.
            thr = WarpSelectTop(
                0, n, r.by_score, n, [keys](int64_t j) { return keys[j]; }, fl.hist, fl.sl);
            for (int j0 = 0; j0 < r.by_score; j0 += 32) {
              // fl.sl is ascending with fl.sl[j] >= j: this round reads only entries at or after
              // the ones it writes, and earlier rounds wrote only entries before them.
              const int j = j0 + lane;
              uint32_t kk = 0;
              int32_t bb = 0;
              if (j < r.by_score) {
                kk = keys[fl.sl[j]];
                bb = idx[fl.sl[j]];
              }
              __syncwarp();
              if (j < r.by_score) {
                keys[j] = kk;
                idx[j] = bb;
              }
              __syncwarp();
            }
            n = r.by_score;
          }
          for (int j0 = 0; j0 < nb; j0 += 32) {
            const int j = j0 + lane;
            const int64_t b = b0 + j;
            uint32_t key = 0;
            if (j < nb && b >= r.cand_lo && b < r.cand_hi) {
              const float* w = sp + qi * kPW + kSelHalo + j * pool_stride - pool_pad;
              float best = w[0];
              for (int x = 1; x < pool_stride + pool_pad; ++x) best = fmaxf(best, w[x]);
              key = OrderedKey(best);
            }
            const bool take = key > thr;
            const uint32_t take_mask = __ballot_sync(0xffffffffu, take);
            if (take) {
              const int pos = n + __popc(take_mask & ((1u << lane) - 1u));
              keys[pos] = key;
              idx[pos] = static_cast<int32_t>(b);
            }
            n += __popc(take_mask);
          }
          __syncwarp();
          if (lane == 0) {
            fl.cnt[qi] = n;
            fl.thr[qi] = thr;
          }
        }
      } else {
        for (int p = threadIdx.x; p < kTq * nb; p += kSelThreads) {
          const int qi = p / nb, j = p % nb;
          const int64_t b = b0 + j;
          if (qi >= nq_tile || b >= a.score_stride) continue;
          const float* w = sp + qi * kPW + kSelHalo + j * pool_stride - pool_pad;
          float best = w[0];
          for (int x = 1; x < pool_stride + pool_pad; ++x) best = fmaxf(best, w[x]);
          a.block_scores[(g * a.chunk_q + i0 + qi) * a.score_stride + b] = best;
        }
      }
      __syncthreads();
      for (int p = threadIdx.x; p < kTq * pool_pad; p += kSelThreads) {
        const int qi = p / pool_pad, j = p % pool_pad;
        sp[qi * kPW + kSelHalo - pool_pad + j] =
            sp[qi * kPW + kSelHalo + kSelChunkTile - pool_pad + j];
      }
    }
  }

  if constexpr (!kScores) {
    // Merge the 8 lanes (gid) that saw different chunks of the same columns.
#pragma unroll
    for (int nt = 0; nt < kSelNTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float m = run_max[nt][e], s = run_sum[nt][e];
#pragma unroll
        for (int o = 4; o <= 16; o <<= 1) {
          const float om = __shfl_xor_sync(0xffffffffu, m, o);
          const float os = __shfl_xor_sync(0xffffffffu, s, o);
          const float nm = fmaxf(m, om);
          if (nm != -INFINITY) {
            s = s * FastExp2(m - nm) + os * FastExp2(om - nm);
            m = nm;
          }
        }
        const int col = warp * 32 + nt * 8 + 2 * tig + e;
        if (gid == 0 && col / kG < nq_tile) {
          a.lse[(i0 + col / kG) * a.q_heads + g * kG + col % kG] =
              s > 0.0f ? m + log2f(s) : -INFINITY;
        }
      }
    }
  }
  if constexpr (kFused) {
    // The same warp owns a query here as in the loop, so its list needs no CTA barrier.
    const FusedLists fl = FusedSmem(sp + kTq * kPW, kTq, a.list_cap);
    for (int qi = warp; qi < nq_tile; qi += kSelWarps) {
      const RowPlan r = PlanRow(a.topk, t_first + qi);
      if (r.by_score > 0) {
        const uint32_t* keys = fl.keys + qi * a.list_cap;
        const int32_t* idx = fl.idx + qi * a.list_cap;
        const int n = fl.cnt[qi];
        WarpSelectTop(
            0, n, r.by_score, n, [keys](int64_t j) { return keys[j]; }, fl.hist, fl.sl);
        for (int j = lane; j < r.by_score; j += 32) fl.sl[j] = idx[fl.sl[j]];
        __syncwarp();
      }
      FinishRow(a.topk, r, g, i0 + qi, fl.sl, fl.il, fl.hist);
    }
  }
}

}  // namespace sparsefill::kernels::cuda
