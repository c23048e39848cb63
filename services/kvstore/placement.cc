#include "services/kvstore/placement.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace sparsefill::kvstore {

HeadPlacement PlaceHead(int64_t num_blocks, const PlacementOptions& options,
                        const float* importance) {
  HeadPlacement p;
  p.hot.assign(num_blocks, 0);
  p.priority.assign(num_blocks, 0.0f);
  if (options.hot_blocks <= 0 || num_blocks <= 0) return p;
  constexpr float kPinned = std::numeric_limits<float>::infinity();
  int64_t chosen = 0;
  auto take = [&](int64_t b, float priority) {
    if (p.hot[b]) return;
    p.hot[b] = 1;
    p.priority[b] = priority;
    ++chosen;
  };
  for (int64_t b = 0; b < std::min<int64_t>(options.init_blocks, num_blocks); ++b) take(b, kPinned);
  for (int64_t b = std::max<int64_t>(0, num_blocks - options.local_blocks); b < num_blocks; ++b) {
    take(b, kPinned);
  }
  if (importance == nullptr || chosen >= options.hot_blocks) return p;

  auto score = [&](int64_t b) {
    const float s = importance[b];
    return std::isnan(s) ? -std::numeric_limits<float>::infinity() : s;
  };
  std::vector<int64_t> rest;
  rest.reserve(num_blocks);
  for (int64_t b = 0; b < num_blocks; ++b) {
    if (!p.hot[b]) rest.push_back(b);
  }
  const int64_t want = std::min<int64_t>(options.hot_blocks - chosen, rest.size());
  std::partial_sort(rest.begin(), rest.begin() + want, rest.end(), [&](int64_t a, int64_t b) {
    const float sa = score(a), sb = score(b);
    return sa != sb ? sa > sb : a < b;
  });
  for (int64_t i = 0; i < want; ++i) take(rest[i], score(rest[i]));
  return p;
}

}  // namespace sparsefill::kvstore
