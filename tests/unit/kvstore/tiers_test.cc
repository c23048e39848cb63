#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "services/kvstore/rocksdb/rocksdb_tier.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kvstore/fault_tier.h"
#include "sparsefill/kvstore/tier.h"
#include "tests/testing/compare.h"

namespace sparsefill::kvstore {
namespace {

std::vector<uint8_t> RandomBytes(Rng& rng, size_t n) {
  std::vector<uint8_t> b(n);
  for (uint8_t& x : b) x = static_cast<uint8_t>(rng.NextU64());
  return b;
}

struct Blocks {
  std::vector<std::vector<uint8_t>> data;
  std::vector<BlockWrite> writes;
};
// `n` blocks of cache `id`, layer `layer`, sizes drawn from [lo, hi).
Blocks MakeBlocks(Rng& rng, CacheId id, int32_t layer, int n, size_t lo, size_t hi) {
  Blocks b;
  b.data.reserve(n);
  for (int i = 0; i < n; ++i) {
    b.data.push_back(RandomBytes(rng, lo + rng.NextU64() % (hi - lo)));
    b.writes.push_back({.key = {.cache = id, .layer = layer, .head = i % 3, .block = i / 3},
                        .data = b.data.back()});
  }
  return b;
}

// Every block reads back bit-exact; a wrong-size buffer and a missing key are named errors.
void ExpectRoundTrip(BlockTier& tier, const Blocks& b) {
  for (const BlockWrite& w : b.writes) {
    std::vector<uint8_t> got(w.data.size(), 0xAA);
    ASSERT_TRUE(tier.Get(w.key, got).ok()) << w.key.ToString();
    ASSERT_TRUE(std::equal(got.begin(), got.end(), w.data.begin())) << w.key.ToString();
  }
  std::vector<uint8_t> wrong(b.writes[0].data.size() + 1);
  absl::Status s = tier.Get(b.writes[0].key, wrong);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  BlockKey missing = b.writes[0].key;
  missing.layer = 999;
  s = tier.Get(missing, wrong);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("layer 999"), std::string::npos) << s;
}

TEST(HostTier, RoundTripBudgetAndDelete) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  std::unique_ptr<BlockTier> host = NewHostTier(64 << 10);
  EXPECT_EQ(host->Capabilities().tier, Tier::kHost);
  EXPECT_EQ(host->Capabilities().budget_bytes, 64u << 10);
  const CacheId a{1, rng.NextU64()}, c{2, rng.NextU64()};
  Blocks ba = MakeBlocks(rng, a, 0, 12, 100, 2000);
  Blocks bc = MakeBlocks(rng, c, 5, 6, 100, 2000);
  ASSERT_TRUE(host->PutBlocks(ba.writes, false).ok());
  ASSERT_TRUE(host->PutBlocks(bc.writes, false).ok());
  ExpectRoundTrip(*host, ba);
  ExpectRoundTrip(*host, bc);
  uint64_t bytes = 0;
  for (const auto& d : ba.data) bytes += d.size();
  for (const auto& d : bc.data) bytes += d.size();
  EXPECT_EQ(host->used_bytes(), bytes);
  EXPECT_EQ(host->used_blocks(), 18);

  // Rewriting a block counts its bytes once.
  ASSERT_TRUE(host->PutBlocks({&ba.writes[0], 1}, false).ok());
  EXPECT_EQ(host->used_bytes(), bytes);

  // Over budget: ResourceExhausted and nothing stored.
  std::vector<uint8_t> big(60 << 10, 7);
  BlockWrite w{.key = {.cache = a, .layer = 9}, .data = big};
  absl::Status s = host->PutBlocks({&w, 1}, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("budget"), std::string::npos) << s;
  EXPECT_EQ(host->used_bytes(), bytes);

  ASSERT_TRUE(host->Erase(bc.writes[0].key).ok());
  EXPECT_EQ(host->Erase(bc.writes[0].key).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(host->DeleteCache(a).ok());
  EXPECT_EQ(host->used_blocks(), 5);
  std::vector<uint8_t> out(ba.writes[1].data.size());
  EXPECT_EQ(host->Get(ba.writes[1].key, out).code(), absl::StatusCode::kNotFound);
  std::vector<uint8_t> out_c(bc.writes[1].data.size());
  EXPECT_TRUE(host->Get(bc.writes[1].key, out_c).ok());
}

RocksDbOptions Verifying(RocksDbOptions o) {
  o.verify_rocksdb_checksums = true;
  return o;
}

RocksDbOptions SmallRocks() {
  RocksDbOptions o;
  o.min_blob_size = 512;
  o.write_buffer_size = 1 << 20;
  o.blob_file_size = 1 << 20;
  o.block_cache_bytes = 1 << 20;
  return o;
}

TEST(RocksDbTier, RoundTripPersistsAcrossReopen) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const std::string dir = sparsefill::testing::MakeTempDir("kv-rocks");
  const CacheId a{rng.NextU64(), rng.NextU64()}, c{rng.NextU64(), rng.NextU64()};
  // Sizes on both sides of min_blob_size: inline SST values and blob-file values.
  Blocks ba = MakeBlocks(rng, a, 0, 30, 16, 3000);
  Blocks bc = MakeBlocks(rng, c, 1, 30, 16, 3000);
  {
    auto t = RocksDbTier::Open(dir, SmallRocks());
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE((*t)->Capabilities().persistent);
    EXPECT_EQ((*t)->Capabilities().tier, Tier::kDisk);
    ASSERT_TRUE((*t)->PutBlocks(ba.writes, false).ok());
    ASSERT_TRUE((*t)->PutBlocks(bc.writes, true).ok());
    ASSERT_TRUE((*t)->PutManifest(a, "manifest-a", true).ok());
    ExpectRoundTrip(**t, ba);
  }
  auto t = RocksDbTier::Open(dir, SmallRocks());
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectRoundTrip(**t, ba);
  ExpectRoundTrip(**t, bc);
  auto ids = (*t)->ListBlockCaches();
  ASSERT_TRUE(ids.ok());
  std::vector<CacheId> want = {std::min(a, c), std::max(a, c)};
  EXPECT_EQ(*ids, want);
  EXPECT_EQ(*(*t)->CountBlocks(a), 30);
  auto manifests = (*t)->ListManifests();
  ASSERT_TRUE(manifests.ok());
  ASSERT_EQ(manifests->size(), 1u);
  EXPECT_EQ((*manifests)[0].first, a);
  EXPECT_EQ((*manifests)[0].second, "manifest-a");
  ASSERT_TRUE((*t)->Erase(ba.writes[0].key).ok());
  std::vector<uint8_t> out(ba.writes[0].data.size());
  EXPECT_EQ((*t)->Get(ba.writes[0].key, out).code(), absl::StatusCode::kNotFound);
  t->reset();
  std::filesystem::remove_all(dir);
}

TEST(RocksDbTier, DeleteCacheRemovesKeysManifestAndSpace) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const std::string dir = sparsefill::testing::MakeTempDir("kv-rocks-del");
  auto t = RocksDbTier::Open(dir, SmallRocks());
  ASSERT_TRUE(t.ok()) << t.status();
  const CacheId keep{5, 5}, drop{6, 6};
  Blocks bk = MakeBlocks(rng, keep, 0, 8, 1000, 2000);
  ASSERT_TRUE((*t)->PutBlocks(bk.writes, false).ok());
  const uint64_t baseline_keep = 8 * 2000;
  // ~6 MB over several batches: memtable flushes produce blob files.
  std::vector<Blocks> dropped;
  for (int layer = 0; layer < 6; ++layer) {
    dropped.push_back(MakeBlocks(rng, drop, layer, 64, 15000, 17000));
    ASSERT_TRUE((*t)->PutBlocks(dropped.back().writes, false).ok());
  }
  ASSERT_TRUE((*t)->PutManifest(drop, "m", true).ok());
  const uint64_t before = (*t)->used_bytes();
  EXPECT_GT(before, 5u << 20);
  ASSERT_TRUE((*t)->DeleteCache(drop).ok());
  EXPECT_EQ(*(*t)->CountBlocks(drop), 0);
  EXPECT_EQ(*(*t)->CountBlocks(keep), 8);
  EXPECT_TRUE((*t)->ListManifests()->empty());
  const uint64_t after = (*t)->used_bytes();
  EXPECT_LT(after, baseline_keep + (256u << 10)) << "before " << before << " after " << after;
  ExpectRoundTrip(**t, bk);
  t->reset();
  std::filesystem::remove_all(dir);
}

// Bytes flipped inside a blob file on disk are caught by RocksDB's blob record checksum and
// reported as DataLoss naming the block (the KV store adds its own xxh64 on top).
// With verify_rocksdb_checksums the tier itself catches a damaged blob file (the store's default
// leaves it to the per-block xxh64; KvStoreFaults.CorruptBlobFileIsDataLossThroughTheStore).
TEST(RocksDbTier, CorruptBlobFileIsDataLoss) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const std::string dir = sparsefill::testing::MakeTempDir("kv-rocks-corrupt");
  const CacheId a{7, rng.NextU64()};
  Blocks ba = MakeBlocks(rng, a, 0, 4, 8000, 8001);
  {
    auto t = RocksDbTier::Open(dir, Verifying(SmallRocks()));
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE((*t)->PutBlocks(ba.writes, true).ok());
    ASSERT_TRUE((*t)->Flush().ok());  // the values land in a blob file
  }
  std::string blob;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".blob") blob = e.path().string();
  }
  ASSERT_FALSE(blob.empty()) << "no blob file was written";
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    const auto size = std::filesystem::file_size(blob);
    // Flip one byte inside every value's payload region (the file is ~4 x 8000 bytes).
    for (uint64_t off = 2000; off + 100 < size; off += 4000) {
      f.seekg(off);
      char c = 0;
      f.read(&c, 1);
      c ^= 0x5a;
      f.seekp(off);
      f.write(&c, 1);
    }
  }
  auto t = RocksDbTier::Open(dir, Verifying(SmallRocks()));
  ASSERT_TRUE(t.ok()) << t.status();
  int data_loss = 0;
  for (const BlockWrite& w : ba.writes) {
    std::vector<uint8_t> out(w.data.size());
    absl::Status s = (*t)->Get(w.key, out);
    if (absl::IsDataLoss(s)) {
      ++data_loss;
      EXPECT_NE(s.message().find(w.key.ToString()), std::string::npos) << s;
    } else {
      // A flip outside this value (another record's bytes) leaves it intact; never wrong bytes.
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_TRUE(std::equal(out.begin(), out.end(), w.data.begin()))
          << "corrupt bytes served as OK for " << w.key.ToString();
    }
  }
  EXPECT_GT(data_loss, 0);
  t->reset();
  std::filesystem::remove_all(dir);
}

TEST(FaultInjectingTier, InjectsEachFaultKind) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  auto inner = std::shared_ptr<BlockTier>(NewHostTier(0));
  FaultInjectingTier fault(inner);
  EXPECT_EQ(fault.Capabilities().tier, Tier::kHost);
  const CacheId a{3, 3};
  Blocks b = MakeBlocks(rng, a, 0, 6, 100, 200);

  // The 2nd put from now fails and stores nothing; the 1st and 3rd succeed.
  fault.FailNthPut(2, absl::UnavailableError("boom"));
  ASSERT_TRUE(fault.PutBlocks({&b.writes[0], 1}, false).ok());
  absl::Status s = fault.PutBlocks({&b.writes[1], 1}, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(inner->used_blocks(), 1);
  ASSERT_TRUE(fault.PutBlocks({&b.writes[1], 1}, false).ok());

  // Unadvertised budget.
  fault.FailPutsOverBudget(inner->used_bytes() + b.writes[2].data.size());
  EXPECT_EQ(fault.Capabilities().budget_bytes, 0u);
  ASSERT_TRUE(fault.PutBlocks({&b.writes[2], 1}, false).ok());
  EXPECT_EQ(fault.PutBlocks({&b.writes[3], 1}, false).code(), absl::StatusCode::kResourceExhausted);
  fault.FailPutsOverBudget(0);

  // Corruption at rest: the stored copy differs from what was written, by one bit.
  fault.CorruptOnPut([&](const BlockKey& k) { return k == b.writes[3].key; });
  ASSERT_TRUE(fault.PutBlocks({&b.writes[3], 1}, false).ok());
  fault.CorruptOnPut(nullptr);
  std::vector<uint8_t> out(b.writes[3].data.size());
  ASSERT_TRUE(inner->Get(b.writes[3].key, out).ok());
  int diff_bits = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    diff_bits += __builtin_popcount(out[i] ^ b.writes[3].data[i]);
  }
  EXPECT_EQ(diff_bits, 1);

  // Corruption in flight: the read differs, the stored copy does not.
  fault.CorruptOnRead([&](const BlockKey& k) { return k == b.writes[0].key; });
  std::vector<uint8_t> r0(b.writes[0].data.size());
  ASSERT_TRUE(fault.Get(b.writes[0].key, r0).ok());
  EXPECT_FALSE(std::equal(r0.begin(), r0.end(), b.writes[0].data.begin()));
  ASSERT_TRUE(inner->Get(b.writes[0].key, r0).ok());
  EXPECT_TRUE(std::equal(r0.begin(), r0.end(), b.writes[0].data.begin()));
  fault.CorruptOnRead(nullptr);

  fault.FailGets([](const BlockKey&) { return true; });
  EXPECT_EQ(fault.Get(b.writes[0].key, r0).code(), absl::StatusCode::kUnavailable);
  fault.FailGets(nullptr);
  EXPECT_TRUE(fault.Get(b.writes[0].key, r0).ok());
  EXPECT_EQ(fault.injected_faults(), 5);
  EXPECT_EQ(fault.puts(), 6);
}

}  // namespace
}  // namespace sparsefill::kvstore
