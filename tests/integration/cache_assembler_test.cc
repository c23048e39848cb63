// decode-sink's CacheAssembler on its own (label unit): chunks in any order and any run length
// reassemble to the per-layer [tokens, kv_heads, head_dim] cache in fp32, and every kind of bad
// chunk is DATA_LOSS naming the block.
#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sparsefill/common/dtype.h"
#include "tests/testing/compare.h"
#include "tools/decode-sink/cache_assembler.h"

namespace sparsefill::tools {
namespace {

using ::testing::HasSubstr;

struct Source {
  kvstore::CacheLayout layout;
  kvstore::CacheId id{0x1234, 0x5678};
  // Per layer, [tokens, kv_heads, head_dim], already rounded to the layout's dtype.
  std::vector<std::vector<float>> k, v;
};

Source MakeSource(DType dtype, int64_t tokens, std::mt19937_64& gen) {
  Source s;
  s.layout = {.dtype = dtype,
              .num_layers = 3,
              .kv_heads = 2,
              .head_dim = 8,
              .block_size = 16,
              .num_tokens = tokens};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t n = static_cast<size_t>(tokens) * 2 * 8;
  std::vector<uint16_t> half(n);
  for (int l = 0; l < 3; ++l) {
    for (auto* dst : {&s.k, &s.v}) {
      std::vector<float> x(n);
      for (float& f : x) f = normal(gen);
      if (dtype != DType::kF32) {
        ConvertFromF32(x.data(), dtype, half.data(), n);
        ConvertToF32(half.data(), dtype, x.data(), n);
      }
      dst->push_back(std::move(x));
    }
  }
  return s;
}

// The wire form of blocks [first, first + count) of (layer, head).
client::KvChunk Pack(const Source& s, int32_t layer, int32_t head, int64_t first, int32_t count,
                     std::string& storage) {
  const kvstore::CacheLayout& l = s.layout;
  storage.clear();
  client::KvChunk c;
  c.cache = s.id;
  c.layer = layer;
  c.kv_head = head;
  c.first_block = first;
  c.num_blocks = count;
  for (int64_t b = first; b < first + count; ++b) {
    std::vector<float> rows;
    for (const auto* src : {&s.k, &s.v}) {
      for (int64_t t = b * l.block_size; t < b * l.block_size + l.BlockTokens(b); ++t) {
        const float* row = (*src)[static_cast<size_t>(layer)].data() +
                           (static_cast<size_t>(t) * l.kv_heads + head) * l.head_dim;
        rows.insert(rows.end(), row, row + l.head_dim);
      }
    }
    std::string block(rows.size() * DTypeSize(l.dtype), '\0');
    ConvertFromF32(rows.data(), l.dtype, block.data(), rows.size());
    c.xxh64.push_back(kvstore::BlockChecksum(block.data(), block.size()));
    storage += block;
  }
  c.data = storage;
  return c;
}

class CacheAssemblerTest : public ::testing::TestWithParam<DType> {};

TEST_P(CacheAssemblerTest, ReassemblesChunksInAnyOrder) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 gen(seed);
  const int64_t tokens = 40 + static_cast<int64_t>(gen() % 100);  // a partial last block
  const Source s = MakeSource(GetParam(), tokens, gen);
  const kvstore::CacheLayout& l = s.layout;
  struct Run {
    int32_t layer, head;
    int64_t first;
    int32_t count;
  };
  std::vector<Run> runs;
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    for (int32_t h = 0; h < l.kv_heads; ++h) {
      for (int64_t b = 0; b < l.num_blocks();) {
        const int32_t count =
            static_cast<int32_t>(std::min<int64_t>(1 + gen() % 3, l.num_blocks() - b));
        runs.push_back({layer, h, b, count});
        b += count;
      }
    }
  }
  std::shuffle(runs.begin(), runs.end(), gen);
  auto a = CacheAssembler::Create(s.id, l);
  ASSERT_TRUE(a.ok()) << a.status();
  std::string storage;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (i + 1 == runs.size()) {
      EXPECT_FALSE(a->CheckComplete().ok()) << "a run is still missing";
    }
    const Run& r = runs[i];
    ASSERT_TRUE(a->Add(Pack(s, r.layer, r.head, r.first, r.count, storage)).ok());
  }
  ASSERT_TRUE(a->CheckComplete().ok());
  EXPECT_EQ(a->stats().checksums_verified, l.total_blocks());
  EXPECT_EQ(a->stats().checksum_failures, 0);
  EXPECT_EQ(a->stats().bytes, l.total_bytes());
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    EXPECT_EQ(a->cache()[static_cast<size_t>(layer)].k, s.k[static_cast<size_t>(layer)]);
    EXPECT_EQ(a->cache()[static_cast<size_t>(layer)].v, s.v[static_cast<size_t>(layer)]);
  }
}

TEST_P(CacheAssemblerTest, BadChunksAreDataLossNamingTheBlock) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 gen(seed);
  const Source s = MakeSource(GetParam(), 64, gen);
  std::string storage;
  auto fresh = [&] { return *CacheAssembler::Create(s.id, s.layout); };

  {  // one flipped bit
    CacheAssembler a = fresh();
    client::KvChunk c = Pack(s, 1, 1, 2, 2, storage);
    std::string corrupt(c.data);
    corrupt[corrupt.size() - 3] ^= 0x10;
    c.data = corrupt;
    const absl::Status st = a.Add(c);
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(st.message()), HasSubstr("layer 1 head 1 block 3"));
    EXPECT_EQ(a.stats().checksum_failures, 1);
  }
  {  // the same block twice
    CacheAssembler a = fresh();
    ASSERT_TRUE(a.Add(Pack(s, 0, 0, 0, 2, storage)).ok());
    const absl::Status st = a.Add(Pack(s, 0, 0, 1, 1, storage));
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(st.message()), HasSubstr("twice"));
  }
  {  // a block that never comes
    CacheAssembler a = fresh();
    for (int32_t layer = 0; layer < 3; ++layer) {
      for (int32_t h = 0; h < 2; ++h) {
        if (layer == 2 && h == 1) {
          ASSERT_TRUE(a.Add(Pack(s, layer, h, 0, 2, storage)).ok());
          ASSERT_TRUE(a.Add(Pack(s, layer, h, 3, 1, storage)).ok());
        } else {
          ASSERT_TRUE(a.Add(Pack(s, layer, h, 0, 4, storage)).ok());
        }
      }
    }
    const absl::Status st = a.CheckComplete();
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(st.message()), HasSubstr("layer 2 head 1 block 2"));
  }
  {  // outside the layout, a short payload, a foreign cache, a missing checksum
    CacheAssembler a = fresh();
    client::KvChunk c = Pack(s, 0, 0, 3, 1, storage);
    c.first_block = 4;
    EXPECT_EQ(a.Add(c).code(), absl::StatusCode::kDataLoss);
    c = Pack(s, 0, 0, 0, 1, storage);
    c.layer = 3;
    EXPECT_EQ(a.Add(c).code(), absl::StatusCode::kDataLoss);
    c = Pack(s, 0, 0, 0, 2, storage);
    c.data = c.data.substr(0, c.data.size() - 2);
    EXPECT_EQ(a.Add(c).code(), absl::StatusCode::kDataLoss);
    c = Pack(s, 0, 0, 0, 1, storage);
    c.cache = kvstore::CacheId{1, 2};
    EXPECT_EQ(a.Add(c).code(), absl::StatusCode::kDataLoss);
    c = Pack(s, 0, 0, 0, 2, storage);
    c.xxh64.pop_back();
    EXPECT_EQ(a.Add(c).code(), absl::StatusCode::kDataLoss);
    // Found by tests/fuzz/kv_chunk_fuzzer: first_block + num_blocks overflowed int64 and the
    // wrapped sum let the chunk past the range check; with no data and empty-block checksums it
    // then passed the size check too and marked blocks far outside the layout as received.
    c = Pack(s, 0, 0, 0, 1, storage);
    c.first_block = std::numeric_limits<int64_t>::max() - 1;
    c.num_blocks = 3;
    c.data = {};
    c.xxh64.assign(3, kvstore::BlockChecksum(nullptr, 0));
    EXPECT_EQ(a.Add(c).code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(a.stats().blocks, 0) << "a refused chunk must not count";
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CacheAssemblerTest,
                         ::testing::Values(DType::kBF16, DType::kF16, DType::kF32),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(DTypeName(i.param));
                         });

}  // namespace
}  // namespace sparsefill::tools
