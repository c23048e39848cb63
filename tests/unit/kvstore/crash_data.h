// Deterministic cache contents for the crash test: the writer process and the verifying test
// derive a cache's layout and every value from its id alone.
#pragma once

#include <cstdint>
#include <vector>

#include "sparsefill/kvstore/kv_store.h"

namespace sparsefill::kvstore::testing {

// Layout (1-3 layers, 1-2 heads, small head_dim and block size, 1-400 tokens, any dtype).
CacheSpec CrashSpec(const CacheId& id);
// One layer's K or V of the whole prompt: [num_tokens, kv_heads, head_dim].
std::vector<float> CrashValues(const CacheId& id, const CacheLayout& layout, int32_t layer, bool v);
// [kv_heads, num_blocks] query-agnostic importance.
std::vector<float> CrashImportance(const CacheId& id, const CacheLayout& layout, int32_t layer);
// The bytes block (layer, head, block) must hold: K rows then V rows in the layout dtype,
// converted from the two arrays above.
std::vector<uint8_t> ExpectedBlock(const CacheLayout& layout, const std::vector<float>& k,
                                   const std::vector<float>& v, int32_t head, int64_t block);

// Store options the writer and the test share (small memtables so flushes and blob files
// happen within a run).
KvStoreOptions CrashStoreOptions(const std::string& path);

}  // namespace sparsefill::kvstore::testing
