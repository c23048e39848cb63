#include "services/kvstore/placement.h"
#include "services/kvstore/rocksdb/rocksdb_tier.h"
#include "tests/unit/kvstore/store_test_util.h"

namespace sparsefill::kvstore {
namespace {

using testing::MakeCache;
using testing::ReadsBackExactly;
using testing::TempDir;
using testing::TestOptions;
using testing::WriteCache;

class KvStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = sparsefill::testing::FreshSeed();
    rng_ = std::make_unique<Rng>(seed_);
    Reopen();
  }
  void Reopen() {
    store_.reset();
    auto s = KvStore::Open(TestOptions(dir_.path, &clock_));
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  CacheLayout Layout(DType dtype, int64_t tokens = 200) {
    return CacheLayout{.dtype = dtype,
                       .num_layers = 3,
                       .kv_heads = 2,
                       .head_dim = 32,
                       .block_size = 16,
                       .num_tokens = tokens};
  }

  uint64_t seed_ = 0;
  std::unique_ptr<Rng> rng_;
  FakeClock clock_;
  TempDir dir_{"kv-store"};
  std::unique_ptr<KvStore> store_;
};

TEST_F(KvStoreTest, RoundTripIsBitExactPerDtypeFromEveryTier) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  std::vector<testing::TestCache> caches;
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    caches.push_back(MakeCache(*rng_, Layout(dt, 193)));  // partial last block
    ASSERT_TRUE(WriteCache(*store_, caches.back(), true, /*shards=*/3).ok());
  }
  // F32 stores the floats themselves.
  {
    const testing::TestCache& c = caches[0];
    std::vector<uint8_t> got(c.spec.layout.BlockBytes(0));
    ASSERT_TRUE(store_->ReadBlock({.cache = c.id, .layer = 1, .head = 1, .block = 0}, got).ok());
    std::vector<float> k(16 * 32);
    std::memcpy(k.data(), got.data(), k.size() * 4);
    for (int t = 0; t < 16; ++t) {
      for (int d = 0; d < 32; ++d) ASSERT_EQ(k[t * 32 + d], c.k[1][(t * 2 + 1) * 32 + d]);
    }
  }
  // Hot blocks come from host memory, the rest from RocksDB; both bit-exact.
  for (const auto& c : caches) EXPECT_TRUE(ReadsBackExactly(*store_, c));
  KvStoreStats st = store_->Stats();
  EXPECT_GT(st.tiers[size_t(Tier::kHost)].reads, 0);
  EXPECT_GT(st.tiers[size_t(Tier::kDisk)].reads, 0);
  EXPECT_EQ(st.ready_caches, 3);
  // After a restart every block is served from disk, still bit-exact.
  Reopen();
  ASSERT_EQ(store_->ListCaches(false).size(), 3u);
  for (const auto& c : caches) EXPECT_TRUE(ReadsBackExactly(*store_, c));
  st = store_->Stats();
  EXPECT_EQ(st.tiers[size_t(Tier::kHost)].reads, 0);
  uint64_t total = 0;
  for (const auto& c : caches) total += c.spec.layout.total_bytes();
  EXPECT_EQ(st.tiers[size_t(Tier::kDisk)].bytes, total);
}

TEST_F(KvStoreTest, PlacementKeepsInitLocalAndTopImportanceHot) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const testing::TestCache c = MakeCache(*rng_, Layout(DType::kBF16, 16 * 12));
  ASSERT_TRUE(WriteCache(*store_, c).ok());
  absl::StatusOr<Manifest> m = store_->GetManifest(c.id);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->state, CacheState::kReady);
  EXPECT_EQ(m->model, "test-model");
  const CacheLayout& l = c.spec.layout;
  const PlacementOptions o = TestOptions("x", nullptr).placement;
  int64_t hot = 0;
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    EXPECT_EQ(m->layers_written[layer], 1);
    for (int32_t h = 0; h < l.kv_heads; ++h) {
      const float* imp = c.importance[layer].data() + h * l.num_blocks();
      // Independently: init block 0, local 10 and 11, then the two best of blocks 1..9.
      std::vector<int64_t> middle = {1, 2, 3, 4, 5, 6, 7, 8, 9};
      std::sort(middle.begin(), middle.end(),
                [&](int64_t a, int64_t b) { return imp[a] > imp[b]; });
      std::vector<uint8_t> want(l.num_blocks(), 0);
      want[0] = want[10] = want[11] = want[middle[0]] = want[middle[1]] = 1;
      for (int64_t b = 0; b < l.num_blocks(); ++b) {
        const BlockMeta& meta = m->blocks[l.Index(layer, h, b)];
        EXPECT_EQ(meta.hot, want[b] == 1) << "layer " << layer << " head " << h << " block " << b;
        EXPECT_EQ(meta.tier, want[b] ? Tier::kHost : Tier::kDisk);
        hot += meta.hot;
      }
    }
  }
  EXPECT_EQ(hot, int64_t{l.num_layers} * l.kv_heads * o.hot_blocks);
  const KvStoreStats st = store_->Stats();
  EXPECT_EQ(st.tiers[size_t(Tier::kHost)].blocks, hot);
  EXPECT_EQ(st.tiers[size_t(Tier::kDisk)].blocks, l.total_blocks());
  EXPECT_EQ(st.tiers[size_t(Tier::kDisk)].offload_bytes, l.total_bytes());
}

TEST_F(KvStoreTest, BadWritesAreNamedErrors) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const testing::TestCache c = MakeCache(*rng_, Layout(DType::kF16, 100));
  LayerData d{
      .layer = 0, .token_begin = 0, .num_tokens = 100, .k = c.k[0].data(), .v = c.v[0].data()};
  // Unknown cache.
  absl::Status s = store_->WriteLayer(c.id, d);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find(c.id.ToHex()), std::string::npos) << s;

  ASSERT_TRUE(store_->BeginCache(c.id, c.spec).ok());
  s = store_->BeginCache(c.id, c.spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  auto expect = [&](LayerData bad, absl::StatusCode code, const char* text) {
    absl::Status st = store_->WriteLayer(c.id, bad);
    EXPECT_EQ(st.code(), code) << st;
    EXPECT_NE(st.message().find(text), std::string::npos) << st;
  };
  LayerData bad = d;
  bad.layer = 3;
  expect(bad, absl::StatusCode::kInvalidArgument, "layer is outside [0, 3)");
  bad = d;
  bad.token_begin = 8;
  bad.num_tokens = 16;
  expect(bad, absl::StatusCode::kInvalidArgument, "token_begin 8 is not");
  bad = d;
  bad.num_tokens = 101;
  expect(bad, absl::StatusCode::kInvalidArgument, "exceed the cache's 100 tokens");
  bad = d;
  bad.num_tokens = 20;
  expect(bad, absl::StatusCode::kInvalidArgument, "token end 20 is neither block-aligned");
  bad = d;
  bad.k = nullptr;
  expect(bad, absl::StatusCode::kInvalidArgument, "k and v must be non-null");
  bad = d;
  bad.importance = c.importance[0].data();
  bad.importance_blocks = 6;
  expect(bad, absl::StatusCode::kInvalidArgument, "importance covers 6 blocks; the prompt has 7");

  // Layer 0 fully and layer 1 partly: Commit names the first missing layer.
  ASSERT_TRUE(store_->WriteLayer(c.id, d).ok());
  LayerData half = d;
  half.layer = 1;
  half.num_tokens = 48;
  half.k = c.k[1].data();
  half.v = c.v[1].data();
  ASSERT_TRUE(store_->WriteLayer(c.id, half).ok());
  s = store_->Commit(c.id);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("layer 1 is incomplete (head 0 block 3"), std::string::npos) << s;
  // Written blocks of a PENDING cache are readable already; unwritten ones are NotFound.
  std::vector<uint8_t> buf(c.spec.layout.BlockBytes(0));
  EXPECT_TRUE(store_->ReadBlock({.cache = c.id, .layer = 1, .head = 1, .block = 2}, buf).ok());
  s = store_->ReadBlock({.cache = c.id, .layer = 2, .head = 0, .block = 0}, buf);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("not been written"), std::string::npos) << s;
  for (int32_t layer = 1; layer < 3; ++layer) {
    ASSERT_TRUE(testing::WriteLayerShards(*store_, c, layer).ok());
  }
  ASSERT_TRUE(store_->Commit(c.id).ok());
  EXPECT_EQ(store_->Commit(c.id).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->WriteLayer(c.id, d).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Abort(c.id).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ReadsBackExactly(*store_, c));

  // Reads: wrong buffer size, blocks outside the layout.
  std::vector<uint8_t> small(10);
  s = store_->ReadBlock({.cache = c.id, .layer = 0, .head = 0, .block = 0}, small);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = store_->ReadBlock({.cache = c.id, .layer = 0, .head = 2, .block = 0}, buf);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("outside the cache's layout"), std::string::npos) << s;
  s = store_->ReadBlock({.cache = c.id, .layer = 0, .head = 0, .block = 7}, buf);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;

  // Bad specs.
  CacheSpec spec = c.spec;
  spec.layout.block_size = 0;
  s = store_->BeginCache(CacheId::Random(), spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("block_size"), std::string::npos) << s;
  spec = c.spec;
  spec.ttl_ms = -5;
  EXPECT_EQ(store_->BeginCache(CacheId::Random(), spec).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(KvStoreTest, AbortAndCrashRecoveryDropPendingCachesWithTheirBlocks) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const testing::TestCache ready = MakeCache(*rng_, Layout(DType::kBF16));
  const testing::TestCache aborted = MakeCache(*rng_, Layout(DType::kBF16));
  const testing::TestCache pending = MakeCache(*rng_, Layout(DType::kBF16));
  ASSERT_TRUE(WriteCache(*store_, ready).ok());
  ASSERT_TRUE(WriteCache(*store_, aborted, /*commit=*/false).ok());
  ASSERT_TRUE(WriteCache(*store_, pending, /*commit=*/false).ok());
  EXPECT_EQ(store_->ListCaches(true).size(), 3u);
  EXPECT_EQ(store_->ListCaches(false).size(), 1u);
  ASSERT_TRUE(store_->Abort(aborted.id).ok());
  EXPECT_EQ(store_->GetManifest(aborted.id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Stats().pending_caches, 1);
  // Closing with `pending` unfinished is what a crash leaves behind.
  Reopen();
  const std::vector<Manifest> all = store_->ListCaches(true);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].id, ready.id);
  EXPECT_TRUE(ReadsBackExactly(*store_, ready));
  EXPECT_EQ(store_->Stats().pending_caches, 0);
  store_.reset();
  auto raw = RocksDbTier::Open(dir_.path, TestOptions(dir_.path, &clock_).rocksdb);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(*(*raw)->CountBlocks(pending.id), 0);
  EXPECT_EQ(*(*raw)->CountBlocks(aborted.id), 0);
  EXPECT_EQ(*(*raw)->CountBlocks(ready.id), ready.spec.layout.total_blocks());
  EXPECT_EQ((*raw)->ListManifests()->size(), 1u);
}

TEST_F(KvStoreTest, TtlExpiryAndDeleteFreeTheSpace) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const testing::TestCache short_lived = MakeCache(*rng_, Layout(DType::kBF16), /*ttl_ms=*/1000);
  const testing::TestCache forever = MakeCache(*rng_, Layout(DType::kF16), /*ttl_ms=*/0);
  const testing::TestCache deleted = MakeCache(*rng_, Layout(DType::kF32), /*ttl_ms=*/-1);
  for (const auto* c : {&short_lived, &forever, &deleted})
    ASSERT_TRUE(WriteCache(*store_, *c).ok());
  absl::StatusOr<Manifest> m = store_->GetManifest(deleted.id);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->expires_unix_ms - m->created_unix_ms, 24 * 3600 * 1000);  // the store default
  EXPECT_EQ(store_->GetManifest(forever.id)->expires_unix_ms, 0);

  ASSERT_TRUE(store_->DeleteCache(deleted.id).ok());
  EXPECT_EQ(store_->DeleteCache(deleted.id).code(), absl::StatusCode::kNotFound);
  std::vector<uint8_t> buf(deleted.spec.layout.BlockBytes(0));
  EXPECT_EQ(store_->ReadBlock({.cache = deleted.id}, buf).code(), absl::StatusCode::kNotFound);

  clock_.Advance(999);
  ASSERT_EQ(*store_->ExpireCaches(), 0);
  EXPECT_EQ(store_->ListCaches(false).size(), 2u);
  clock_.Advance(1);
  // Expired caches vanish for readers at once, and ExpireCaches frees them.
  EXPECT_EQ(store_->ListCaches(false).size(), 1u);
  EXPECT_EQ(store_->ReadBlock({.cache = short_lived.id}, buf).code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(*store_->ExpireCaches(), 1);
  ASSERT_EQ(*store_->ExpireCaches(), 0);
  KvStoreStats st = store_->Stats();
  EXPECT_EQ(st.ready_caches, 1);
  EXPECT_EQ(st.tiers[size_t(Tier::kDisk)].bytes, forever.spec.layout.total_bytes());
  EXPECT_EQ(st.tiers[size_t(Tier::kDisk)].blocks, forever.spec.layout.total_blocks());
  EXPECT_TRUE(ReadsBackExactly(*store_, forever));

  clock_.Advance(int64_t{365} * 24 * 3600 * 1000);
  ASSERT_EQ(*store_->ExpireCaches(), 0);  // ttl 0 never expires
  ASSERT_TRUE(store_->DeleteCache(forever.id).ok());
  st = store_->Stats();
  for (const TierStats& t : st.tiers) {
    EXPECT_EQ(t.bytes, 0u);
    EXPECT_EQ(t.blocks, 0);
  }
  store_.reset();
  auto raw = RocksDbTier::Open(dir_.path, TestOptions(dir_.path, &clock_).rocksdb);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_TRUE((*raw)->ListBlockCaches()->empty());
  EXPECT_TRUE((*raw)->ListManifests()->empty());
  EXPECT_LT((*raw)->used_bytes(), 64u << 10);
}

class CountingMetrics final : public KvStoreMetrics {
 public:
  void OnBlocksStored(Tier t, int64_t blocks, uint64_t bytes) override {
    blocks_[size_t(t)] += blocks;
    bytes_[size_t(t)] += bytes;
  }
  void OnBlocksRemoved(Tier t, int64_t blocks, uint64_t bytes) override {
    blocks_[size_t(t)] -= blocks;
    bytes_[size_t(t)] -= bytes;
  }
  void OnOffload(Tier t, uint64_t bytes) override { offload_[size_t(t)] += bytes; }
  void OnRead(Tier t, uint64_t bytes) override { reads_[size_t(t)] += 1; }
  void OnChecksumFailure(Tier t) override { failures_[size_t(t)] += 1; }
  void OnEviction(Tier t, int64_t blocks) override { evictions_[size_t(t)] += blocks; }
  int64_t blocks_[3] = {}, reads_[3] = {}, failures_[3] = {}, evictions_[3] = {};
  uint64_t bytes_[3] = {}, offload_[3] = {};
};

TEST_F(KvStoreTest, MetricsHooksAgreeWithStats) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  CountingMetrics metrics;
  KvStoreOptions o = TestOptions(dir_.path, &clock_);
  o.metrics = &metrics;
  o.host_budget_bytes = 3 * 16 * 32 * 2 * 2 * 4;  // room for a few hot blocks only
  store_.reset();
  auto s = KvStore::Open(o);
  ASSERT_TRUE(s.ok()) << s.status();
  store_ = *std::move(s);
  std::vector<testing::TestCache> caches;
  for (int i = 0; i < 3; ++i) {
    caches.push_back(MakeCache(*rng_, Layout(DType::kBF16)));
    ASSERT_TRUE(WriteCache(*store_, caches.back()).ok());
  }
  for (const auto& c : caches) EXPECT_TRUE(ReadsBackExactly(*store_, c));
  ASSERT_TRUE(store_->DeleteCache(caches[1].id).ok());
  const KvStoreStats st = store_->Stats();
  for (size_t t = 0; t < 3; ++t) {
    EXPECT_EQ(metrics.blocks_[t], st.tiers[t].blocks) << t;
    EXPECT_EQ(metrics.bytes_[t], st.tiers[t].bytes) << t;
    EXPECT_EQ(metrics.offload_[t], st.tiers[t].offload_bytes) << t;
    EXPECT_EQ(metrics.reads_[t], st.tiers[t].reads) << t;
    EXPECT_EQ(metrics.failures_[t], st.tiers[t].checksum_failures) << t;
    EXPECT_EQ(metrics.evictions_[t], st.tiers[t].evictions) << t;
  }
  EXPECT_GT(st.tiers[size_t(Tier::kHost)].evictions, 0);
  EXPECT_LE(st.tiers[size_t(Tier::kHost)].bytes, o.host_budget_bytes);
}

TEST(KvStoreOptionsTest, ValidateNamesTheField) {
  KvStoreOptions o;
  EXPECT_NE(o.Validate().message().find("path"), std::string::npos);
  o.path = "/tmp/x";
  EXPECT_TRUE(o.Validate().ok());
  o.placement.hot_blocks = 4;
  EXPECT_NE(o.Validate().message().find("hot_blocks"), std::string::npos);
  o = KvStoreOptions();
  o.path = "/tmp/x";
  o.rocksdb.min_blob_size = 0;
  EXPECT_NE(o.Validate().message().find("min_blob_size"), std::string::npos);
  o = KvStoreOptions();
  o.path = "/tmp/x";
  o.default_ttl_ms = -1;
  EXPECT_NE(o.Validate().message().find("default_ttl_ms"), std::string::npos);
  o = KvStoreOptions();
  o.path = "/tmp/x";
  o.device_tier = NewHostTier(0);  // a host pool posing as the device tier
  EXPECT_NE(o.Validate().message().find("device_tier declares tier host"), std::string::npos);
  EXPECT_EQ(KvStore::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sparsefill::kvstore
