// Helpers shared by the KvStore tests: random caches, writing them shard by shard, and checking
// every block bit-exact against an independent conversion of the same floats.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kvstore/kv_store.h"
#include "tests/testing/compare.h"
#include "tests/unit/kvstore/crash_data.h"

namespace sparsefill::kvstore::testing {

struct TestCache {
  CacheId id;
  CacheSpec spec;
  std::vector<std::vector<float>> k, v, importance;  // per layer; see LayerData
};

inline TestCache MakeCache(Rng& rng, const CacheLayout& layout, int64_t ttl_ms = -1) {
  TestCache c;
  c.id = CacheId{rng.NextU64(), rng.NextU64()};
  c.spec = CacheSpec{.model = "test-model", .tenant = "t", .layout = layout, .ttl_ms = ttl_ms};
  const size_t n = static_cast<size_t>(layout.num_tokens) * layout.kv_heads * layout.head_dim;
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    c.k.push_back(sparsefill::testing::RandomNormal(n, rng));
    c.v.push_back(sparsefill::testing::RandomNormal(n, rng));
    c.importance.push_back(sparsefill::testing::RandomUniform(
        static_cast<size_t>(layout.kv_heads) * layout.num_blocks(), rng, 0.0f, 1.0f));
  }
  return c;
}

// Writes one layer in `shards` block-aligned pieces.
inline absl::Status WriteLayerShards(KvStore& store, const TestCache& c, int32_t layer,
                                     int shards = 2) {
  const CacheLayout& l = c.spec.layout;
  const int64_t nb = l.num_blocks();
  const size_t row = static_cast<size_t>(l.kv_heads) * l.head_dim;
  for (int s = 0; s < shards; ++s) {
    const int64_t b0 = nb * s / shards, b1 = nb * (s + 1) / shards;
    if (b1 <= b0) continue;
    const int64_t t0 = b0 * l.block_size, t1 = std::min(b1 * l.block_size, l.num_tokens);
    LayerData d{.layer = layer,
                .token_begin = t0,
                .num_tokens = t1 - t0,
                .k = c.k[layer].data() + t0 * row,
                .v = c.v[layer].data() + t0 * row,
                .importance = c.importance[layer].data(),
                .importance_blocks = nb};
    if (absl::Status st = store.WriteLayer(c.id, d); !st.ok()) return st;
  }
  return absl::OkStatus();
}

inline absl::Status WriteCache(KvStore& store, const TestCache& c, bool commit = true,
                               int shards = 2) {
  if (absl::Status s = store.BeginCache(c.id, c.spec); !s.ok()) return s;
  for (int32_t layer = 0; layer < c.spec.layout.num_layers; ++layer) {
    if (absl::Status s = WriteLayerShards(store, c, layer, shards); !s.ok()) return s;
  }
  return commit ? store.Commit(c.id) : absl::OkStatus();
}

// Every block of the cache reads back with exactly the bytes an independent conversion gives.
inline ::testing::AssertionResult ReadsBackExactly(KvStore& store, const TestCache& c) {
  const CacheLayout& l = c.spec.layout;
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    for (int32_t h = 0; h < l.kv_heads; ++h) {
      for (int64_t b = 0; b < l.num_blocks(); ++b) {
        const BlockKey key{.cache = c.id, .layer = layer, .head = h, .block = b};
        std::vector<uint8_t> got(l.BlockBytes(b), 0xCD);
        if (absl::Status s = store.ReadBlock(key, got); !s.ok()) {
          return ::testing::AssertionFailure() << s;
        }
        if (got != ExpectedBlock(l, c.k[layer], c.v[layer], h, b)) {
          return ::testing::AssertionFailure() << key.ToString() << " differs";
        }
      }
    }
  }
  return ::testing::AssertionSuccess();
}

inline KvStoreOptions TestOptions(const std::string& path, Clock* clock) {
  KvStoreOptions o;
  o.path = path;
  o.clock = clock;
  o.host_budget_bytes = 64 << 20;
  o.placement = PlacementOptions{.init_blocks = 1, .local_blocks = 2, .hot_blocks = 5};
  o.rocksdb.min_blob_size = 1024;
  o.rocksdb.write_buffer_size = 4 << 20;
  o.rocksdb.blob_file_size = 4 << 20;
  o.rocksdb.block_cache_bytes = 4 << 20;
  return o;
}

// A temp directory removed at scope exit.
struct TempDir {
  explicit TempDir(const std::string& prefix) : path(sparsefill::testing::MakeTempDir(prefix)) {}
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

}  // namespace sparsefill::kvstore::testing
