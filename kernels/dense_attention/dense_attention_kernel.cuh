// Dense causal flash attention forward (device code). One CTA = one KV head x a run of query
// tokens (all G query heads of the group as rows); key tiles run contiguously from key 0 to the
// CTA's last query position, and only tiles that reach past the CTA's first query position pay
// for the causal mask.
#pragma once

#include <cstdint>

#include "kernels/common/flash_fwd.cuh"

namespace sparsefill::kernels::cuda::flash {

template <int kD, int kMTiles, int kN>
__global__ void __launch_bounds__(kThreads) DenseAttentionKernel(const FlashParams p) {
  using Tile = FlashTile<kD, kMTiles, kN>;
  extern __shared__ __align__(128) uint8_t smem[];
  const SeqView s = ResolveSeq(p, blockIdx.y);
  if (!s.ok) return;
  const int hk = blockIdx.z;
  // Later query tiles see more keys: schedule them first so the tail of the grid is short.
  const int tok0 = static_cast<int>(gridDim.x - 1 - blockIdx.x) * p.tokens_per_cta;
  if (tok0 >= s.q_len) return;
  const int ntok = min(p.tokens_per_cta, s.q_len - tok0);
  const int last_pos = s.q_pos0 + tok0 + ntok - 1;

  Tile tile(smem);
  tile.Begin(p, s, hk, tok0, ntok);
  const int n_tiles = last_pos / kN + 1;
  tile.Pipeline(
      n_tiles,
      [&](int j, int stage) {
        return tile.LoadKeys(p, s, hk, stage, [&](int slot) { return Slot{j * kN + slot, ~0ull}; });
      },
      [&](int, int stage, bool unmasked) {
        // Only tiles that reach past the first query pay for the causal mask.
        if (unmasked) {
          tile.template Compute<false>(p, stage);
        } else {
          tile.template Compute<true>(p, stage);
        }
      });
  CpAsyncCommit();
  CpAsyncWait<0>();
  tile.Finish(p, s, hk, tok0, ntok);
}

}  // namespace sparsefill::kernels::cuda::flash
