// A strict order on BlockKey that keeps one cache's blocks contiguous (cache, layer, head,
// block), so a whole cache is one range: the in-memory twin of the RocksDB key layout.
#pragma once

#include <tuple>

#include "sparsefill/kvstore/layout.h"

namespace sparsefill::kvstore {

struct BlockKeyLess {
  bool operator()(const BlockKey& a, const BlockKey& b) const {
    return std::tie(a.cache, a.layer, a.head, a.block) <
           std::tie(b.cache, b.layer, b.head, b.block);
  }
};

}  // namespace sparsefill::kvstore
