// KvStore under injected faults: corrupt host memory, corrupt RocksDB values, host tiers that
// fail or fill up unannounced, and concurrent writers competing for a small host budget.
#include <fstream>
#include <filesystem>
#include <thread>

#include "services/kvstore/rocksdb/rocksdb_tier.h"
#include "sparsefill/kvstore/fault_tier.h"
#include "tests/unit/kvstore/store_test_util.h"

namespace sparsefill::kvstore {
namespace {

using testing::MakeCache;
using testing::ReadsBackExactly;
using testing::TempDir;
using testing::TestOptions;
using testing::WriteCache;

constexpr size_t kHost = size_t(Tier::kHost);
constexpr size_t kDisk = size_t(Tier::kDisk);

CacheLayout SmallLayout(DType dt = DType::kBF16) {
  return CacheLayout{.dtype = dt,
                     .num_layers = 2,
                     .kv_heads = 2,
                     .head_dim = 32,
                     .block_size = 16,
                     .num_tokens = 160};
}

struct Fixture {
  Fixture() : seed(sparsefill::testing::FreshSeed()), rng(seed) {}
  std::unique_ptr<KvStore> Open(std::shared_ptr<BlockTier> host, uint64_t budget = 64 << 20) {
    KvStoreOptions o = TestOptions(dir.path, &clock);
    o.host_tier = std::move(host);
    o.host_budget_bytes = budget;
    auto s = KvStore::Open(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  int64_t HotBlocks(KvStore& store, const CacheId& id, Tier t) {
    absl::StatusOr<Manifest> m = store.GetManifest(id);
    EXPECT_TRUE(m.ok()) << m.status();
    int64_t n = 0;
    if (m.ok()) {
      for (const BlockMeta& b : m->blocks) n += b.tier == t;
    }
    return n;
  }
  uint64_t seed;
  Rng rng;
  FakeClock clock;
  TempDir dir{"kv-faults"};
};

TEST(KvStoreFaults, CorruptHostMemoryIsDetectedDroppedAndServedFromDisk) {
  Fixture f;
  SCOPED_TRACE(::testing::Message() << "seed " << f.seed);
  auto host = std::make_shared<FaultInjectingTier>(NewHostTier(0));
  auto store = f.Open(host);
  ASSERT_NE(store, nullptr);
  const testing::TestCache c = MakeCache(f.rng, SmallLayout());
  host->CorruptOnPut([](const BlockKey& k) { return k.layer == 1; });  // at rest, layer 1 only
  ASSERT_TRUE(WriteCache(*store, c).ok());
  const int64_t hot = f.HotBlocks(*store, c.id, Tier::kHost);
  ASSERT_EQ(hot, 2 * 2 * 5);
  // Every read is bit-exact: corrupt host copies are never served.
  EXPECT_TRUE(ReadsBackExactly(*store, c));
  KvStoreStats st = store->Stats();
  EXPECT_EQ(st.tiers[kHost].checksum_failures, hot / 2);  // layer 1's hot copies
  EXPECT_EQ(st.tiers[kHost].reads, hot / 2);              // layer 0's served from memory
  EXPECT_EQ(st.tiers[kHost].blocks, hot / 2);             // the bad ones were dropped
  EXPECT_EQ(host->used_blocks(), hot / 2);
  EXPECT_EQ(f.HotBlocks(*store, c.id, Tier::kHost), hot / 2);
  // A second pass reads the dropped blocks from disk directly: no new failures.
  EXPECT_TRUE(ReadsBackExactly(*store, c));
  EXPECT_EQ(store->Stats().tiers[kHost].checksum_failures, hot / 2);

  // Corruption in flight (a bad read of an intact copy) is caught the same way.
  host->CorruptOnRead([](const BlockKey& k) { return k.layer == 0 && k.block == 0; });
  EXPECT_TRUE(ReadsBackExactly(*store, c));
  EXPECT_EQ(store->Stats().tiers[kHost].checksum_failures, hot / 2 + 2);  // block 0 of 2 heads
}

// Bytes flipped in the blob files on disk (RocksDB's own checksums are off by default): every
// read either returns the exact bytes or DataLoss naming the block; nothing corrupt is served.
TEST(KvStoreFaults, CorruptBlobFileIsDataLossThroughTheStore) {
  Fixture f;
  SCOPED_TRACE(::testing::Message() << "seed " << f.seed);
  const testing::TestCache c = MakeCache(f.rng, SmallLayout(DType::kBF16));
  {
    auto store = f.Open(nullptr);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(WriteCache(*store, c).ok());  // Commit flushes the blocks into blob files
  }
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(f.dir.path)) {
    if (e.path().extension() != ".blob") continue;
    ++files;
    std::fstream io(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    const auto size = std::filesystem::file_size(e.path());
    for (uint64_t off = 1000; off + 64 < size; off += 700) {
      io.seekg(static_cast<std::streamoff>(off));
      char ch = 0;
      io.read(&ch, 1);
      ch ^= 0x21;
      io.seekp(static_cast<std::streamoff>(off));
      io.write(&ch, 1);
    }
  }
  ASSERT_GT(files, 0) << "no blob file was written";
  auto store = f.Open(nullptr);  // hot copies do not survive a restart: reads go to disk
  ASSERT_NE(store, nullptr);
  const CacheLayout& l = c.spec.layout;
  int64_t data_loss = 0;
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    for (int32_t head = 0; head < l.kv_heads; ++head) {
      for (int64_t b = 0; b < l.num_blocks(); ++b) {
        const BlockKey key{.cache = c.id, .layer = layer, .head = head, .block = b};
        std::vector<uint8_t> out(l.BlockBytes(b));
        absl::Status s = store->ReadBlock(key, out);
        if (s.ok()) {
          EXPECT_EQ(out, testing::ExpectedBlock(l, c.k[layer], c.v[layer], head, b)) << key.ToString();
        } else {
          EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
          EXPECT_NE(s.message().find(key.ToString()), std::string::npos) << s;
          ++data_loss;
        }
      }
    }
  }
  EXPECT_GT(data_loss, 0);
  EXPECT_EQ(store->Stats().tiers[kDisk].checksum_failures, data_loss);
}

TEST(KvStoreFaults, CorruptRocksDbValueIsDataLossNamingTheBlock) {
  Fixture f;
  SCOPED_TRACE(::testing::Message() << "seed " << f.seed);
  const testing::TestCache c = MakeCache(f.rng, SmallLayout(DType::kF16));
  {
    auto store = f.Open(nullptr);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(WriteCache(*store, c).ok());
  }
  // Rewrite one value under its key through a raw handle: same size, one bit different.
  const BlockKey bad{.cache = c.id, .layer = 1, .head = 0, .block = 4};
  {
    auto raw = RocksDbTier::Open(f.dir.path, TestOptions(f.dir.path, &f.clock).rocksdb);
    ASSERT_TRUE(raw.ok()) << raw.status();
    std::vector<uint8_t> block(c.spec.layout.BlockBytes(bad.block));
    ASSERT_TRUE((*raw)->Get(bad, block).ok());
    block[block.size() - 3] ^= 0x40;
    const BlockWrite w{.key = bad, .data = block};
    ASSERT_TRUE((*raw)->PutBlocks({&w, 1}, true).ok());
  }
  auto store = f.Open(nullptr);
  ASSERT_NE(store, nullptr);
  std::vector<uint8_t> out(c.spec.layout.BlockBytes(bad.block), 0x77);
  for (int attempt = 0; attempt < 2; ++attempt) {  // never served, however often asked
    absl::Status s = store->ReadBlock(bad, out);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(s.message().find(bad.ToString()), std::string::npos) << s;
    EXPECT_NE(s.message().find("xxh64"), std::string::npos) << s;
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t x) { return x == 0; }))
        << "unverified bytes left in the caller's buffer";
  }
  EXPECT_EQ(store->Stats().tiers[kDisk].checksum_failures, 2);
  // Every other block is intact.
  const CacheLayout& l = c.spec.layout;
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    for (int32_t h = 0; h < l.kv_heads; ++h) {
      for (int64_t b = 0; b < l.num_blocks(); ++b) {
        const BlockKey k{.cache = c.id, .layer = layer, .head = h, .block = b};
        if (k == bad) continue;
        std::vector<uint8_t> got(l.BlockBytes(b));
        ASSERT_TRUE(store->ReadBlock(k, got).ok()) << k.ToString();
        ASSERT_EQ(got, testing::ExpectedBlock(l, c.k[layer], c.v[layer], h, b));
      }
    }
  }
}

// The host tier fills up without advertising a budget: the store evicts older hot copies
// (oldest cache, lowest importance first), counts evictions and keeps every READY cache whole.
TEST(KvStoreFaults, UnannouncedHostBudgetDemotesOldestLowestImportanceFirst) {
  Fixture f;
  SCOPED_TRACE(::testing::Message() << "seed " << f.seed);
  auto host = std::make_shared<FaultInjectingTier>(NewHostTier(0));
  const uint64_t block_bytes = SmallLayout().BlockBytes(0);
  const uint64_t budget = 30 * block_bytes;  // each cache wants 20 hot blocks
  host->FailPutsOverBudget(budget);
  auto store = f.Open(host);
  ASSERT_NE(store, nullptr);
  std::vector<testing::TestCache> caches;
  for (int i = 0; i < 4; ++i) {
    caches.push_back(MakeCache(f.rng, SmallLayout()));
    ASSERT_TRUE(WriteCache(*store, caches.back()).ok());
    ASSERT_LE(host->used_bytes(), budget);
    f.clock.Advance(10);
  }
  const KvStoreStats st = store->Stats();
  EXPECT_GT(st.tiers[kHost].evictions, 0);
  EXPECT_GT(host->injected_faults(), 0);  // the store really hit the hidden budget
  EXPECT_EQ(st.tiers[kHost].bytes, host->used_bytes());
  // The newest cache keeps all its hot copies; the oldest lost the most.
  EXPECT_EQ(f.HotBlocks(*store, caches[3].id, Tier::kHost), 20);
  EXPECT_LT(f.HotBlocks(*store, caches[0].id, Tier::kHost),
            f.HotBlocks(*store, caches[2].id, Tier::kHost));
  // Within a cache the importance-chosen copies go before the init/local ones.
  for (const auto& c : caches) {
    const Manifest m = *store->GetManifest(c.id);
    const CacheLayout& l = m.layout;
    bool pinned_evicted = false, chosen_resident = false;
    for (int32_t layer = 0; layer < l.num_layers; ++layer) {
      for (int32_t h = 0; h < l.kv_heads; ++h) {
        for (int64_t b = 0; b < l.num_blocks(); ++b) {
          const BlockMeta& meta = m.blocks[l.Index(layer, h, b)];
          if (!meta.hot) continue;
          const bool pinned = b == 0 || b >= l.num_blocks() - 2;
          if (pinned && meta.tier == Tier::kDisk) pinned_evicted = true;
          if (!pinned && meta.tier == Tier::kHost) chosen_resident = true;
        }
      }
    }
    EXPECT_FALSE(pinned_evicted && chosen_resident) << c.id.ToHex();
  }
  for (const auto& c : caches) EXPECT_TRUE(ReadsBackExactly(*store, c));
}

TEST(KvStoreFaults, FailingHostTierNeverFailsTheCache) {
  Fixture f;
  SCOPED_TRACE(::testing::Message() << "seed " << f.seed);
  auto host = std::make_shared<FaultInjectingTier>(NewHostTier(0));
  auto store = f.Open(host);
  ASSERT_NE(store, nullptr);
  const testing::TestCache c = MakeCache(f.rng, SmallLayout(DType::kF32));
  host->FailNthPut(1);  // the first layer shard's hot copies are refused
  ASSERT_TRUE(WriteCache(*store, c).ok());
  EXPECT_GT(store->Stats().tiers[kHost].blocks, 0);  // later shards were placed
  host->FailGets([](const BlockKey& k) { return k.head == 1; });
  EXPECT_TRUE(ReadsBackExactly(*store, c));
  const KvStoreStats st = store->Stats();
  EXPECT_EQ(st.tiers[kHost].checksum_failures, 0);  // unavailable is not corruption
  EXPECT_GT(st.tiers[kDisk].reads, 0);
}

TEST(KvStoreFaults, ConcurrentWritersAndReadersShareATightBudget) {
  Fixture f;
  SCOPED_TRACE(::testing::Message() << "seed " << f.seed);
  auto store = f.Open(nullptr, /*budget=*/25 * SmallLayout().BlockBytes(0));
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 4, kPerThread = 3;
  std::vector<std::vector<testing::TestCache>> caches(kThreads);
  for (auto& v : caches) {
    for (int i = 0; i < kPerThread; ++i) v.push_back(MakeCache(f.rng, SmallLayout()));
  }
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (const auto& c : caches[t]) {
        absl::Status s = WriteCache(*store, c);
        if (!s.ok()) errors[t] += s.ToString();
        ::testing::AssertionResult r = ReadsBackExactly(*store, c);
        if (!r) errors[t] += r.message();
      }
      if (absl::Status s = store->DeleteCache(caches[t][0].id); !s.ok()) errors[t] += s.ToString();
    });
  }
  for (auto& th : threads) th.join();
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  const KvStoreStats st = store->Stats();
  EXPECT_EQ(st.ready_caches, kThreads * (kPerThread - 1));
  EXPECT_LE(st.tiers[kHost].bytes, 25 * SmallLayout().BlockBytes(0));
  EXPECT_GT(st.tiers[kHost].evictions, 0);
  for (const auto& v : caches) {
    for (int i = 1; i < kPerThread; ++i) EXPECT_TRUE(ReadsBackExactly(*store, v[i]));
  }
}

}  // namespace
}  // namespace sparsefill::kvstore
