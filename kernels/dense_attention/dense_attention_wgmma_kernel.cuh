// Dense causal flash attention forward on Hopper warpgroup MMA (sm_90a), FlashAttention-3 style:
// a CTA of three warpgroups owns 128 query rows of ONE KV head (tokens x GQA group, packed as in
// flash_fwd.cuh). Warpgroup 0 is the producer: it drops to a few registers and streams key and
// value tiles of kN rows into a kStages-deep ring with cp.async, signalling each tile on an
// mbarrier (K and V separately, so S = Q K^T starts before V lands). Warpgroups 1 and 2 each
// own 64 rows: S = Q K^T with both operands in shared memory, the online softmax (log2 domain)
// in registers, then O += P V with P straight from the S accumulators as the register A operand.
// Consumer schedules: kOverlap = false waits for every GEMM; kOverlap issues S of tile j next to
// P V of tile j - 1 and runs the softmax while P V is in flight (FlashAttention-3's intra-
// warpgroup overlap); kPingPong additionally makes the two consumers take turns issuing GEMMs.
// Same semantics as the mma.sync engine (bottom-right causal, GQA packing, varlen, natural-log
// LSE, rows without keys -> 0 and -inf). kTma loads Q, K and V with TMA boxes issued by one
// producer thread (expect-tx mbarriers) instead of 128 threads' cp.async: see
// tools/bench/attention/DENSE_WGMMA_NOTES.md.
#pragma once

#include <cuda.h>  // CUtensorMap (a type only: the maps are encoded by the launcher)
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common/flash_fwd.cuh"
#include "kernels/common/flash_mma.cuh"
#include "kernels/common/wgmma.cuh"

namespace sparsefill::kernels::cuda::flash {

template <int kD, int kN, int kStages>
struct WgmmaTile {
  static constexpr int kRows = 128;  // 2 consumer warpgroups x m64
  static constexpr int kThreads = 384;
  static constexpr int kProducerRegs = 56;
  static constexpr int kConsumerRegs = 224;
  static constexpr int kQBytes = kRows * kD * 2;
  static constexpr int kKVBytes = kN * kD * 2;
  static constexpr int kKOffset = kQBytes;
  static constexpr int kVOffset = kKOffset + kStages * kKVBytes;
  static constexpr int kBarOffset = kVOffset + kStages * kKVBytes;
  // Barriers: q_full, k_full[kStages], v_full[kStages], empty[kStages].
  static constexpr int kBars = 1 + 3 * kStages;
  // +1024: the dynamic shared memory base is aligned up to 1024 bytes in the kernel.
  static constexpr int kSmemBytes = kBarOffset + kBars * 8 + 1024;
  static constexpr int kChunks = kD / 8;
  static constexpr int kOutRegs = kD / 2;  // m64 x kD fp32 accumulators per thread
  static_assert(kD == 64 || kD == 128);
  static_assert(kN == 128, "the S accumulators are m64n128");
  static_assert(kKOffset % 1024 == 0 && kKVBytes % 1024 == 0);
  static_assert(kProducerRegs + 2 * kConsumerRegs <= 512);
  static_assert(kSmemBytes <= 227 * 1024, "over the opt-in shared memory of a Hopper CTA");
};

// The TMA descriptors of the kTma producer (unused otherwise): Q as [total_q, q_heads, kD] with
// boxes of (64 columns, G heads, kRows / G tokens), K and V as [total_kv, kv_heads * kD] with
// boxes of (64 columns, kN keys); all 128-byte swizzled, so every box is one Sw128 panel.
struct WgmmaTmaMaps {
  CUtensorMap q, k, v;
};

template <int kD>
__device__ __forceinline__ void WgmmaPV(float (&o)[kD / 2], const uint32_t (&a)[4], uint64_t desc);
template <>
__device__ __forceinline__ void WgmmaPV<128>(float (&o)[64], const uint32_t (&a)[4],
                                             uint64_t desc) {
  wgmma::WgmmaRS_N128<1>(o, a, desc, 1);
}
template <>
__device__ __forceinline__ void WgmmaPV<64>(float (&o)[32], const uint32_t (&a)[4], uint64_t desc) {
  wgmma::WgmmaRS_N64<1>(o, a, desc, 1);
}

template <int kD, int kN, int kStages, bool kOverlap, bool kPingPong, bool kTma>
__global__ void __launch_bounds__(384, 1)
    DenseAttentionWgmmaKernel(const FlashParams p, const __grid_constant__ WgmmaTmaMaps maps) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using T = WgmmaTile<kD, kN, kStages>;
  extern __shared__ uint8_t smem_raw[];
  CtaQueries c;
  if (!ResolveCta(p, &c)) return;
  const SeqView& s = c.s;
  const int hk = c.hk, tok0 = c.tok0, ntok = c.ntok, first_pos = c.first_pos;
  const int n_tiles = c.last_pos / kN + 1;

  const uint32_t raw = SmemAddr(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  const uint32_t sq = base;
  const uint32_t sk = base + T::kKOffset;
  const uint32_t sv = base + T::kVOffset;
  const uint32_t bar_q = base + T::kBarOffset;
  const auto bar_k = [&](int st) { return bar_q + 8u * (1 + st); };
  const auto bar_v = [&](int st) { return bar_q + 8u * (1 + kStages + st); };
  const auto bar_empty = [&](int st) { return bar_q + 8u * (1 + 2 * kStages + st); };

  const int tid = threadIdx.x;
  const int wg = tid / 128;
  // cp.async: every producer thread arrives; TMA: one thread arrives with the byte count.
  constexpr int kLoadArrivals = kTma ? 1 : 128;
  if (tid == 0) {
    wgmma::BarInit(bar_q, kLoadArrivals);
    for (int st = 0; st < kStages; ++st) {
      wgmma::BarInit(bar_k(st), kLoadArrivals);
      wgmma::BarInit(bar_v(st), kLoadArrivals);
      wgmma::BarInit(bar_empty(st), 256);
    }
  }
  __syncthreads();

  if (wg == 0) {
    // ---------------------------------------------------------------- producer
    wgmma::RegDealloc<T::kProducerRegs>();
    const int ptid = tid;
    const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * kD;
    // Tile j of K or V into a stage by cp.async, keys past the sequence as zeros; one commit
    // group per call, so that K (issued first) can be waited for before V.
    const auto copy_tile = [&](int j, uint32_t dst, const __nv_bfloat16* src) {
#pragma unroll 4
      for (int idx = ptid; idx < kN * T::kChunks; idx += 128) {
        const int r = idx / T::kChunks, ch = idx % T::kChunks;
        const int key = j * kN + r;
        const bool valid = key < s.kv_len;
        const int64_t off = valid ? (s.kv_begin + key) * kv_stride + hk * kD + ch * 8 : 0;
        CpAsync16(dst + wgmma::Sw128<kN, kD>(r, ch), src + off, valid);
      }
      CpAsyncCommit();
    };
    const auto copy_kv = [&](int j, uint32_t dk, uint32_t dv) {
      copy_tile(j, dk, p.k);
      copy_tile(j, dv, p.v);
    };
    if constexpr (kTma) {
      // One thread streams every box; the other producer threads only help with a tile that
      // runs past its sequence into the next one (varlen batches), which cp.async zero-fills
      // (TMA would bring the next sequence's rows: finite, masked, but not zeros).
      const bool leader = ptid == 0;
      if (leader) {
        wgmma::PrefetchTensorMap(&maps.q);
        wgmma::PrefetchTensorMap(&maps.k);
        wgmma::PrefetchTensorMap(&maps.v);
        // The Q box holds G x tokens_per_cta rows: fewer than kRows when G does not divide
        // them (G = 3: 126), and the barrier must expect exactly the bytes the boxes bring.
        const uint32_t q_panel_bytes = static_cast<uint32_t>(p.group * p.tokens_per_cta) * 128u;
        wgmma::BarArriveExpectTx(bar_q, q_panel_bytes * (kD / 64));
#pragma unroll
        for (int pn = 0; pn < kD / 64; ++pn) {
          wgmma::TmaLoad3D(sq + pn * T::kRows * 128, &maps.q, pn * 64, hk * p.group,
                           s.q_begin + tok0, bar_q);
        }
      }
      const bool tail_is_tensor_end = s.kv_begin + s.kv_len == p.total_kv;
      for (int j = 0; j < n_tiles; ++j) {
        const int st = j % kStages;
        const uint32_t dk = sk + st * T::kKVBytes;
        const uint32_t dv = sv + st * T::kKVBytes;
        if ((j + 1) * kN <= s.kv_len || tail_is_tensor_end) {
          if (!leader) continue;
          if (j >= kStages) wgmma::BarWait(bar_empty(st), ((j / kStages) - 1) & 1);
          const int row = s.kv_begin + j * kN;
          wgmma::BarArriveExpectTx(bar_k(st), T::kKVBytes);
#pragma unroll
          for (int pn = 0; pn < kD / 64; ++pn) {
            wgmma::TmaLoad2D(dk + pn * kN * 128, &maps.k, hk * kD + pn * 64, row, bar_k(st));
          }
          wgmma::BarArriveExpectTx(bar_v(st), T::kKVBytes);
#pragma unroll
          for (int pn = 0; pn < kD / 64; ++pn) {
            wgmma::TmaLoad2D(dv + pn * kN * 128, &maps.v, hk * kD + pn * 64, row, bar_v(st));
          }
        } else {
          if (j >= kStages) wgmma::BarWait(bar_empty(st), ((j / kStages) - 1) & 1);
          copy_kv(j, dk, dv);
          CpAsyncWait<0>();
          wgmma::FenceProxyAsync();
          wgmma::NamedBarSync(3, 128);  // every producer thread's copies have landed
          if (leader) {
            wgmma::BarArrive(bar_k(st));
            wgmma::BarArrive(bar_v(st));
          }
        }
      }
    } else {
      const int64_t q_stride = static_cast<int64_t>(p.q_heads) * kD;
      for (int idx = ptid; idx < T::kRows * T::kChunks; idx += 128) {
        const int r = idx / T::kChunks, ch = idx % T::kChunks;
        const int t = r / p.group, h = r % p.group;
        const bool valid = t < ntok;
        const __nv_bfloat16* src =
            valid ? p.q + (s.q_begin + tok0 + t) * q_stride + (hk * p.group + h) * kD + ch * 8
                  : p.q;
        CpAsync16(sq + wgmma::Sw128<T::kRows, kD>(r, ch), src, valid);
      }
      CpAsyncCommit();
      for (int j = 0; j < n_tiles; ++j) {
        const int st = j % kStages;
        if (j >= kStages) wgmma::BarWait(bar_empty(st), ((j / kStages) - 1) & 1);
        const uint32_t dk = sk + st * T::kKVBytes;
        const uint32_t dv = sv + st * T::kKVBytes;
        copy_kv(j, dk, dv);
        // Each thread waits for its own copies, then publishes them to the tensor cores (async
        // proxy) before arriving: the consumers' wgmma reads need no further fence.
        if (j == 0) {
          CpAsyncWait<2>();
          wgmma::FenceProxyAsync();
          wgmma::BarArrive(bar_q);
        }
        CpAsyncWait<1>();
        wgmma::FenceProxyAsync();
        wgmma::BarArrive(bar_k(st));
        CpAsyncWait<0>();
        wgmma::FenceProxyAsync();
        wgmma::BarArrive(bar_v(st));
      }
    }
  } else {
    // ---------------------------------------------------------------- consumers
    wgmma::RegAlloc<T::kConsumerRegs>();
    const int cw = wg - 1;  // consumer warpgroup: rows 64 * cw ..
    const int lane = tid % 32;
    const int warp = (tid / 32) % 4;
    const float neg_inf = -__int_as_float(0x7f800000);

    int32_t row_pos[2];
    float row_max[2], row_sum[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = 64 * cw + 16 * warp + lane / 4 + 8 * hf;
      const int t = r / p.group;
      row_pos[hf] = t < ntok ? first_pos + t : -1;
      row_max[hf] = neg_inf;
      row_sum[hf] = 0.0f;
    }
    float o[T::kOutRegs];
#pragma unroll
    for (int i = 0; i < T::kOutRegs; ++i) o[i] = 0.0f;

    // Q (K-major) of this warpgroup's 64 rows; K-step kk moves 32 bytes inside a 64-column
    // panel, the next panel is kRows (Q) / kN (K) lines further.
    const uint32_t q_rows = sq + 64 * cw * 128;
    // S = Q K^T of tile j (issued and committed, not waited for).
    const auto issue_qk = [&](float(&acc)[kN / 2], int j) {
      const uint32_t k_tile = sk + (j % kStages) * T::kKVBytes;
      wgmma::Fence();
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        const uint32_t koff = (kk % 4) * 32;
        const uint64_t da = wgmma::Desc(q_rows + (kk / 4) * T::kRows * 128 + koff, 16, 1024);
        const uint64_t db = wgmma::Desc(k_tile + (kk / 4) * kN * 128 + koff, 16, 1024);
        wgmma::WgmmaSS_N128<0>(acc, da, db, kk > 0 ? 1 : 0);
      }
      wgmma::Commit();
    };
    // O += P V of tile j (issued and committed).
    const auto issue_pv = [&](const uint32_t(&pa)[kN / 16][4], int j) {
      const uint32_t v_tile = sv + (j % kStages) * T::kKVBytes;
      wgmma::FenceRegs(o);
      wgmma::Fence();
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        // V read MN-major: 16 keys = 16 lines further; the second 64-column panel of d sits
        // kN lines after the first (LBO).
        const uint64_t db = wgmma::Desc(v_tile + kk * 16 * 128, kN * 128, 1024);
        WgmmaPV<kD>(o, pa[kk], db);
      }
      wgmma::Commit();
    };
    // Scores of tile j -> probabilities in place (log2 domain, online max); returns in alpha
    // the factor by which O must be rescaled before P V of this tile is added.
    const auto softmax = [&](float(&acc)[kN / 2], int j, float(&alpha)[2]) {
      // Only tiles that reach past the CTA's first query pay for the causal mask (uniform over
      // the CTA). Padding rows (position -1) see no key there.
      const bool masked = j * kN + kN - 1 > first_pos;
#pragma unroll
      for (int i = 0; i < kN / 2; ++i) {
        const int hf = (i / 2) % 2;
        const float x = acc[i] * p.scale_log2;
        if (masked) {
          const int key = j * kN + 8 * (i / 4) + 2 * (lane % 4) + i % 2;
          acc[i] = key <= row_pos[hf] ? x : neg_inf;
        } else {
          acc[i] = x;
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
        // A row that has seen only masked keys keeps max -inf; subtracting 0 keeps exp2 at 0.
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
      for (int dt = 0; dt < kD / 8; ++dt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) o[4 * dt + e] *= alpha[e / 2];
      }
    };
    // P as the A operand: the accumulators of n8 tiles 2kk and 2kk+1 are one m64k16 fragment.
    const auto pack = [&](const float(&acc)[kN / 2], uint32_t(&pa)[kN / 16][4]) {
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        pa[kk][0] = PackBf16(acc[8 * kk + 0], acc[8 * kk + 1]);
        pa[kk][1] = PackBf16(acc[8 * kk + 2], acc[8 * kk + 3]);
        pa[kk][2] = PackBf16(acc[8 * kk + 4], acc[8 * kk + 5]);
        pa[kk][3] = PackBf16(acc[8 * kk + 6], acc[8 * kk + 7]);
      }
    };
    const auto parity = [](int j) { return static_cast<uint32_t>((j / kStages) & 1); };

    wgmma::BarWait(bar_q, 0);
    float sacc[kN / 2];
    uint32_t pa[kN / 16][4];
    float alpha[2];
    if constexpr (!kOverlap) {
      for (int j = 0; j < n_tiles; ++j) {
        wgmma::BarWait(bar_k(j % kStages), parity(j));
        issue_qk(sacc, j);
        wgmma::Wait<0>();
        wgmma::FenceRegs(sacc);
        softmax(sacc, j, alpha);
        rescale(alpha);
        pack(sacc, pa);
        wgmma::BarWait(bar_v(j % kStages), parity(j));
        issue_pv(pa, j);
        wgmma::Wait<0>();
        wgmma::FenceRegs(o);
        wgmma::BarArrive(bar_empty(j % kStages));
      }
    } else {
      // FlashAttention-3's intra-warpgroup overlap: S of tile j is computed on the tensor cores
      // while this warpgroup waits for P V of tile j - 1, and the softmax of tile j runs while
      // that P V is still in flight. kPingPong also takes turns between the two consumers
      // (named barriers 1 and 2): one issues its GEMMs while the other runs its softmax.
      const auto my_turn = [&] {
        if constexpr (kPingPong) wgmma::NamedBarSync(1 + cw, 256);
      };
      const auto their_turn = [&] {
        if constexpr (kPingPong) wgmma::NamedBarArrive(2 - cw, 256);
      };
      if constexpr (kPingPong) {
        if (cw == 0) wgmma::NamedBarArrive(1, 256);  // consumer 0 starts
      }
      wgmma::BarWait(bar_k(0), 0);
      my_turn();
      issue_qk(sacc, 0);
      their_turn();
      wgmma::Wait<0>();
      wgmma::FenceRegs(sacc);
      softmax(sacc, 0, alpha);  // O is still 0: nothing to rescale
      pack(sacc, pa);
      for (int j = 1; j < n_tiles; ++j) {
        wgmma::BarWait(bar_k(j % kStages), parity(j));
        wgmma::BarWait(bar_v((j - 1) % kStages), parity(j - 1));
        my_turn();
        issue_qk(sacc, j);
        issue_pv(pa, j - 1);
        their_turn();
        wgmma::Wait<1>();  // S of tile j (committed first) is done
        wgmma::FenceRegs(sacc);
        softmax(sacc, j, alpha);
        wgmma::Wait<0>();
        wgmma::FenceRegs(o);
        wgmma::BarArrive(bar_empty((j - 1) % kStages));
        rescale(alpha);
        pack(sacc, pa);
      }
      wgmma::BarWait(bar_v((n_tiles - 1) % kStages), parity(n_tiles - 1));
      my_turn();
      issue_pv(pa, n_tiles - 1);
      // Consumer 1's last hand-over would have no taker: every sync is matched exactly.
      if (cw == 0) their_turn();
      wgmma::Wait<0>();
      wgmma::FenceRegs(o);
      wgmma::BarArrive(bar_empty((n_tiles - 1) % kStages));
    }

    // Normalise and store; rows whose softmax saw no key get 0 and LSE -inf.
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      StoreRow<kD>(p, c, 64 * cw + 16 * warp + lane / 4 + 8 * hf, row_sum[hf], row_max[hf],
                   [&](int dt, int e) { return o[4 * dt + 2 * hf + e]; });
    }
  }
#else
  (void)p;
  __trap();  // wgmma and setmaxnreg need the sm_90a target (SPARSEFILL_CUDA_GENCODE)
#endif
}

}  // namespace sparsefill::kernels::cuda::flash
