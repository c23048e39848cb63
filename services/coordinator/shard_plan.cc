#include "services/coordinator/shard_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace sparsefill::coordinator {

absl::StatusOr<std::vector<ShardRange>> PlanShards(int64_t num_tokens, int32_t block_size,
                                                   const std::vector<std::string>& workers) {
  if (num_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("shard plan: num_tokens ", num_tokens));
  }
  if (block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("shard plan: block_size ", block_size));
  }
  if (workers.empty()) return absl::UnavailableError("shard plan: no healthy worker");
  const int64_t blocks = (num_tokens + block_size - 1) / block_size;
  const int64_t n = std::min<int64_t>(blocks, static_cast<int64_t>(workers.size()));
  const int64_t base = blocks / n;
  const int64_t extra = blocks % n;  // the first `extra` shards take one block more
  std::vector<ShardRange> plan;
  plan.reserve(n);
  int64_t block = 0;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t count = base + (r < extra ? 1 : 0);
    ShardRange s;
    s.rank = static_cast<int32_t>(r);
    s.address = workers[r];
    s.token_begin = block * block_size;
    s.token_end = std::min(num_tokens, (block + count) * block_size);
    plan.push_back(std::move(s));
    block += count;
  }
  return plan;
}

}  // namespace sparsefill::coordinator
