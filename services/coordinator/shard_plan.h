// Shard plans (DESIGN §1.2): contiguous token ranges aligned to the selection block size, one per
// worker, as even as whole blocks allow; fewer workers than given when the prompt has fewer
// blocks. Plain data, so tests and logs can compare plans.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sparsefill::coordinator {

struct ShardRange {
  int32_t rank = 0;
  std::string address;      // the worker's host:port
  int64_t token_begin = 0;  // [token_begin, token_end); token_begin % block_size == 0
  int64_t token_end = 0;
  friend bool operator==(const ShardRange&, const ShardRange&) = default;
};

// Ranks follow the order of `workers`. InvalidArgument for non-positive sizes; UNAVAILABLE when
// `workers` is empty.
absl::StatusOr<std::vector<ShardRange>> PlanShards(int64_t num_tokens, int32_t block_size,
                                                   const std::vector<std::string>& workers);

// Block index range [first, end) of a block-aligned shard.
inline int64_t ShardFirstBlock(const ShardRange& s, int32_t block_size) {
  return s.token_begin / block_size;
}
inline int64_t ShardEndBlock(const ShardRange& s, int32_t block_size) {
  return (s.token_end + block_size - 1) / block_size;
}

}  // namespace sparsefill::coordinator
