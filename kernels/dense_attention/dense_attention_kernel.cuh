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
  CtaQueries c;
  if (!ResolveCta(p, &c)) return;
  const SeqView& s = c.s;

  Tile tile(smem);
  tile.Begin(p, c);
  const int n_tiles = c.last_pos / kN + 1;
  tile.Pipeline(
      n_tiles,
      [&](int j, int stage) {
        return tile.LoadKeys(p, s, c.hk, stage, [&](int slot) {
          return Slot{j * kN + slot, ~0ull};
        });
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
  tile.Finish(p, c);
}

}  // namespace sparsefill::kernels::cuda::flash
