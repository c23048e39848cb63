// A PENDING cache's layer may be written again (a retried layer). Readers racing with the rewrite
// must get either version intact, never a false DataLoss: the new bytes land on disk before the
// manifest's checksum changes, so a reader can briefly pair new bytes with the old checksum.
#include <atomic>
#include <thread>

#include "tests/unit/kvstore/store_test_util.h"

namespace sparsefill::kvstore {
namespace {

using testing::MakeCache;
using testing::TempDir;
using testing::TestOptions;
using testing::WriteLayerShards;

TEST(KvStoreRewriteTest, ReadersRacingARewriteOfAPendingLayerNeverSeeFalseDataLoss) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  FakeClock clock;
  TempDir dir("kv-rewrite");
  KvStoreOptions o = TestOptions(dir.path, &clock);
  o.placement.hot_blocks = 0;  // every read goes to RocksDB, where the race is
  auto store_or = KvStore::Open(o);
  ASSERT_TRUE(store_or.ok()) << store_or.status();
  KvStore& store = **store_or;
  const CacheLayout l{.dtype = DType::kBF16,
                      .num_layers = 1,
                      .kv_heads = 2,
                      .head_dim = 64,
                      .block_size = 16,
                      .num_tokens = 256};
  // Two versions of the same cache's only layer.
  testing::TestCache a = MakeCache(rng, l);
  testing::TestCache b = MakeCache(rng, l);
  b.id = a.id;
  ASSERT_TRUE(store.BeginCache(a.id, a.spec).ok());
  ASSERT_TRUE(WriteLayerShards(store, a, 0, 1).ok());

  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0};
  absl::Status reader_failure;
  std::thread reader([&] {
    std::vector<uint8_t> got(l.BlockBytes(0));
    while (!stop.load()) {
      for (int32_t h = 0; h < l.kv_heads && !stop.load(); ++h) {
        for (int64_t blk = 0; blk < l.num_blocks(); ++blk) {
          const BlockKey key{.cache = a.id, .layer = 0, .head = h, .block = blk};
          absl::Status s = store.ReadBlock(key, got);
          reads.fetch_add(1);
          if (!s.ok()) {
            reader_failure = s;
            stop.store(true);
            return;
          }
          if (got != testing::ExpectedBlock(l, a.k[0], a.v[0], h, blk) &&
              got != testing::ExpectedBlock(l, b.k[0], b.v[0], h, blk)) {
            reader_failure = absl::DataLossError(key.ToString() + " is neither version");
            stop.store(true);
            return;
          }
        }
      }
    }
  });
  for (int i = 0; i < 300 && !stop.load(); ++i) {
    ASSERT_TRUE(WriteLayerShards(store, i % 2 == 0 ? b : a, 0, 1).ok());
  }
  stop.store(true);
  reader.join();
  EXPECT_TRUE(reader_failure.ok()) << reader_failure << " after " << reads.load() << " reads";
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(store.Stats().tiers[size_t(Tier::kDisk)].checksum_failures, 0);
  // Real corruption is still caught: the last version written is what a READY cache serves.
  ASSERT_TRUE(store.Commit(a.id).ok());
  EXPECT_TRUE(testing::ReadsBackExactly(store, a) || testing::ReadsBackExactly(store, b));
}

}  // namespace
}  // namespace sparsefill::kvstore
