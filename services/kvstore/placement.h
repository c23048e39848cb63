// Locality-constrained hot/cold placement (DESIGN §4 NOSA, §6) for one (layer, KV head).
#pragma once

#include <cstdint>
#include <vector>

#include "sparsefill/kvstore/kv_store.h"

namespace sparsefill::kvstore {

struct HeadPlacement {
  std::vector<uint8_t> hot;  // [num_blocks]: 1 = keep a hot copy
  // [num_blocks]: eviction priority of the hot copy (lower goes first); init and local blocks
  // get +inf so budget pressure drops importance-chosen blocks before the locality ones.
  std::vector<float> priority;
};

// The first init_blocks and the last local_blocks of the prompt, then the highest importance
// (ties and NaN: lower importance first, then lower block index wins) up to hot_blocks in total.
// `importance`: [num_blocks] query-agnostic scores, or null for init + local only.
HeadPlacement PlaceHead(int64_t num_blocks, const PlacementOptions& options,
                        const float* importance);

}  // namespace sparsefill::kvstore
