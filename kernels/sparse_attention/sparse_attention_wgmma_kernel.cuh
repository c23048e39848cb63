// Block-sparse causal flash attention forward on Hopper warpgroup MMA (sm_90a), the wgmma
// counterpart of sparse_attention_kernel.cuh (same rows, same union, same results).
//
// A CTA owns 64 query rows of ONE KV head (tokens x GQA group, packed as in flash_fwd.cuh: 16
// tokens at G 4) and has two warpgroups:
// - the producer (warpgroup 0, few registers) loads Q, builds the union of its tokens' block
//   lists one window of block indices at a time (as the mma.sync kernel does, with named barriers
//   over its own 128 threads), lays the union's keys end to end as slots and streams key and
//   value tiles of 64 slots into a kStages-deep ring. A tile's blocks are TMA boxes (block sizes
//   16 and 32: 64 / B boxes gathered into one tile; 64 and more: one box of 64 keys), and the
//   slots' metadata (key position, the tokens that selected the block) go beside it in shared
//   memory. A tile whose blocks reach past its sequence into another one is copied by cp.async
//   with zero fill instead (TMA would bring that sequence's rows). After the last tile the
//   producer publishes an end marker in the next stage.
// - the consumer (warpgroup 1) computes S = Q K^T (m64n64, both operands in shared memory), masks
//   each score by its slot's token bit and the causal diagonal, keeps the softmax online in
//   registers and adds P V (m64n128 or n64, P from registers), issuing S of tile j beside P V of
//   tile j - 1 (FlashAttention-3's intra-warpgroup overlap). K and V stages are released
//   separately, so the next K streams in while P V still reads the previous V.
// Two CTAs share an SM (about 100 KB of shared memory each at d = 128).
#pragma once

#include <cuda.h>  // CUtensorMap (a type only: the maps are encoded by the launcher)
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common/flash_fwd.cuh"
#include "kernels/common/flash_mma.cuh"
#include "kernels/common/wgmma.cuh"

namespace sparsefill::kernels::cuda::flash {

template <int kD, int kStages>
struct SparseWgmmaTile {
  static constexpr int kRows = 64;  // one consumer warpgroup, m64
  static constexpr int kN = 64;     // slots per key tile
  static constexpr int kThreads = 256;
  static constexpr int kProducerRegs = 56;
  static constexpr int kConsumerRegs = 200;
  static constexpr int kWindow = 1024;  // block indices merged per pass, as the mma.sync kernel
  static constexpr int kQBytes = kRows * kD * 2;
  static constexpr int kKVBytes = kN * kD * 2;
  static constexpr int kKOffset = kQBytes;
  static constexpr int kVOffset = kKOffset + kStages * kKVBytes;
  // Per stage: key position [kN] int32, token mask [kN] u64, end marker int32 (+ pad).
  static constexpr int kMetaBytes = kN * 4 + kN * 8 + 16;
  static constexpr int kMetaOffset = kVOffset + kStages * kKVBytes;
  // Union window: token masks [kWindow] u64, compacted (mask, block) [kWindow], scratch [16].
  static constexpr int kUnionOffset = kMetaOffset + kStages * kMetaBytes;
  static constexpr int kUnionBytes = kWindow * 8 + kWindow * 8 + kWindow * 4 + 16 * 4;
  static constexpr int kBarOffset = kUnionOffset + kUnionBytes;
  // Barriers: q_full, k_full[kStages], v_full[kStages], k_empty[kStages], v_empty[kStages].
  static constexpr int kBars = 1 + 4 * kStages;
  static constexpr int kSmemBytes = kBarOffset + kBars * 8 + 1024;  // + alignment to 1024
  static constexpr int kChunks = kD / 8;
  static constexpr int kOutRegs = kD / 2;
  static_assert(kD == 64 || kD == 128);
  static_assert(kKOffset % 1024 == 0 && kKVBytes % 1024 == 0 && kMetaOffset % 16 == 0);
  static_assert(kUnionOffset % 16 == 0 && kBarOffset % 8 == 0);
  static_assert(kProducerRegs + kConsumerRegs <= 256, "2 CTAs of 256 threads per SM");
  static_assert(2 * (kSmemBytes + 1024) <= 228 * 1024, "2 CTAs per SM (1 KB reserved per CTA)");
};

// K and V as [total_kv, kv_heads * kD] with boxes of (64 columns, box_rows keys), 128-byte
// swizzled: box_rows = min(block size, 64).
struct SparseTmaMaps {
  CUtensorMap k, v;
};

// Exclusive prefix sum over the producer warpgroup's 128 threads (named barrier 1); `red[0..4)`.
__device__ __forceinline__ int ProducerExclusiveSum(int v, int* red, int* total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) red[warp] = x;
  wgmma::NamedBarSync(1, 128);
  int before = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    before += w < warp ? red[w] : 0;
    sum += red[w];
  }
  *total = sum;
  return before + x - v;
}

template <int kD>
__device__ __forceinline__ void SparseWgmmaPV(float (&o)[kD / 2], const uint32_t (&a)[4],
                                              uint64_t desc);
template <>
__device__ __forceinline__ void SparseWgmmaPV<128>(float (&o)[64], const uint32_t (&a)[4],
                                                   uint64_t desc) {
  wgmma::WgmmaRS_N128<1>(o, a, desc, 1);
}
template <>
__device__ __forceinline__ void SparseWgmmaPV<64>(float (&o)[32], const uint32_t (&a)[4],
                                                  uint64_t desc) {
  wgmma::WgmmaRS_N64<1>(o, a, desc, 1);
}

// p.block_size must be a power of two >= 16 (p.block_shift set); the launcher checks.
template <int kD, int kStages>
__global__ void __launch_bounds__(256, 2)
    SparseAttentionWgmmaKernel(const FlashParams p, const __grid_constant__ SparseTmaMaps maps) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using T = SparseWgmmaTile<kD, kStages>;
  constexpr int kN = T::kN;
  extern __shared__ uint8_t smem_raw[];
  CtaQueries c;
  if (!ResolveCta(p, &c)) return;
  const SeqView& s = c.s;
  const int hk = c.hk, tok0 = c.tok0, ntok = c.ntok, first_pos = c.first_pos;

  const uint32_t raw = SmemAddr(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  uint8_t* const gbase = smem_raw + (base - raw);  // generic pointer to the aligned base
  const uint32_t sq = base;
  const uint32_t sk = base + T::kKOffset;
  const uint32_t sv = base + T::kVOffset;
  const auto meta_key = [&](int st) {
    return reinterpret_cast<int32_t*>(gbase + T::kMetaOffset + st * T::kMetaBytes);
  };
  const auto meta_mask = [&](int st) {
    return reinterpret_cast<uint64_t*>(gbase + T::kMetaOffset + st * T::kMetaBytes + kN * 4);
  };
  const auto meta_end = [&](int st) {
    return reinterpret_cast<int32_t*>(gbase + T::kMetaOffset + st * T::kMetaBytes + kN * 12);
  };
  const uint32_t bar_q = base + T::kBarOffset;
  const auto bar_k = [&](int st) { return bar_q + 8u * (1 + st); };
  const auto bar_v = [&](int st) { return bar_q + 8u * (1 + kStages + st); };
  const auto bar_k_empty = [&](int st) { return bar_q + 8u * (1 + 2 * kStages + st); };
  const auto bar_v_empty = [&](int st) { return bar_q + 8u * (1 + 3 * kStages + st); };
  const auto parity = [](int j) { return static_cast<uint32_t>((j / kStages) & 1); };

  const int tid = threadIdx.x;
  const int wg = tid / 128;
  if (tid == 0) {
    // Every producer thread arrives once per tile on k_full and v_full (the TMA leader with the
    // byte count); every consumer thread once on k_empty and v_empty.
    wgmma::BarInit(bar_q, 128);
    for (int st = 0; st < kStages; ++st) {
      wgmma::BarInit(bar_k(st), 128);
      wgmma::BarInit(bar_v(st), 128);
      wgmma::BarInit(bar_k_empty(st), 128);
      wgmma::BarInit(bar_v_empty(st), 128);
    }
  }
  __syncthreads();

  if (wg == 0) {
    // ---------------------------------------------------------------- producer
    wgmma::RegDealloc<T::kProducerRegs>();
    const int lane = tid % 32, warp = tid / 32;
    const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * kD;
    {
      const int64_t q_stride = static_cast<int64_t>(p.q_heads) * kD;
      for (int idx = tid; idx < T::kRows * T::kChunks; idx += 128) {
        const int r = idx / T::kChunks, ch = idx % T::kChunks;
        const int t = r / p.group, h = r % p.group;
        const bool valid = t < ntok;
        const __nv_bfloat16* src =
            valid ? p.q + (s.q_begin + tok0 + t) * q_stride + (hk * p.group + h) * kD + ch * 8
                  : p.q;
        CpAsync16(sq + wgmma::Sw128<T::kRows, kD>(r, ch), src, valid);
      }
      CpAsyncCommit();
      CpAsyncWait<0>();
      wgmma::FenceProxyAsync();
      wgmma::BarArrive(bar_q);
    }

    uint64_t* wmask = reinterpret_cast<uint64_t*>(gbase + T::kUnionOffset);  // [kWindow]
    uint64_t* umask = wmask + T::kWindow;                                    // [kWindow]
    int32_t* ublk = reinterpret_cast<int32_t*>(umask + T::kWindow);          // [kWindow]
    int32_t* red = ublk + T::kWindow;                                        // [16]

    const int B = p.block_size, shift = p.block_shift;
    const int box_rows = B < kN ? B : kN;
    const int boxes = kN / box_rows;
    const bool leader = tid == 0;
    if (leader) {
      wgmma::PrefetchTensorMap(&maps.k);
      wgmma::PrefetchTensorMap(&maps.v);
    }
    // TMA brings rows past the tensor as zeros, but rows past a sequence that is not the last
    // one belong to the next sequence: such tiles are copied by cp.async with zero fill.
    const bool tail_is_tensor_end = s.kv_begin + s.kv_len == p.total_kv;

    const int32_t* lists =
        p.blocks + (static_cast<int64_t>(hk) * p.total_q + s.q_begin + tok0) * p.max_blocks;
    // The list walk of sparse_attention_kernel.cuh: each thread owns one stretch of one token's
    // sorted list; entries outside 0 .. the token's own block end it.
    const int per_list = max(1, 128 / ntok);
    const int my_tok = tid / per_list;
    const int stretch = (p.max_blocks + per_list - 1) / per_list;
    const int list_at = my_tok * p.max_blocks;
    const int part = tid % per_list;
    int cur = my_tok < ntok ? list_at + min(p.max_blocks, part * stretch) : 0;
    const int end = my_tok < ntok ? list_at + min(p.max_blocks, (part + 1) * stretch) : 0;
    const int own_block = (first_pos + my_tok) / B;
    const uint64_t my_bit = 1ull << (my_tok & 63);
    unsigned long long computed = 0;
    int jg = 0;  // tiles published so far (stage jg % kStages)

    while (true) {
      int next = 0x7fffffff;
      if (cur < end) {
        const int32_t b = lists[cur];
        if (b >= 0 && b <= own_block) {
          next = b;
        } else {
          cur = end;
        }
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) next = min(next, __shfl_xor_sync(0xffffffffu, next, o));
      if (lane == 0) red[4 + warp] = next;
      wgmma::NamedBarSync(1, 128);
      int w0 = red[4];
#pragma unroll
      for (int w = 1; w < 4; ++w) w0 = min(w0, red[4 + w]);
      if (w0 == 0x7fffffff) break;

      for (int i = tid; i < T::kWindow; i += 128) wmask[i] = 0;
      wgmma::NamedBarSync(1, 128);
      for (; cur < end; ++cur) {
        const int32_t b = lists[cur];
        if (b < 0 || b > own_block) {
          cur = end;
          break;
        }
        if (b >= w0 + T::kWindow) break;
        if (b >= w0) atomicOr(reinterpret_cast<unsigned long long*>(&wmask[b - w0]), my_bit);
      }
      wgmma::NamedBarSync(1, 128);
      constexpr int kPer = T::kWindow / 128;
      int count = 0;
#pragma unroll
      for (int i = 0; i < kPer; ++i) count += wmask[tid * kPer + i] != 0;
      int n_union = 0;
      int at = ProducerExclusiveSum(count, red, &n_union);
#pragma unroll
      for (int i = 0; i < kPer; ++i) {
        const uint64_t m = wmask[tid * kPer + i];
        if (m != 0) {
          ublk[at] = w0 + tid * kPer + i;
          umask[at] = m;
          ++at;
        }
      }
      wgmma::NamedBarSync(1, 128);
      if (n_union == 0) continue;

      const int last_start = ublk[n_union - 1] * B;
      const int slots = (n_union - 1) * B + min(B, c.last_pos - last_start + 1);
      const int n_tiles = (slots + kN - 1) / kN;
      computed += static_cast<unsigned long long>(slots) * ntok;
      for (int t = 0; t < n_tiles; ++t, ++jg) {
        const int st = jg % kStages;
        const int g0 = t * kN;
        // Sequence row of box i of this tile; boxes past the union repeat the last block (their
        // slots are padding: masked, but their values must be finite).
        const auto box_row = [&](int i) {
          const int g = g0 + i * box_rows;
          const int u = g >> shift;
          if (u >= n_union) return ublk[n_union - 1] * B;
          return ublk[u] * B + (g - u * B);
        };
        bool past_seq = false;
        for (int i = 0; i < boxes; ++i) past_seq = past_seq || box_row(i) + box_rows > s.kv_len;
        const bool use_tma = !past_seq || tail_is_tensor_end;

        if (jg >= kStages) wgmma::BarWait(bar_k_empty(st), parity(jg) ^ 1u);
        if (tid < kN) {
          const int g = g0 + tid;
          int32_t key = kNoKey;
          uint64_t mask = 0;
          if (g < slots) {
            const int u = g >> shift;
            key = ublk[u] * B + (g - u * B);
            mask = umask[u];
          }
          meta_key(st)[tid] = key;
          meta_mask(st)[tid] = mask;
        }
        if (tid == 0) *meta_end(st) = 0;
        const uint32_t dk = sk + st * T::kKVBytes;
        const uint32_t dv = sv + st * T::kKVBytes;
        if (use_tma) {
          // The leader arms the stage's barrier with the tile's bytes and issues its boxes (one
          // per 64-column half of d); the other threads only arrive.
          const auto tma_tile = [&](uint32_t dst, const auto* map, auto bar) {
            if (!leader) {
              wgmma::BarArrive(bar);
              return;
            }
            wgmma::BarArriveExpectTx(bar, T::kKVBytes);
            for (int i = 0; i < boxes; ++i) {
              const int row = s.kv_begin + box_row(i);
#pragma unroll
              for (int pn = 0; pn < kD / 64; ++pn) {
                wgmma::TmaLoad2D(dst + pn * kN * 128 + i * box_rows * 128, map,
                                 hk * kD + pn * 64, row, bar);
              }
            }
          };
          tma_tile(dk, &maps.k, bar_k(st));
          if (jg >= kStages) wgmma::BarWait(bar_v_empty(st), parity(jg) ^ 1u);
          tma_tile(dv, &maps.v, bar_v(st));
        } else {
          // cp.async, rows past the sequence as zeros: K now, V once its stage is free.
          const auto copy = [&](uint32_t dst, const __nv_bfloat16* src) {
            for (int idx = tid; idx < kN * T::kChunks; idx += 128) {
              const int r = idx / T::kChunks, ch = idx % T::kChunks;
              const int key = box_row(r / box_rows) + r % box_rows;
              const bool valid = key < s.kv_len;
              const int64_t off = valid ? (s.kv_begin + key) * kv_stride + hk * kD + ch * 8 : 0;
              CpAsync16(dst + wgmma::Sw128<kN, kD>(r, ch), src + off, valid);
            }
            CpAsyncCommit();
            CpAsyncWait<0>();
            wgmma::FenceProxyAsync();
          };
          copy(dk, p.k);
          wgmma::BarArrive(bar_k(st));
          if (jg >= kStages) wgmma::BarWait(bar_v_empty(st), parity(jg) ^ 1u);
          copy(dv, p.v);
          wgmma::BarArrive(bar_v(st));
        }
      }
    }
    // End marker: the consumer stops at the stage after the last tile.
    {
      const int st = jg % kStages;
      if (jg >= kStages) wgmma::BarWait(bar_k_empty(st), parity(jg) ^ 1u);
      if (tid == 0) *meta_end(st) = 1;
      wgmma::BarArrive(bar_k(st));
    }
    if (p.computed_keys != nullptr && tid == 0 && computed > 0) {
      atomicAdd(p.computed_keys, computed);
    }
  } else {
    // ---------------------------------------------------------------- consumer
    wgmma::RegAlloc<T::kConsumerRegs>();
    const int lane = tid % 32;
    const int warp = (tid / 32) % 4;
    const float neg_inf = -__int_as_float(0x7f800000);

    int32_t row_pos[2], row_tok[2];
    float row_max[2], row_sum[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = 16 * warp + lane / 4 + 8 * hf;
      const int t = r / p.group;
      row_pos[hf] = t < ntok ? first_pos + t : -1;  // padding rows see no key
      row_tok[hf] = t & 63;
      row_max[hf] = neg_inf;
      row_sum[hf] = 0.0f;
    }
    float o[T::kOutRegs];
#pragma unroll
    for (int i = 0; i < T::kOutRegs; ++i) o[i] = 0.0f;

    const auto issue_qk = [&](float(&acc)[kN / 2], int j) {
      const uint32_t k_tile = sk + (j % kStages) * T::kKVBytes;
      wgmma::Fence();
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        const uint32_t koff = (kk % 4) * 32;
        const uint64_t da = wgmma::Desc(sq + (kk / 4) * T::kRows * 128 + koff, 16, 1024);
        const uint64_t db = wgmma::Desc(k_tile + (kk / 4) * kN * 128 + koff, 16, 1024);
        wgmma::WgmmaSS_N64<0>(acc, da, db, kk > 0 ? 1 : 0);
      }
      wgmma::Commit();
    };
    const auto issue_pv = [&](const uint32_t(&pa)[kN / 16][4], int j) {
      const uint32_t v_tile = sv + (j % kStages) * T::kKVBytes;
      wgmma::FenceRegs(o);
      wgmma::Fence();
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        const uint64_t db = wgmma::Desc(v_tile + kk * 16 * 128, kN * 128, 1024);
        SparseWgmmaPV<kD>(o, pa[kk], db);
      }
      wgmma::Commit();
    };
    // Scores of tile j -> probabilities in place: a row keeps a slot only when its token
    // selected the slot's block and the key is not after the row's query.
    const auto softmax = [&](float(&acc)[kN / 2], int j, float(&alpha)[2]) {
      const int st = j % kStages;
      const int32_t* keys = meta_key(st);
      const uint64_t* masks = meta_mask(st);
#pragma unroll
      for (int nt = 0; nt < kN / 8; ++nt) {
        const int col = 8 * nt + 2 * (lane % 4);
        const int2 key2 = *reinterpret_cast<const int2*>(keys + col);
        const ulonglong2 mask2 = *reinterpret_cast<const ulonglong2*>(masks + col);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int hf = e / 2;
          const int32_t key = e % 2 == 0 ? key2.x : key2.y;
          const uint64_t mask = e % 2 == 0 ? mask2.x : mask2.y;
          const bool keep = key <= row_pos[hf] && ((mask >> row_tok[hf]) & 1u) != 0;
          acc[4 * nt + e] = keep ? acc[4 * nt + e] * p.scale_log2 : neg_inf;
        }
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = row_max[hf];
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt) {
          mx = fmaxf(mx, fmaxf(acc[4 * nt + 2 * hf], acc[4 * nt + 2 * hf + 1]));
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float b = mx == neg_inf ? 0.0f : mx;
        alpha[hf] = Exp2(row_max[hf] - b);
        row_max[hf] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kN / 8; ++nt) {
          acc[4 * nt + 2 * hf] = Exp2(acc[4 * nt + 2 * hf] - b);
          acc[4 * nt + 2 * hf + 1] = Exp2(acc[4 * nt + 2 * hf + 1] - b);
          sum += acc[4 * nt + 2 * hf] + acc[4 * nt + 2 * hf + 1];
        }
        row_sum[hf] = row_sum[hf] * alpha[hf] + sum;
      }
    };
    const auto rescale = [&](const float(&alpha)[2]) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        if (alpha[hf] == 1.0f) continue;
#pragma unroll
        for (int dt = 0; dt < kD / 8; ++dt) {
          o[4 * dt + 2 * hf] *= alpha[hf];
          o[4 * dt + 2 * hf + 1] *= alpha[hf];
        }
      }
    };
    const auto pack = [&](const float(&acc)[kN / 2], uint32_t(&pa)[kN / 16][4]) {
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        pa[kk][0] = PackBf16(acc[8 * kk + 0], acc[8 * kk + 1]);
        pa[kk][1] = PackBf16(acc[8 * kk + 2], acc[8 * kk + 3]);
        pa[kk][2] = PackBf16(acc[8 * kk + 4], acc[8 * kk + 5]);
        pa[kk][3] = PackBf16(acc[8 * kk + 6], acc[8 * kk + 7]);
      }
    };

    wgmma::BarWait(bar_q, 0);
    float sacc[kN / 2];
    uint32_t pa[kN / 16][4];
    float alpha[2];
    wgmma::BarWait(bar_k(0), 0);
    if (*meta_end(0) == 0) {
      issue_qk(sacc, 0);
      wgmma::Wait<0>();
      wgmma::FenceRegs(sacc);
      softmax(sacc, 0, alpha);  // O is still 0: nothing to rescale
      wgmma::BarArrive(bar_k_empty(0));
      pack(sacc, pa);
      for (int j = 1;; ++j) {
        const int st = j % kStages;
        wgmma::BarWait(bar_k(st), parity(j));
        const bool last = *meta_end(st) != 0;
        wgmma::BarWait(bar_v((j - 1) % kStages), parity(j - 1));
        if (last) {
          issue_pv(pa, j - 1);
          wgmma::Wait<0>();
          wgmma::FenceRegs(o);
          break;
        }
        issue_qk(sacc, j);
        issue_pv(pa, j - 1);
        wgmma::Wait<1>();  // S of tile j (committed first) is done
        wgmma::FenceRegs(sacc);
        softmax(sacc, j, alpha);
        wgmma::BarArrive(bar_k_empty(st));
        wgmma::Wait<0>();
        wgmma::FenceRegs(o);
        wgmma::BarArrive(bar_v_empty((j - 1) % kStages));
        rescale(alpha);
        pack(sacc, pa);
      }
    }

#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      StoreRow<kD>(p, c, 16 * warp + lane / 4 + 8 * hf, row_sum[hf], row_max[hf],
                   [&](int dt, int e) { return o[4 * dt + 2 * hf + e]; });
    }
  }
#else
  (void)p;
  (void)maps;
  __trap();  // wgmma and setmaxnreg need the sm_90a target (SPARSEFILL_CUDA_GENCODE)
#endif
}

}  // namespace sparsefill::kernels::cuda::flash
