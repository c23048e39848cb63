// The CTA engine shared by the dense and the block-sparse flash attention forward kernels
// (FlashAttention-2 structure on mma.sync): a CTA owns kRows query rows of ONE KV head, packed as
// tokens x group heads (row r = token r / G, query head r % G), so every key/value tile is loaded
// once for the whole GQA group. Keys come in tiles of kN rows that the caller fills through a
// slot -> key-position function (contiguous for dense, gathered from selected blocks for sparse);
// the engine double-buffers them with cp.async, computes S = Q K^T and O += P V on tensor cores
// and keeps the softmax online in the log2 domain. Private to kernels/.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common/flash_mma.cuh"

namespace sparsefill::kernels::cuda::flash {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kNoKey = 0x7fffffff;  // slot metadata of a padding slot: after every query

// What a key-tile slot holds: a key position of the sequence (< 0: padding) and the CTA tokens
// whose selection contains it (bit t = token t; all ones for dense attention).
struct Slot {
  int32_t key;
  uint64_t mask;
};

// Everything a launch needs; positions are int32 (the launchers check the ranges).
struct FlashParams {
  const __nv_bfloat16* q = nullptr;  // [total_q, q_heads, head_dim]
  const __nv_bfloat16* k = nullptr;  // [total_kv, kv_heads, head_dim]
  const __nv_bfloat16* v = nullptr;  // [total_kv, kv_heads, head_dim]
  __nv_bfloat16* out = nullptr;      // [total_q, q_heads, head_dim]
  float* lse = nullptr;              // [q_heads, total_q]; optional
  // Packed sequences (null: one sequence of total_q queries at q_pos0 over total_kv keys).
  const int32_t* cu_q = nullptr;   // [num_seqs + 1]
  const int32_t* cu_kv = nullptr;  // [num_seqs + 1]
  // Block-sparse only: per (KV head, query) ascending block lists, -1 padded.
  const int32_t* blocks = nullptr;  // [kv_heads, total_q, max_blocks]
  // Block-sparse only, optional: each CTA adds the token-key pairs it computed (the keys of its
  // union times its tokens, masked pairs included): BlockSelection::computed_keys.
  unsigned long long* computed_keys = nullptr;
  int32_t total_q = 0;
  int32_t total_kv = 0;
  int32_t q_pos0 = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t group = 0;           // q_heads / kv_heads
  int32_t tokens_per_cta = 0;  // kRows / group
  int32_t max_blocks = 0;
  int32_t block_size = 0;
  int32_t block_shift = -1;  // log2(block_size) when it is a power of two, else -1
  float scale_log2 = 0.0f;   // softmax scale * log2(e)
  // Block-sparse only: 0 turns off the per-m-tile skip of FlashTile::Compute (exact either way;
  // benchmarks time it against the kernel without it, SetSparseTileSkip).
  int32_t tile_skip = 1;
};

// One sequence as a CTA sees it. `ok` is false when device-side offsets are malformed; the CTA
// then writes nothing rather than read out of bounds.
struct SeqView {
  int32_t q_begin, q_len, kv_begin, kv_len, q_pos0;
  bool ok;
};

__device__ __forceinline__ SeqView ResolveSeq(const FlashParams& p, int seq) {
  if (p.cu_q == nullptr) return {0, p.total_q, 0, p.total_kv, p.q_pos0, true};
  const int32_t qb = p.cu_q[seq], qe = p.cu_q[seq + 1];
  const int32_t kb = p.cu_kv[seq], ke = p.cu_kv[seq + 1];
  const bool ok = 0 <= qb && qb <= qe && qe <= p.total_q && 0 <= kb && kb <= ke &&
                  ke <= p.total_kv && qe - qb <= ke - kb;
  // Queries are the sequence's last q_len positions (FlashAttention's bottom-right causal).
  return {qb, qe - qb, kb, ke - kb, (ke - kb) - (qe - qb), ok};
}

// The query rows of a CTA (every flash kernel's grid): blockIdx.x = query tile, taken in reverse
// so that the later tiles, which see more keys, start first and the grid's tail is short;
// blockIdx.y = sequence; blockIdx.z = KV head.
struct CtaQueries {
  SeqView s;
  int hk;         // KV head
  int tok0;       // first token of the tile, relative to the sequence's queries
  int ntok;       // tokens in the tile (<= tokens_per_cta)
  int first_pos;  // position of token tok0
  int last_pos;   // position of the tile's last token
};

// False when the CTA has nothing to do: malformed offsets, or a tile past its sequence's queries.
__device__ __forceinline__ bool ResolveCta(const FlashParams& p, CtaQueries* c) {
  c->s = ResolveSeq(p, blockIdx.y);
  if (!c->s.ok) return false;
  c->hk = blockIdx.z;
  c->tok0 = static_cast<int>(gridDim.x - 1 - blockIdx.x) * p.tokens_per_cta;
  if (c->tok0 >= c->s.q_len) return false;
  c->ntok = min(p.tokens_per_cta, c->s.q_len - c->tok0);
  c->first_pos = c->s.q_pos0 + c->tok0;
  c->last_pos = c->first_pos + c->ntok - 1;
  return true;
}

// Normalises and stores output row `row` of a CTA (token row / G, query head hk * G + row % G),
// held by a quad of lanes in the tensor-core accumulator layout: acc(nt, e) is column
// 8 nt + 2 (lane % 4) + e, and partial_sum this lane's share of the row's softmax sum. Rows past
// the CTA's tokens store nothing; a row whose softmax saw no key gets 0 and LSE -inf. Every lane
// of the warp calls it (the quad's sums are shuffled).
template <int kD, class Acc>
__device__ __forceinline__ void StoreRow(const FlashParams& p, const CtaQueries& c, int row,
                                         float partial_sum, float row_max_log2, Acc acc) {
  float l = partial_sum;
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  const int t = row / p.group, h = row % p.group;
  if (t >= c.ntok) return;
  const int lane = threadIdx.x % 32;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  const int64_t token = c.s.q_begin + c.tok0 + t;
  const int head = c.hk * p.group + h;
  __nv_bfloat16* dst =
      p.out + token * (static_cast<int64_t>(p.q_heads) * kD) + head * kD + (lane % 4) * 2;
#pragma unroll
  for (int nt = 0; nt < kD / 8; ++nt) {
    *reinterpret_cast<uint32_t*>(dst + nt * 8) = PackBf16(acc(nt, 0) * inv, acc(nt, 1) * inv);
  }
  if (p.lse != nullptr && lane % 4 == 0) {
    p.lse[static_cast<int64_t>(head) * p.total_q + token] =
        l > 0.0f ? (row_max_log2 + __log2f(l)) * 0.69314718055994531f : -__int_as_float(0x7f800000);
  }
}

// kN keys per tile: 64, or 32 where 128 rows x d = 128 would not fit in registers.
template <int kD, int kMTiles, int kN>
struct FlashTile {
  static constexpr int kRows = 16 * kMTiles * kWarps;
  static constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  static constexpr int kDTiles = kD / 8;  // n8 accumulator tiles per output row
  // Shared memory: Q [kRows, kD] | K [2][kN, kD] | V [2][kN, kD] | key [2][kN] int32
  // | token mask [2][kN] u64 (sparse only, but always reserved to keep one layout)
  // | per m-tile of each warp: its tokens' bits u64, its last query position int32 (+ pad).
  static constexpr int kQBytes = kRows * kD * 2;
  static constexpr int kKVBytes = kN * kD * 2;
  static constexpr int kKeyOffset = kQBytes + 4 * kKVBytes;
  static constexpr int kMaskOffset = kKeyOffset + 2 * kN * 4;
  static constexpr int kMtOffset = kMaskOffset + 2 * kN * 8;
  static constexpr int kSmemBytes = kMtOffset + kWarps * kMTiles * 16;
  static_assert(kD == 64 || kD == 128);
  static_assert(kN == 32 || kN == 64);
  static_assert(kKeyOffset % 16 == 0 && kMaskOffset % 16 == 0);

  // Shared memory.
  __nv_bfloat16* sq;
  __nv_bfloat16* sk;  // stage s at sk + s * kN * kD
  __nv_bfloat16* sv;
  int32_t* skey;    // [2][kN] key position per slot (kNoKey: padding)
  uint64_t* smask;  // [2][kN] which of the CTA's tokens selected the slot's block

  // Per-thread state: rows (warp * 16 * kMTiles + mt * 16 + lane / 4 + 8 * half).
  float acc[kMTiles][kDTiles][4];
  float row_max[kMTiles][2];    // log2 domain
  float row_sum[kMTiles][2];    // this thread's partial sum (4 lanes share a row)
  int32_t row_pos[kMTiles][2];  // query position; -1 for padding rows (sees no key)
  int32_t first_pos;            // position of the CTA's first token (row token = pos - first)
  uint64_t all_tokens;          // one bit per token of the CTA
  // Shared, per 16-row m-tile of each warp: its tokens' bits and its last query position (-1:
  // padding rows only). A masked tile that none of an m-tile's tokens selected, or whose keys all
  // come after its last query, leaves that m-tile's softmax state as it is: Compute skips it.
  // (Shared rather than registers: the 128-row tile is at the register limit.)
  uint64_t* smt_tokens;   // [kWarps * kMTiles]
  int32_t* smt_last_pos;  // [kWarps * kMTiles]

  int tid, lane, warp;

  __device__ __forceinline__ explicit FlashTile(uint8_t* smem) {
    sq = reinterpret_cast<__nv_bfloat16*>(smem);
    sk = reinterpret_cast<__nv_bfloat16*>(smem + kQBytes);
    sv = reinterpret_cast<__nv_bfloat16*>(smem + kQBytes + 2 * kKVBytes);
    skey = reinterpret_cast<int32_t*>(smem + kKeyOffset);
    smask = reinterpret_cast<uint64_t*>(smem + kMaskOffset);
    smt_tokens = reinterpret_cast<uint64_t*>(smem + kMtOffset);
    smt_last_pos = reinterpret_cast<int32_t*>(smem + kMtOffset + kWarps * kMTiles * 8);
    tid = threadIdx.x;
    lane = tid % 32;
    warp = tid / 32;
  }

  __device__ __forceinline__ static int RowOf(int warp, int lane, int mt, int half) {
    return warp * 16 * kMTiles + mt * 16 + lane / 4 + 8 * half;
  }

  // Issues the Q tile's loads (not committed) and sets up the per-row state. Rows past the
  // tokens of this CTA are zero and see no key.
  __device__ __forceinline__ void Begin(const FlashParams& p, const CtaQueries& c) {
    const SeqView& s = c.s;
    const int hk = c.hk, tok0 = c.tok0, ntok = c.ntok;
    first_pos = c.first_pos;
    all_tokens = ntok >= 64 ? ~0ull : (1ull << ntok) - 1;
    const int64_t q_stride = static_cast<int64_t>(p.q_heads) * kD;
    for (int idx = tid; idx < kRows * kChunks; idx += kThreads) {
      const int r = idx / kChunks, ch = idx % kChunks;
      const int t = r / p.group, h = r % p.group;
      const bool valid = t < ntok;
      const __nv_bfloat16* src =
          valid ? p.q + (s.q_begin + tok0 + t) * q_stride + (hk * p.group + h) * kD + ch * 8 : p.q;
      CpAsync16(SmemAddr(sq + Swizzle<kD>(r, ch)), src, valid);
    }
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      if (lane == 0) {  // read after the pipeline's first __syncthreads
        const int t_lo = (warp * 16 * kMTiles + mt * 16) / p.group;
        const int t_hi = min((warp * 16 * kMTiles + mt * 16 + 15) / p.group, ntok - 1);
        uint64_t bits = 0;
        for (int t = t_lo; t <= t_hi; ++t) bits |= 1ull << (t & 63);
        smt_tokens[warp * kMTiles + mt] = bits;
        smt_last_pos[warp * kMTiles + mt] = t_lo <= t_hi ? s.q_pos0 + tok0 + t_hi : -1;
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int t = RowOf(warp, lane, mt, hf) / p.group;
        row_pos[mt][hf] = t < ntok ? s.q_pos0 + tok0 + t : -1;
        row_max[mt][hf] = -__int_as_float(0x7f800000);
        row_sum[mt][hf] = 0.0f;
      }
#pragma unroll
      for (int nt = 0; nt < kDTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
      }
    }
  }

  // Issues the loads of one key tile into `stage`: slot i holds key slot_of(i).key (< 0:
  // padding) of the sequence, selected by the CTA tokens in slot_of(i).mask. Returns whether
  // every slot this thread loaded is visible to every row (selected by all tokens, not after the
  // first query); the AND over the CTA lets Compute skip the mask.
  template <class SlotOf>
  __device__ __forceinline__ bool LoadKeys(const FlashParams& p, const SeqView& s, int hk,
                                           int stage, SlotOf slot_of) {
    const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * kD;
    __nv_bfloat16* dk = sk + stage * kN * kD;
    __nv_bfloat16* dv = sv + stage * kN * kD;
    // kThreads is a multiple of kChunks: each thread keeps one chunk column and walks rows.
    static_assert(kThreads % kChunks == 0);
    const int ch = tid % kChunks;
    bool unmasked = true;
    for (int row = tid / kChunks; row < kN; row += kThreads / kChunks) {
      const Slot slot = slot_of(row);
      const bool valid = slot.key >= 0 && slot.key < s.kv_len;
      const int64_t off = valid ? (s.kv_begin + slot.key) * kv_stride + hk * kD + ch * 8 : 0;
      CpAsync16(SmemAddr(dk + Swizzle<kD>(row, ch)), p.k + off, valid);
      CpAsync16(SmemAddr(dv + Swizzle<kD>(row, ch)), p.v + off, valid);
      if (ch == 0) {
        skey[stage * kN + row] = valid ? slot.key : kNoKey;
        smask[stage * kN + row] = slot.mask;
      }
      unmasked =
          unmasked && valid && slot.key <= first_pos && (slot.mask & all_tokens) == all_tokens;
    }
    return unmasked;
  }

  // One key tile from `stage`. kMask: a row keeps a slot only when its token selected the slot
  // (token mask) and the key is not after the row's query (the causal diagonal).
  template <bool kMask>
  __device__ __forceinline__ void Compute(const FlashParams& p, int stage) {
    const uint32_t q_base = SmemAddr(sq);
    const uint32_t k_base = SmemAddr(sk + stage * kN * kD);
    const uint32_t v_base = SmemAddr(sv + stage * kN * kD);
    constexpr int kNTiles = kN / 8;

    // Which m-tiles have a slot to keep (warp-uniform): per-token lists that differ from token
    // to token leave most of a CTA's union unselected by any one m-tile's tokens.
    bool live[kMTiles];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) live[mt] = true;
    if constexpr (kMask) {
      if (p.tile_skip != 0) {
        bool any = false;
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          const uint64_t tokens = smt_tokens[warp * kMTiles + mt];
          const int32_t last_pos = smt_last_pos[warp * kMTiles + mt];
          bool mine = false;
#pragma unroll
          for (int i = lane; i < kN; i += 32) {
            mine =
                mine || ((smask[stage * kN + i] & tokens) != 0 && skey[stage * kN + i] <= last_pos);
          }
          live[mt] = __any_sync(0xffffffffu, mine);
          any = any || live[mt];
        }
        if (!any) return;
      }
    }

    float s[kMTiles][kNTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const int r = warp * 16 * kMTiles + mt * 16 + lane % 16;
        if (live[mt]) LdMatrixX4(a[mt], q_base + 2 * Swizzle<kD>(r, kk * 2 + lane / 16));
      }
#pragma unroll
      for (int nb = 0; nb < kNTiles / 2; ++nb) {
        uint32_t b[4];
        const int key = nb * 16 + lane % 8 + (lane / 16) * 8;
        LdMatrixX4(b, k_base + 2 * Swizzle<kD>(key, kk * 2 + (lane / 8) % 2));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          if (!live[mt]) continue;
          MmaBf16(s[mt][2 * nb], a[mt], b[0], b[1]);
          MmaBf16(s[mt][2 * nb + 1], a[mt], b[2], b[3]);
        }
      }
    }

    const float neg_inf = -__int_as_float(0x7f800000);
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      if (!live[mt]) continue;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int slot = nt * 8 + (lane % 4) * 2 + c;
          int32_t key = 0;
          uint64_t mask = 0;
          if constexpr (kMask) {
            key = skey[stage * kN + slot];
            mask = smask[stage * kN + slot];
          }
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const float x = s[mt][nt][2 * hf + c] * p.scale_log2;
            if constexpr (kMask) {
              // Padding rows (position -1) see no key whatever their token bit says.
              const int tok = (row_pos[mt][hf] - first_pos) & 63;
              const bool keep = key <= row_pos[mt][hf] && ((mask >> tok) & 1u);
              s[mt][nt][2 * hf + c] = keep ? x : neg_inf;
            } else {
              s[mt][nt][2 * hf + c] = x;
            }
          }
        }
      }
    }

    // Online softmax: rescale what was accumulated when the row maximum grows.
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      if (!live[mt]) continue;
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = row_max[mt][hf];
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // A row that has seen only masked keys keeps max -inf; subtracting 0 keeps exp2 at 0
        // instead of NaN.
        const float base = mx == neg_inf ? 0.0f : mx;
        const float alpha = Exp2(row_max[mt][hf] - base);
        row_max[mt][hf] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          s[mt][nt][2 * hf] = Exp2(s[mt][nt][2 * hf] - base);
          s[mt][nt][2 * hf + 1] = Exp2(s[mt][nt][2 * hf + 1] - base);
          sum += s[mt][nt][2 * hf] + s[mt][nt][2 * hf + 1];
        }
        row_sum[mt][hf] = row_sum[mt][hf] * alpha + sum;
        // Once the running maximum settles most tiles leave it unchanged; skipping the rescale
        // then saves kD multiplies per row.
        if (alpha != 1.0f) {
#pragma unroll
          for (int nt = 0; nt < kDTiles; ++nt) {
            acc[mt][nt][2 * hf] *= alpha;
            acc[mt][nt][2 * hf + 1] *= alpha;
          }
        }
      }
    }

    // O += P V: the S accumulators of two adjacent n8 tiles are exactly one k16 A fragment.
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        if (!live[mt]) continue;
        a[mt][0] = PackBf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = PackBf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = PackBf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = PackBf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int db = 0; db < kD / 16; ++db) {
        uint32_t b[4];
        const int key = kk * 16 + lane % 8 + ((lane / 8) % 2) * 8;
        LdMatrixX4Trans(b, v_base + 2 * Swizzle<kD>(key, db * 2 + lane / 16));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          if (!live[mt]) continue;
          MmaBf16(acc[mt][2 * db], a[mt], b[0], b[1]);
          MmaBf16(acc[mt][2 * db + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }

  // Normalises and stores this CTA's rows; rows whose softmax saw no key get 0 and LSE -inf.
  __device__ __forceinline__ void Finish(const FlashParams& p, const CtaQueries& c) {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        StoreRow<kD>(p, c, RowOf(warp, lane, mt, hf), row_sum[mt][hf], row_max[mt][hf],
                     [&](int nt, int e) { return acc[mt][nt][2 * hf + e]; });
      }
    }
  }

  // Runs tiles 0 .. n_tiles - 1 through the two-stage cp.async pipeline. `load(j, stage)` issues
  // tile j and returns LoadKeys' verdict; `compute(j, stage, unmasked)` consumes it. Loads issued
  // before the call (Q) complete with the first tile.
  template <class Load, class ComputeFn>
  __device__ __forceinline__ void Pipeline(int n_tiles, Load load, ComputeFn compute) {
    if (n_tiles <= 0) return;
    bool unmasked = load(0, 0);
    CpAsyncCommit();
    for (int j = 0; j < n_tiles; ++j) {
      bool next_unmasked = true;
      if (j + 1 < n_tiles) next_unmasked = load(j + 1, (j + 1) & 1);
      CpAsyncCommit();
      CpAsyncWait<1>();
      const bool tile_unmasked = __syncthreads_and(unmasked);
      compute(j, j & 1, tile_unmasked);
      unmasked = next_unmasked;
      __syncthreads();  // the stage is refilled by the next iteration's load
    }
  }
};

}  // namespace sparsefill::kernels::cuda::flash
