// Reassembles streamed KV chunks into the contiguous per-layer cache Engine::Decode reads.
// A chunk is a run of blocks of one (layer, KV head); each block is K [tokens, head_dim] then
// V [tokens, head_dim] in the layout's dtype. The assembler checks every block's xxh64 itself
// (the client library checked it too: a decode node trusts no one), refuses duplicates and
// ranges outside the layout, and at the end names the first block that never came.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/client/types.h"
#include "sparsefill/engine/engine.h"
#include "sparsefill/kvstore/layout.h"

namespace sparsefill::tools {

struct AssemblyStats {
  int64_t chunks = 0;
  int64_t blocks = 0;
  uint64_t bytes = 0;
  int64_t hot_blocks = 0;
  int64_t cold_blocks = 0;
  uint64_t hot_bytes = 0;
  uint64_t cold_bytes = 0;
  int64_t checksums_verified = 0;
  int64_t checksum_failures = 0;
  // Seconds since StartClock: first and last chunk overall, last hot chunk,
  // first and last cold chunk (-1 when there was none).
  double first_chunk_s = -1;
  double last_chunk_s = -1;
  double last_hot_s = -1;
  double first_cold_s = -1;
  double last_cold_s = -1;
  // Per layer: seconds of the first chunk of that layer (-1 when none came).
  std::vector<double> layer_first_chunk_s;
  // Layers in the order their first chunk came.
  std::vector<int32_t> layer_order;
};

class CacheAssembler {
 public:
  // InvalidArgument when the layout is invalid.
  static absl::StatusOr<CacheAssembler> Create(const kvstore::CacheId& id,
                                               const kvstore::CacheLayout& layout);

  // The stats' times count from here (default: from Create).
  void StartClock() { start_ = std::chrono::steady_clock::now(); }
  // Copies the chunk's blocks into the cache (fp32). DataLoss naming the block on a checksum
  // mismatch, a duplicate block, a range outside the layout or a size that does not match.
  absl::Status Add(const client::KvChunk& chunk);
  // OK when every block of every (layer, KV head) arrived; DataLoss naming the first missing.
  absl::Status CheckComplete() const;

  const kvstore::CacheLayout& layout() const { return layout_; }
  const AssemblyStats& stats() const { return stats_; }
  // [num_layers] of K and V, [num_tokens, kv_heads, head_dim] fp32 each.
  const std::vector<engine::LayerKvBuffer>& cache() const { return cache_; }
  std::vector<engine::LayerKvBuffer> TakeCache() && { return std::move(cache_); }

 private:
  CacheAssembler(const kvstore::CacheId& id, const kvstore::CacheLayout& layout);
  double Elapsed() const;

  kvstore::CacheId id_;
  kvstore::CacheLayout layout_;
  std::vector<engine::LayerKvBuffer> cache_;
  std::vector<uint8_t> received_;  // [num_layers, kv_heads, num_blocks]
  std::vector<float> scratch_;     // one block converted to fp32
  AssemblyStats stats_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace sparsefill::tools
