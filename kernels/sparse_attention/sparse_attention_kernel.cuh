// Block-sparse causal flash attention forward (device code), NSA / InfLLM-V2 style.
//
// One CTA = one KV head x T query tokens, the rows being T tokens x G query heads (GQA packing:
// every key tile is loaded once for the whole group). Each token has its own sorted block list;
// the CTA attends to the UNION of its tokens' lists, built in shared memory one window of
// kWindow block indices at a time (a 64-bit token mask per block: bit t = token t selected it),
// then compacted in ascending order. The union's keys are laid end to end as "slots" and cut
// into key tiles (32 or 64 keys), so small blocks (16/32 tokens) are gathered from wherever they
// lie into full tensor-core tiles and a 128-token block spans several tiles. Each row keeps a slot
// only when its token selected the slot's block and the key is not after the token (the causal
// diagonal). Key tiles are loaded once per CTA, but a warp computes a tile only for its 16-row
// m-tiles whose tokens selected one of its slots (FlashTile::Compute): when neighbouring tokens
// select different blocks the union is several times each list, and most of it is skipped.
#pragma once

#include <cstdint>

#include "kernels/common/flash_fwd.cuh"

namespace sparsefill::kernels::cuda::flash {

constexpr int kWindow = 1024;         // block indices merged per pass (token masks: 8 KiB)
constexpr int kMaxSparseTokens = 64;  // token masks are 64-bit

// Shared memory after the tile: window masks, union (block, mask), reduction scratch.
constexpr int kUnionBytes = kWindow * 8 + kWindow * 8 + kWindow * 4 + 16 * 4;

// Block-wide exclusive prefix sum of `v`; `*total` gets the sum. Uses red[0 .. kWarps).
__device__ __forceinline__ int BlockExclusiveSum(int v, int* red, int* total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) red[warp] = x;
  __syncthreads();
  int before = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    before += w < warp ? red[w] : 0;
    sum += red[w];
  }
  *total = sum;
  return before + x - v;
}

template <int kD, int kMTiles, int kN>
__global__ void __launch_bounds__(kThreads) SparseAttentionKernel(const FlashParams p) {
  using Tile = FlashTile<kD, kMTiles, kN>;
  extern __shared__ __align__(128) uint8_t smem[];
  CtaQueries c;
  if (!ResolveCta(p, &c)) return;
  const SeqView& s = c.s;
  const int hk = c.hk, tok0 = c.tok0, ntok = c.ntok;
  const int first_pos = c.first_pos, last_pos = c.last_pos;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;

  Tile tile(smem);
  tile.Begin(p, c);  // Q loads overlap the merge below

  uint64_t* wmask = reinterpret_cast<uint64_t*>(smem + Tile::kSmemBytes);  // [kWindow]
  uint64_t* umask = wmask + kWindow;                                       // [kWindow]
  int32_t* ublk = reinterpret_cast<int32_t*>(umask + kWindow);             // [kWindow]
  int32_t* red = ublk + kWindow;                                           // [16]

  const int B = p.block_size;
  const int32_t* lists =
      p.blocks + (static_cast<int64_t>(hk) * p.total_q + s.q_begin + tok0) * p.max_blocks;
  // Each thread owns one stretch of one token's (sorted) list and walks it once over all
  // windows, a cursor advancing while entries fall into the current window. Entries outside
  // 0 .. the token's own block end the walk (well-formed lists have none before their -1
  // padding), and out-of-order ones are skipped: a bad list can cost accuracy, never an
  // out-of-bounds access.
  const int per_list = max(1, kThreads / ntok);
  const int my_tok = tid / per_list;  // >= ntok: this thread has no stretch
  const int stretch = (p.max_blocks + per_list - 1) / per_list;
  const int list_at = my_tok * p.max_blocks;
  const int part = tid % per_list;
  int cur = my_tok < ntok ? list_at + min(p.max_blocks, part * stretch) : 0;
  const int end = my_tok < ntok ? list_at + min(p.max_blocks, (part + 1) * stretch) : 0;
  const int own_block = (first_pos + my_tok) / B;
  const uint64_t my_bit = 1ull << (my_tok & 63);
  unsigned long long computed = 0;  // keys walked x tokens (BlockSelection::computed_keys)

  while (true) {
    // The next window starts at the smallest unvisited entry, so empty ranges cost nothing.
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
    __syncthreads();
    int w0 = red[4];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) w0 = min(w0, red[4 + w]);
    if (w0 == 0x7fffffff) break;

    for (int i = tid; i < kWindow; i += kThreads) wmask[i] = 0;
    __syncthreads();
    for (; cur < end; ++cur) {
      const int32_t b = lists[cur];
      if (b < 0 || b > own_block) {
        cur = end;
        break;
      }
      if (b >= w0 + kWindow) break;
      if (b >= w0) atomicOr(reinterpret_cast<unsigned long long*>(&wmask[b - w0]), my_bit);
    }
    __syncthreads();
    constexpr int kPer = kWindow / kThreads;
    int count = 0;
#pragma unroll
    for (int i = 0; i < kPer; ++i) count += wmask[tid * kPer + i] != 0;
    int n_union = 0;
    int at = BlockExclusiveSum(count, red, &n_union);
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const uint64_t m = wmask[tid * kPer + i];
      if (m != 0) {
        ublk[at] = w0 + tid * kPer + i;
        umask[at] = m;
        ++at;
      }
    }
    __syncthreads();
    if (n_union == 0) continue;

    // Only the last union block can reach past the CTA's last query; slots after it are dropped.
    // Slot counts fit int32: at most kWindow blocks of at most 2^20 keys.
    const int last_start = ublk[n_union - 1] * B;
    const int slots = (n_union - 1) * B + min(B, last_pos - last_start + 1);
    const int n_tiles = (slots + kN - 1) / kN;
    computed += static_cast<unsigned long long>(slots) * ntok;
    const int shift = p.block_shift;
    tile.Pipeline(
        n_tiles,
        [&](int j, int stage) {
          const int g0 = j * kN;
          return tile.LoadKeys(p, s, hk, stage, [&](int slot) -> Slot {
            const int g = g0 + slot;
            if (g >= slots) return {-1, 0ull};
            const int u = shift >= 0 ? g >> shift : g / B;
            return {ublk[u] * B + (g - u * B), umask[u]};
          });
        },
        [&](int, int stage, bool unmasked) {
          // Tiles that every token selected, wholly before the first query, need no mask.
          if (unmasked) {
            tile.template Compute<false>(p, stage);
          } else {
            tile.template Compute<true>(p, stage);
          }
        });
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
  if (p.computed_keys != nullptr && tid == 0 && computed > 0) atomicAdd(p.computed_keys, computed);
  tile.Finish(p, c);
}

}  // namespace sparsefill::kernels::cuda::flash
