#include <set>

#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kvstore/kv_store.h"
#include "tests/testing/compare.h"

namespace sparsefill::kvstore {
namespace {

TEST(CacheId, HexRoundTripAndRejectsMalformed) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  for (int i = 0; i < 100; ++i) {
    const CacheId id{rng.NextU64(), rng.NextU64()};
    const std::string hex = id.ToHex();
    ASSERT_EQ(hex.size(), 32u);
    absl::StatusOr<CacheId> back = CacheId::FromHex(hex);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, id);
  }
  EXPECT_EQ(CacheId({0x0123456789abcdefull, 0xfedcba9876543210ull}).ToHex(),
            "0123456789abcdeffedcba9876543210");
  absl::StatusOr<CacheId> upper = CacheId::FromHex("0123456789ABCDEFFEDCBA9876543210");
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ(upper->hi, 0x0123456789abcdefull);

  absl::StatusOr<CacheId> short_id = CacheId::FromHex("abc");
  EXPECT_EQ(short_id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(short_id.status().message().find("32 hex digits"), std::string::npos);
  absl::StatusOr<CacheId> bad = CacheId::FromHex("0123456789abcdeffedcba987654321g");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("non-hex character at 31"), std::string::npos);
}

TEST(CacheId, RandomIdsDiffer) {
  std::set<CacheId> ids;
  for (int i = 0; i < 1000; ++i) ids.insert(CacheId::Random());
  EXPECT_EQ(ids.size(), 1000u);
}

TEST(CacheLayout, SizesAndValidation) {
  CacheLayout l{.dtype = DType::kBF16,
                .num_layers = 2,
                .kv_heads = 3,
                .head_dim = 64,
                .block_size = 32,
                .num_tokens = 100};
  ASSERT_TRUE(l.Validate().ok());
  EXPECT_EQ(l.num_blocks(), 4);
  EXPECT_EQ(l.BlockTokens(0), 32);
  EXPECT_EQ(l.BlockTokens(3), 4);  // the partial last block
  EXPECT_EQ(l.BlockBytes(0), 32u * 64 * 2 * 2);
  EXPECT_EQ(l.BlockBytes(3), 4u * 64 * 2 * 2);
  EXPECT_EQ(l.total_blocks(), 2 * 3 * 4);
  EXPECT_EQ(l.total_bytes(), 2ull * 3 * 100 * 64 * 2 * 2);
  EXPECT_EQ(l.Index(1, 2, 3), l.total_blocks() - 1);
  uint64_t sum = 0;
  for (int64_t b = 0; b < l.num_blocks(); ++b) sum += l.BlockBytes(b) * l.num_layers * l.kv_heads;
  EXPECT_EQ(sum, l.total_bytes());

  auto expect_bad = [](CacheLayout bad, const char* field) {
    absl::Status s = bad.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(s.message().find(field), std::string::npos) << s;
  };
  CacheLayout bad = l;
  bad.num_layers = 0;
  expect_bad(bad, "num_layers");
  bad = l;
  bad.kv_heads = -1;
  expect_bad(bad, "kv_heads");
  bad = l;
  bad.head_dim = 0;
  expect_bad(bad, "head_dim");
  bad = l;
  bad.block_size = 0;
  expect_bad(bad, "block_size");
  bad = l;
  bad.num_tokens = 0;
  expect_bad(bad, "num_tokens");
  bad = l;
  bad.dtype = static_cast<DType>(9);
  expect_bad(bad, "dtype");
  bad = l;
  bad.num_layers = 1 << 20;
  bad.kv_heads = 1 << 10;
  bad.num_tokens = int64_t{1} << 30;
  expect_bad(bad, "blocks");
}

TEST(BlockKey, ToStringNamesEverything) {
  const BlockKey k{.cache = {1, 2}, .layer = 3, .head = 4, .block = 5};
  EXPECT_EQ(k.ToString(), "cache 00000000000000010000000000000002 layer 3 head 4 block 5");
  EXPECT_EQ(TierName(Tier::kDevice), "device");
  EXPECT_EQ(TierName(Tier::kHost), "host");
  EXPECT_EQ(TierName(Tier::kDisk), "disk");
}

TEST(BlockChecksum, IsXxh64Seed0) {
  // Reference values of XXH64 with seed 0 (from the xxHash specification's test vectors).
  EXPECT_EQ(BlockChecksum("", 0), 0xef46db3751d8e999ull);
  EXPECT_EQ(BlockChecksum("a", 1), 0xd24ec4f1a98c6e5bull);
}

Manifest RandomManifest(Rng& rng, CacheState state) {
  Manifest m;
  m.id = {rng.NextU64(), rng.NextU64()};
  m.model = "qwen3-" + std::to_string(rng.NextU64() % 1000);
  m.tenant = "tenant-" + std::to_string(rng.NextU64() % 1000);
  m.layout = {.dtype = static_cast<DType>(rng.NextU64() % 3),
              .num_layers = 1 + static_cast<int32_t>(rng.NextU64() % 4),
              .kv_heads = 1 + static_cast<int32_t>(rng.NextU64() % 4),
              .head_dim = 64,
              .block_size = 16,
              .num_tokens = 1 + static_cast<int64_t>(rng.NextU64() % 100)};
  m.state = state;
  m.created_unix_ms = static_cast<int64_t>(rng.NextU64() >> 20);
  m.expires_unix_ms = m.created_unix_ms + 1000;
  m.blocks.resize(m.layout.total_blocks());
  for (BlockMeta& b : m.blocks) {
    b.tier = static_cast<Tier>(rng.NextU64() % 3);
    b.hot = rng.NextU64() % 2;
    b.checksum = rng.NextU64();
  }
  m.layers_written.resize(m.layout.num_layers);
  for (uint8_t& w : m.layers_written) w = rng.NextU64() % 2;
  return m;
}

void ExpectSame(const Manifest& a, const Manifest& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.tenant, b.tenant);
  EXPECT_EQ(a.layout.dtype, b.layout.dtype);
  EXPECT_EQ(a.layout.num_layers, b.layout.num_layers);
  EXPECT_EQ(a.layout.kv_heads, b.layout.kv_heads);
  EXPECT_EQ(a.layout.head_dim, b.layout.head_dim);
  EXPECT_EQ(a.layout.block_size, b.layout.block_size);
  EXPECT_EQ(a.layout.num_tokens, b.layout.num_tokens);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.created_unix_ms, b.created_unix_ms);
  EXPECT_EQ(a.expires_unix_ms, b.expires_unix_ms);
  EXPECT_EQ(a.layers_written, b.layers_written);
  ASSERT_EQ(a.blocks.size(), b.blocks.size());
  for (size_t i = 0; i < a.blocks.size(); ++i) {
    EXPECT_EQ(a.blocks[i].tier, b.blocks[i].tier);
    EXPECT_EQ(a.blocks[i].hot, b.blocks[i].hot);
    EXPECT_EQ(a.blocks[i].checksum, b.blocks[i].checksum);
  }
}

TEST(Manifest, RoundTrip) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  for (CacheState state : {CacheState::kPending, CacheState::kReady}) {
    const Manifest m = RandomManifest(rng, state);
    absl::StatusOr<Manifest> back = Manifest::Parse(m.Serialize());
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSame(m, *back);
  }
  // A PENDING manifest may be header-only (what BeginCache persists).
  Manifest header = RandomManifest(rng, CacheState::kPending);
  header.blocks.clear();
  header.layers_written.clear();
  absl::StatusOr<Manifest> back = Manifest::Parse(header.Serialize());
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSame(header, *back);
  // ... a READY one may not.
  header.state = CacheState::kReady;
  EXPECT_EQ(Manifest::Parse(header.Serialize()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CacheStateName(CacheState::kReady), "READY");
  EXPECT_EQ(CacheStateName(CacheState::kPending), "PENDING");
}

TEST(Manifest, ParseRejectsEveryTruncationAndBitFlip) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const std::string bytes = RandomManifest(rng, CacheState::kReady).Serialize();
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::StatusOr<Manifest> m = Manifest::Parse(std::string_view(bytes).substr(0, n));
    ASSERT_FALSE(m.ok()) << "a " << n << "-byte prefix parsed";
    ASSERT_TRUE(absl::IsDataLoss(m.status()) || absl::IsInvalidArgument(m.status())) << m.status();
  }
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string garbled = bytes;
    garbled[i] ^= static_cast<char>(1u << (rng.NextU64() % 8));
    absl::StatusOr<Manifest> m = Manifest::Parse(garbled);
    ASSERT_FALSE(m.ok()) << "a flip at byte " << i << " parsed";
  }
  std::string extra = bytes + "x";
  EXPECT_FALSE(Manifest::Parse(extra).ok());
  EXPECT_FALSE(Manifest::Parse(std::string(200, '\0')).ok());
}

// A manifest whose checksum is right but whose content is inconsistent (a buggy or hostile
// writer) is rejected by the structural checks, naming the problem.
TEST(Manifest, ParseRejectsInconsistentContentWithAValidChecksum) {
  Rng rng(sparsefill::testing::FreshSeed());
  Manifest m = RandomManifest(rng, CacheState::kReady);
  auto reseal = [](std::string s) {
    const uint64_t sum = BlockChecksum(s.data(), s.size() - 8);
    std::memcpy(s.data() + s.size() - 8, &sum, 8);
    return s;
  };
  Manifest fewer = m;
  fewer.blocks.pop_back();
  absl::Status s = Manifest::Parse(fewer.Serialize()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("block entries"), std::string::npos) << s;

  Manifest bad_layout = m;
  bad_layout.layout.head_dim = 0;
  s = Manifest::Parse(bad_layout.Serialize()).status();
  EXPECT_NE(s.message().find("head_dim"), std::string::npos) << s;

  // Tier byte of the first block entry set to 7: the entries start right after the count.
  std::string bytes = m.Serialize();
  const size_t first_entry = bytes.size() - 8 - m.blocks.size() * 10;
  bytes[first_entry] = 7;
  s = Manifest::Parse(reseal(bytes)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("block entry 0"), std::string::npos) << s;

  // A string length far beyond the input must not allocate or read past the end.
  bytes = m.Serialize();
  const uint32_t huge = 0xfffffff0u;
  std::memcpy(bytes.data() + 8 + 4 + 16, &huge, 4);  // the model string's length
  s = Manifest::Parse(reseal(bytes)).status();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model"), std::string::npos) << s;
}

}  // namespace
}  // namespace sparsefill::kvstore
