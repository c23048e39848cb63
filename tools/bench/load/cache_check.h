// Reading a READY cache back the way a decode node does, keeping what a later read must match:
// every block's xxh64, recomputed here from the streamed bytes (not only the one the client
// library checked against the chunk's own list), with every block present exactly once.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/client/coordinator_client.h"

namespace sparsefill::bench {

struct CacheDigest {
  kvstore::CacheLayout layout;
  std::vector<uint64_t> checksums;  // [layers, kv_heads, blocks] by layout.Index
  int64_t blocks = 0;
  uint64_t bytes = 0;
  // One number for the whole cache (order-dependent fold of `checksums`), to compare runs.
  uint64_t Fold() const;
};

// StreamCache of the whole cache within `timeout`. DataLoss when a block's bytes do not hash to
// its checksum, a block comes twice or outside the layout, or one never comes; the stream's own
// status otherwise.
absl::StatusOr<CacheDigest> StreamAndVerify(client::CoordinatorClient& client,
                                            const kvstore::CacheId& id,
                                            std::chrono::milliseconds timeout);

// The same cache read twice must hash the same; DataLoss naming the first block that differs.
absl::Status CompareDigests(const CacheDigest& first, const CacheDigest& again);

}  // namespace sparsefill::bench
