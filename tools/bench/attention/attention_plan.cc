#include "tools/bench/attention/attention_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace sparsefill::bench {

std::vector<SelectionConfig> DefaultSelectionConfigs() {
  return {
      {"infllmv2", 32, 16, 64, 1, 2048 / 64, 64, 1.0f},
      // topk = init 8 + local 32 + own 1 + 16 by score.
      {"phsa", 16, 16, 16, 128 / 16, 512 / 16, 128 / 16 + 512 / 16 + 1 + 16, 0.5f},
      {"b64-eqkeys", 32, 16, 64, 2, 8, 2 + 8 + 1 + 4, 1.0f},
  };
}

absl::StatusOr<TileBlocks> TileUnion(const int32_t* lists, int32_t kv_heads, int64_t num_q,
                                     int64_t q_pos0, int32_t max_blocks, int32_t block_size,
                                     int32_t q_tile, int32_t out_block) {
  if (kv_heads <= 0 || num_q < 0 || q_pos0 < 0 || max_blocks <= 0 || block_size <= 0 ||
      q_tile <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tile union: kv_heads ", kv_heads, ", max_blocks ", max_blocks,
                     ", block_size ", block_size, " and q_tile ", q_tile,
                     " must be positive, num_q ", num_q, " and q_pos0 ", q_pos0, " non-negative"));
  }
  if (out_block <= 0 || out_block % block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tile union: out_block ", out_block,
                                                   " must be a positive multiple of block_size ",
                                                   block_size));
  }
  if (num_q > 0 && lists == nullptr) {
    return absl::InvalidArgumentError("tile union: lists must not be null");
  }
  TileBlocks t;
  t.kv_heads = kv_heads;
  t.q_tile = q_tile;
  t.out_block = out_block;
  t.num_tiles = (num_q + q_tile - 1) / q_tile;
  t.offsets.reserve(kv_heads * t.num_tiles + 1);
  t.offsets.push_back(0);
  const int64_t ratio = out_block / block_size;
  const int64_t last_out = ((q_pos0 + num_q - 1) / block_size) / ratio + 1;
  std::vector<uint8_t> seen(std::max<int64_t>(last_out, 1), 0);
  for (int32_t g = 0; g < kv_heads; ++g) {
    for (int64_t tile = 0; tile < t.num_tiles; ++tile) {
      const size_t first = t.blocks.size();
      const int64_t q_end = std::min(num_q, (tile + 1) * q_tile);
      for (int64_t i = tile * q_tile; i < q_end; ++i) {
        const int32_t* row = lists + (g * num_q + i) * max_blocks;
        const int64_t own = (q_pos0 + i) / block_size;
        for (int32_t j = 0; j < max_blocks; ++j) {
          const int32_t b = row[j];
          if (b == -1) continue;
          if (b < -1 || b > own) {
            return absl::InvalidArgumentError(absl::StrCat("tile union: kv head ", g, " query ", i,
                                                           " entry ", j, " = ", b,
                                                           " is outside [-1, ", own, "]"));
          }
          const int64_t ob = b / ratio;
          if (!seen[ob]) {
            seen[ob] = 1;
            t.blocks.push_back(static_cast<int32_t>(ob));
          }
        }
      }
      std::sort(t.blocks.begin() + first, t.blocks.end());
      for (size_t k = first; k < t.blocks.size(); ++k) seen[t.blocks[k]] = 0;
      t.offsets.push_back(static_cast<int64_t>(t.blocks.size()));
    }
  }
  return t;
}

absl::StatusOr<int64_t> SelectedPairs(const int32_t* lists, int32_t kv_heads, int64_t num_q,
                                      int64_t q_pos0, int32_t max_blocks, int32_t block_size) {
  if (kv_heads <= 0 || num_q < 0 || q_pos0 < 0 || max_blocks <= 0 || block_size <= 0) {
    return absl::InvalidArgumentError("selected pairs: bad shape");
  }
  if (num_q > 0 && lists == nullptr) {
    return absl::InvalidArgumentError("selected pairs: lists must not be null");
  }
  int64_t pairs = 0;
  for (int64_t r = 0; r < kv_heads * num_q; ++r) {
    const int64_t t = q_pos0 + r % num_q;
    const int32_t* row = lists + r * max_blocks;
    for (int32_t j = 0; j < max_blocks; ++j) {
      const int64_t b = row[j];
      if (b == -1) continue;
      if (b < -1 || b * block_size > t) {
        return absl::InvalidArgumentError(absl::StrCat("selected pairs: row ", r, " entry ", j,
                                                       " = ", b, " is after position ", t));
      }
      pairs += std::min<int64_t>(block_size, t + 1 - b * block_size);
    }
  }
  return pairs;
}

int64_t TilePairs(const TileBlocks& tiles, int64_t num_q) {
  int64_t pairs = 0;
  for (int32_t g = 0; g < tiles.kv_heads; ++g) {
    for (int64_t tile = 0; tile < tiles.num_tiles; ++tile) {
      const int64_t i = g * tiles.num_tiles + tile;
      const int64_t q0 = tile * tiles.q_tile, q1 = std::min(num_q, q0 + tiles.q_tile);
      for (int64_t k = tiles.offsets[i]; k < tiles.offsets[i + 1]; ++k) {
        const int64_t k0 = int64_t{tiles.blocks[k]} * tiles.out_block;
        const int64_t k1 = k0 + tiles.out_block;
        for (int64_t t = q0; t < q1; ++t) pairs += std::max<int64_t>(0, std::min(k1, t + 1) - k0);
      }
    }
  }
  return pairs;
}

int64_t CausalPairs(int64_t num_q, int64_t q_pos0) {
  return num_q * q_pos0 + num_q * (num_q + 1) / 2;
}

int64_t VisibleChunkPairs(int64_t num_q, int64_t q_pos0, int32_t kernel_size,
                          int32_t kernel_stride) {
  int64_t pairs = 0;
  for (int64_t t = q_pos0; t < q_pos0 + num_q; ++t) {
    if (t + 1 >= kernel_size) pairs += (t + 1 - kernel_size) / kernel_stride + 1;
  }
  return pairs;
}

}  // namespace sparsefill::bench
