#include "tests/unit/kvstore/crash_data.h"

#include "sparsefill/common/rng.h"

namespace sparsefill::kvstore::testing {
namespace {

uint64_t Mix(const CacheId& id, uint64_t a, uint64_t b) {
  return SplitMix64(id.hi ^ SplitMix64(id.lo ^ SplitMix64(a * 0x100000001b3ull + b)));
}

}  // namespace

CacheSpec CrashSpec(const CacheId& id) {
  Rng rng(Mix(id, 0, 0));
  CacheSpec spec;
  spec.model = "crash-model";
  spec.tenant = "crash";
  spec.ttl_ms = 0;
  static constexpr DType kTypes[] = {DType::kF32, DType::kF16, DType::kBF16};
  spec.layout.dtype = kTypes[rng.NextU64() % 3];
  spec.layout.num_layers = 1 + static_cast<int32_t>(rng.NextU64() % 3);
  spec.layout.kv_heads = 1 + static_cast<int32_t>(rng.NextU64() % 2);
  spec.layout.head_dim = 8 << (rng.NextU64() % 3);
  spec.layout.block_size = 16 << (rng.NextU64() % 2);
  spec.layout.num_tokens = 1 + static_cast<int64_t>(rng.NextU64() % 400);
  return spec;
}

std::vector<float> CrashValues(const CacheId& id, const CacheLayout& layout, int32_t layer,
                               bool v) {
  Rng rng(Mix(id, 1 + static_cast<uint64_t>(layer), v ? 2 : 1));
  std::vector<float> out(static_cast<size_t>(layout.num_tokens) * layout.kv_heads *
                         layout.head_dim);
  for (float& x : out) x = rng.Normal();
  return out;
}

std::vector<float> CrashImportance(const CacheId& id, const CacheLayout& layout, int32_t layer) {
  Rng rng(Mix(id, 1 + static_cast<uint64_t>(layer), 3));
  std::vector<float> out(static_cast<size_t>(layout.kv_heads) * layout.num_blocks());
  for (float& x : out) x = rng.Uniform();
  return out;
}

std::vector<uint8_t> ExpectedBlock(const CacheLayout& layout, const std::vector<float>& k,
                                   const std::vector<float>& v, int32_t head, int64_t block) {
  const int64_t tokens = layout.BlockTokens(block);
  const size_t row = static_cast<size_t>(layout.head_dim) * DTypeSize(layout.dtype);
  std::vector<uint8_t> out(layout.BlockBytes(block));
  for (int kv = 0; kv < 2; ++kv) {
    const std::vector<float>& src = kv == 0 ? k : v;
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t token = block * layout.block_size + t;
      ConvertFromF32(src.data() + (token * layout.kv_heads + head) * layout.head_dim, layout.dtype,
                     out.data() + (kv * tokens + t) * row, layout.head_dim);
    }
  }
  return out;
}

KvStoreOptions CrashStoreOptions(const std::string& path) {
  KvStoreOptions o;
  o.path = path;
  o.host_budget_bytes = 256 << 10;
  o.placement = PlacementOptions{.init_blocks = 1, .local_blocks = 1, .hot_blocks = 3};
  o.default_ttl_ms = 0;
  o.rocksdb.min_blob_size = 256;
  o.rocksdb.write_buffer_size = 1 << 20;
  o.rocksdb.blob_file_size = 1 << 20;
  o.rocksdb.block_cache_bytes = 4 << 20;
  return o;
}

}  // namespace sparsefill::kvstore::testing
