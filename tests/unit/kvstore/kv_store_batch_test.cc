// KvStore::ReadBlocks: the batched read serves exactly what ReadBlock would, block for block:
// mixed tiers in one batch, any key order, a corrupt copy in the middle of a batch (DataLoss for
// that block only, counted, never served) and bad arguments.
#include <algorithm>
#include <numeric>

#include "services/kvstore/rocksdb/rocksdb_tier.h"
#include "sparsefill/kvstore/fault_tier.h"
#include "tests/unit/kvstore/store_test_util.h"

namespace sparsefill::kvstore {
namespace {

using testing::MakeCache;
using testing::TempDir;
using testing::TestOptions;
using testing::WriteCache;

constexpr size_t kHost = size_t(Tier::kHost);
constexpr size_t kDisk = size_t(Tier::kDisk);

CacheLayout SmallLayout() {
  return CacheLayout{.dtype = DType::kBF16,
                     .num_layers = 2,
                     .kv_heads = 2,
                     .head_dim = 32,
                     .block_size = 16,
                     .num_tokens = 150};  // last block partial
}

struct Fixture {
  Fixture() : seed(sparsefill::testing::FreshSeed()), rng(seed) {}
  std::unique_ptr<KvStore> Open(std::shared_ptr<BlockTier> host) {
    KvStoreOptions o = TestOptions(dir.path, &clock);
    o.host_tier = std::move(host);
    auto s = KvStore::Open(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  uint64_t seed;
  Rng rng;
  FakeClock clock;
  TempDir dir{"kv-batch"};
};

std::vector<BlockKey> AllKeys(const CacheId& id, const CacheLayout& l) {
  std::vector<BlockKey> keys;
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    for (int32_t h = 0; h < l.kv_heads; ++h) {
      for (int64_t b = 0; b < l.num_blocks(); ++b) {
        keys.push_back({.cache = id, .layer = layer, .head = h, .block = b});
      }
    }
  }
  return keys;
}

// Buffers for `keys`, pre-filled with a pattern no block has.
struct Buffers {
  Buffers(const CacheLayout& l, std::span<const BlockKey> keys) {
    for (const BlockKey& k : keys) data.emplace_back(l.BlockBytes(k.block), 0xCD);
    for (auto& d : data) outs.emplace_back(d);
  }
  std::vector<std::vector<uint8_t>> data;
  std::vector<std::span<uint8_t>> outs;
};

TEST(KvStoreBatch, MixedTiersAnyOrderReadBackExactlyAndAreCountedPerTier) {
  Fixture f;
  SCOPED_TRACE(::testing::Message() << "seed " << f.seed);
  auto host =
      std::make_shared<FaultInjectingTier>(std::shared_ptr<BlockTier>(NewHostTier(64 << 20)));
  auto store = f.Open(host);
  ASSERT_NE(store, nullptr);
  const testing::TestCache c = MakeCache(f.rng, SmallLayout());
  ASSERT_TRUE(WriteCache(*store, c).ok());
  const CacheLayout& l = c.spec.layout;
  absl::StatusOr<Manifest> m = store->GetManifest(c.id);
  ASSERT_TRUE(m.ok()) << m.status();

  std::vector<BlockKey> keys = AllKeys(c.id, l);
  keys.push_back(keys[f.rng.NextU64() % keys.size()]);  // a duplicate is read twice
  // Shuffled: the disk tier sorts for MultiGet; every result must still land in its own buffer.
  for (size_t i = keys.size() - 1; i > 0; --i) std::swap(keys[i], keys[f.rng.NextU64() % (i + 1)]);
  int64_t want_host = 0, want_disk = 0;
  for (const BlockKey& k : keys) {
    const Tier t = m->blocks[l.Index(k.layer, k.head, k.block)].tier;
    want_host += t == Tier::kHost;
    want_disk += t == Tier::kDisk;
  }
  ASSERT_GT(want_host, 0) << "placement kept nothing hot: the batch is not mixed";
  ASSERT_GT(want_disk, 0);

  Buffers buf(l, keys);
  std::vector<absl::Status> statuses(keys.size(), absl::UnknownError("untouched"));
  const KvStoreStats before = store->Stats();
  ASSERT_TRUE(store->ReadBlocks(keys, buf.outs, std::span<absl::Status>(statuses)).ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    const BlockKey& k = keys[i];
    ASSERT_TRUE(statuses[i].ok()) << k.ToString() << ": " << statuses[i];
    ASSERT_EQ(buf.data[i], testing::ExpectedBlock(l, c.k[k.layer], c.v[k.layer], k.head, k.block))
        << k.ToString();
  }
  const KvStoreStats after = store->Stats();
  EXPECT_EQ(after.tiers[kHost].reads - before.tiers[kHost].reads, want_host);
  EXPECT_EQ(after.tiers[kDisk].reads - before.tiers[kDisk].reads, want_disk);

  // A hot copy corrupted in flight inside a batch is caught, dropped and served from disk.
  BlockKey hot_key;
  for (const BlockKey& k : keys) {
    if (m->blocks[l.Index(k.layer, k.head, k.block)].tier == Tier::kHost) hot_key = k;
  }
  host->CorruptOnRead([&](const BlockKey& k) { return k == hot_key; });
  const std::vector<BlockKey> run = {keys[0], hot_key, keys[keys.size() - 1]};
  Buffers again(l, run);
  ASSERT_TRUE(store->ReadBlocks(run, again.outs).ok());
  for (size_t i = 0; i < run.size(); ++i) {
    const BlockKey& k = run[i];
    EXPECT_EQ(again.data[i], testing::ExpectedBlock(l, c.k[k.layer], c.v[k.layer], k.head, k.block))
        << k.ToString();
  }
  EXPECT_GE(store->Stats().tiers[kHost].checksum_failures, 1);
}

TEST(KvStoreBatch, CorruptValueMidBatchIsDataLossForThatBlockOnly) {
  Fixture f;
  SCOPED_TRACE(::testing::Message() << "seed " << f.seed);
  const testing::TestCache c = MakeCache(f.rng, SmallLayout());
  const CacheLayout& l = c.spec.layout;
  {
    auto store = f.Open(nullptr);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(WriteCache(*store, c).ok());
  }
  const int32_t layer = static_cast<int32_t>(f.rng.NextU64() % l.num_layers);
  const int32_t head = static_cast<int32_t>(f.rng.NextU64() % l.kv_heads);
  const int64_t bad_block = 1 + static_cast<int64_t>(f.rng.NextU64() % (l.num_blocks() - 2));
  const BlockKey bad{.cache = c.id, .layer = layer, .head = head, .block = bad_block};
  {
    auto raw = RocksDbTier::Open(f.dir.path, TestOptions(f.dir.path, &f.clock).rocksdb);
    ASSERT_TRUE(raw.ok()) << raw.status();
    std::vector<uint8_t> block(l.BlockBytes(bad.block));
    ASSERT_TRUE((*raw)->Get(bad, block).ok());
    block[f.rng.NextU64() % block.size()] ^= 0x10;
    const BlockWrite w{.key = bad, .data = block};
    ASSERT_TRUE((*raw)->PutBlocks({&w, 1}, true).ok());
  }
  auto store = f.Open(nullptr);  // reopened: every block is served from disk
  ASSERT_NE(store, nullptr);
  std::vector<BlockKey> keys;
  for (int64_t b = 0; b < l.num_blocks(); ++b) {
    keys.push_back({.cache = c.id, .layer = layer, .head = head, .block = b});
  }
  for (int attempt = 0; attempt < 2; ++attempt) {  // never served, however often asked
    Buffers buf(l, keys);
    std::vector<absl::Status> statuses(keys.size());
    const absl::Status s = store->ReadBlocks(keys, buf.outs, std::span<absl::Status>(statuses));
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    for (size_t i = 0; i < keys.size(); ++i) {
      const BlockKey& k = keys[i];
      if (k == bad) {
        EXPECT_EQ(statuses[i].code(), absl::StatusCode::kDataLoss) << statuses[i];
        EXPECT_NE(statuses[i].message().find(bad.ToString()), std::string::npos) << statuses[i];
        EXPECT_NE(statuses[i].message().find("xxh64"), std::string::npos) << statuses[i];
        EXPECT_TRUE(std::all_of(buf.data[i].begin(), buf.data[i].end(), [](uint8_t x) {
          return x == 0;
        })) << "unverified bytes left in the caller's buffer";
      } else {
        ASSERT_TRUE(statuses[i].ok()) << k.ToString() << ": " << statuses[i];
        ASSERT_EQ(buf.data[i],
                  testing::ExpectedBlock(l, c.k[k.layer], c.v[k.layer], k.head, k.block))
            << k.ToString();
      }
    }
  }
  const KvStoreStats st = store->Stats();
  EXPECT_EQ(st.tiers[kDisk].checksum_failures, 2);
  EXPECT_EQ(st.tiers[kDisk].reads, 2 * (l.num_blocks() - 1));
}

TEST(KvStoreBatch, BadArgumentsAndUnknownBlocksFailPerBlock) {
  Fixture f;
  SCOPED_TRACE(::testing::Message() << "seed " << f.seed);
  auto store = f.Open(nullptr);
  ASSERT_NE(store, nullptr);
  const testing::TestCache c = MakeCache(f.rng, SmallLayout());
  ASSERT_TRUE(WriteCache(*store, c).ok());
  const CacheLayout& l = c.spec.layout;

  EXPECT_TRUE(store->ReadBlocks({}, {}).ok());  // nothing asked, nothing read

  const std::vector<BlockKey> keys = {
      {.cache = c.id, .layer = 0, .head = 0, .block = 0},
      {.cache = c.id, .layer = 0, .head = 0, .block = l.num_blocks()},  // outside the layout
      {.cache = CacheId{c.id.hi + 1, c.id.lo}, .layer = 0, .head = 0, .block = 0},  // no cache
      {.cache = c.id, .layer = 1, .head = 1, .block = l.num_blocks() - 1},
      {.cache = c.id, .layer = 1, .head = 0, .block = 2}};  // given a wrong-size buffer below
  Buffers buf(l, keys);
  std::vector<uint8_t> small(l.BlockBytes(0) - 2);
  buf.outs[4] = small;
  std::vector<absl::Status> statuses(keys.size());
  const absl::Status s = store->ReadBlocks(keys, buf.outs, std::span<absl::Status>(statuses));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;  // the first failure in key order
  EXPECT_TRUE(statuses[0].ok()) << statuses[0];
  EXPECT_EQ(statuses[1].code(), absl::StatusCode::kNotFound) << statuses[1];
  EXPECT_NE(statuses[1].message().find("outside"), std::string::npos) << statuses[1];
  EXPECT_EQ(statuses[2].code(), absl::StatusCode::kNotFound) << statuses[2];
  EXPECT_TRUE(statuses[3].ok()) << statuses[3];
  EXPECT_EQ(statuses[4].code(), absl::StatusCode::kInvalidArgument) << statuses[4];
  EXPECT_EQ(buf.data[0], testing::ExpectedBlock(l, c.k[0], c.v[0], 0, 0));
  EXPECT_EQ(buf.data[3], testing::ExpectedBlock(l, c.k[1], c.v[1], 1, l.num_blocks() - 1));

  // Mismatched spans are rejected before anything is read.
  std::vector<absl::Status> short_statuses(2);
  const absl::Status mismatch =
      store->ReadBlocks(keys, buf.outs, std::span<absl::Status>(short_statuses));
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kInvalidArgument) << mismatch;
  EXPECT_EQ(store->ReadBlocks(keys, std::span<const std::span<uint8_t>>(buf.outs).first(3)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparsefill::kvstore
