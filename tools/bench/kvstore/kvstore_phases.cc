#include "tools/bench/kvstore/kvstore_phases.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kvstore/kv_store.h"
#include "sparsefill/kvstore/tier.h"

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;
using kvstore::BlockKey;
using kvstore::CacheId;
using kvstore::CacheLayout;
using kvstore::KvStore;
using kvstore::KvStoreOptions;
using kvstore::Tier;

// Scratch directories go on every exit path so a failed run leaves no gigabytes behind.
class ScratchDir {
 public:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Writes every layer of `kv` as one cache; only the store's calls are timed.
absl::Status WriteCache(KvStore& store, SyntheticKv& kv, const CacheId& id, StoreRunResult& r) {
  const CacheLayout& layout = kv.layout();
  kvstore::CacheSpec spec;
  spec.model = "bench-kvstore";
  spec.tenant = "bench";
  spec.layout = layout;
  spec.ttl_ms = 0;
  Stopwatch total;
  Stopwatch step;
  total.Start();
  step.Start();
  absl::Status s = store.BeginCache(id, spec);
  step.Stop();
  total.Stop();
  SF_RETURN_IF_ERROR(s);
  r.begin_seconds = step.Seconds();
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    kv.SetLayer(l);  // untimed: stands for the engine having produced layer l
    kvstore::LayerData data;
    data.layer = l;
    data.token_begin = 0;
    data.num_tokens = layout.num_tokens;
    data.k = kv.k();
    data.v = kv.v();
    step.Reset();
    total.Start();
    step.Start();
    s = store.WriteLayer(id, data);
    step.Stop();
    total.Stop();
    SF_RETURN_IF_ERROR(s);
    r.layer_seconds.push_back(step.Seconds());
  }
  step.Reset();
  total.Start();
  step.Start();
  s = store.Commit(id);
  step.Stop();
  total.Stop();
  SF_RETURN_IF_ERROR(s);
  r.commit_seconds = step.Seconds();
  r.write_seconds = total.Seconds();
  r.bytes = layout.total_bytes();
  r.blocks = layout.total_blocks();
  return absl::OkStatus();
}

// The bytes every block of layer l must read back as: layer 0's converted image, except the
// layer stamp, which sits in the first bf16 of every block (K, first token, dim 0).
struct Expected {
  std::vector<uint8_t> image;                 // layer 0, converted
  std::vector<std::array<uint8_t, 2>> stamp;  // [num_layers]
};

Expected MakeExpected(SyntheticKv& kv) {
  Expected x;
  kv.SetLayer(0);
  x.image.resize(kv.layer_bytes());
  kv.ConvertLayer(x.image);
  const size_t at = kv.BlockOffset(0, 0);
  for (int32_t l = 0; l < kv.layout().num_layers; ++l) {
    kv.StampConverted(x.image, l);
    x.stamp.push_back({x.image[at], x.image[at + 1]});
  }
  kv.StampConverted(x.image, 0);
  return x;
}

absl::Status CheckBlock(const SyntheticKv& kv, const Expected& x, const BlockKey& key,
                        std::span<const uint8_t> got) {
  const uint8_t* want = x.image.data() + kv.BlockOffset(key.head, key.block);
  if (got.size() < 2 || got[0] != x.stamp[key.layer][0] || got[1] != x.stamp[key.layer][1] ||
      std::memcmp(got.data() + 2, want + 2, got.size() - 2) != 0) {
    return absl::DataLossError(absl::StrCat("the store returned wrong bytes for ", key.ToString()));
  }
  return absl::OkStatus();
}

// Reads every block of the runs [next, runs) (one run = one (layer, head), all its blocks, in
// key order) taken from a shared counter; only the store's calls are timed in `watch`.
absl::Status ReadRuns(KvStore& store, const SyntheticKv& kv, const Expected& x, const CacheId& id,
                      ReadMode mode, std::atomic<int64_t>& next, Stopwatch& watch) {
  const CacheLayout& layout = kv.layout();
  const int64_t nb = layout.num_blocks();
  const int64_t runs = int64_t{layout.num_layers} * layout.kv_heads;
  std::vector<uint8_t> buf(static_cast<size_t>(nb) * layout.BlockBytes(0));
  std::vector<BlockKey> keys(static_cast<size_t>(nb));
  std::vector<std::span<uint8_t>> outs(static_cast<size_t>(nb));
  for (int64_t run = next.fetch_add(1); run < runs; run = next.fetch_add(1)) {
    const int32_t l = static_cast<int32_t>(run / layout.kv_heads);
    const int32_t h = static_cast<int32_t>(run % layout.kv_heads);
    size_t at = 0;
    for (int64_t b = 0; b < nb; ++b) {
      keys[b] = BlockKey{.cache = id, .layer = l, .head = h, .block = b};
      outs[b] = std::span<uint8_t>(buf.data() + at, layout.BlockBytes(b));
      at += layout.BlockBytes(b);
    }
    if (mode == ReadMode::kBlockByBlock) {
      for (int64_t b = 0; b < nb; ++b) {
        watch.Start();
        const absl::Status s = store.ReadBlock(keys[b], outs[b]);
        watch.Stop();
        SF_RETURN_IF_ERROR(s);
      }
    } else {
      watch.Start();
      const absl::Status s = store.ReadBlocks(keys, outs);
      watch.Stop();
      SF_RETURN_IF_ERROR(s);
    }
    for (int64_t b = 0; b < nb; ++b) SF_RETURN_IF_ERROR(CheckBlock(kv, x, keys[b], outs[b]));
  }
  return absl::OkStatus();
}

// Reads every block with `threads` readers, each taking whole (layer, head) runs. One reader:
// the store's calls are timed; several: the wall clock of all of them (bytes checks included).
absl::StatusOr<double> ReadCache(KvStore& store, SyntheticKv& kv, const Expected& x,
                                 const CacheId& id, ReadMode mode, int threads) {
  std::atomic<int64_t> next{0};
  if (threads <= 1) {
    Stopwatch watch;
    SF_RETURN_IF_ERROR(ReadRuns(store, kv, x, id, mode, next, watch));
    return watch.Seconds();
  }
  std::vector<absl::Status> status(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  const auto begin = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      Stopwatch unused;
      status[t] = ReadRuns(store, kv, x, id, mode, next, unused);
    });
  }
  for (std::thread& th : pool) th.join();
  const double seconds = SecondsSince(begin);
  for (const absl::Status& s : status) SF_RETURN_IF_ERROR(s);
  return seconds;
}

KvStoreOptions BaseOptions(const std::string& db_dir) {
  KvStoreOptions o;
  o.path = db_dir;
  o.default_ttl_ms = 0;  // no expiry mid-run
  return o;
}

int64_t TierReads(const KvStore& store, Tier tier) {
  return store.Stats().tiers[static_cast<size_t>(tier)].reads;
}

}  // namespace

nlohmann::json StoreRunResult::ToJson() const {
  return {{"bytes", bytes},
          {"blocks", blocks},
          {"begin_seconds", begin_seconds},
          {"layer_seconds", layer_seconds},
          {"commit_seconds", commit_seconds},
          {"write_seconds", write_seconds},
          {"write_gbps", write_gbps()},
          {"close_seconds", close_seconds},
          {"write_through_close_gbps", write_through_close_gbps()},
          {"reopen_seconds", reopen_seconds},
          {"db_bytes_on_disk", db_bytes_on_disk},
          {"residency_before_read", before_read.ToJson()},
          {"read_from_disk", read_from_disk},
          {"read_seconds", read_seconds},
          {"read_gbps", read_gbps()},
          {"reads_from_tier", reads_from_tier},
          {"cold_reads", [&] {
             nlohmann::json a = nlohmann::json::array();
             for (const ColdRead& c : reads) a.push_back(c.ToJson());
             return a;
           }()}};
}

nlohmann::json ColdRead::ToJson() const {
  return {{"api",
           mode == ReadMode::kBatched ? "ReadBlocks per (layer, head) run" : "ReadBlock per block"},
          {"threads", threads},
          {"timed", threads == 1 ? "the store's calls"
                                 : "wall clock of all readers, byte checks "
                                   "included"},
          {"residency_before_read", before_read.ToJson()},
          {"read_from_disk", read_from_disk},
          {"read_seconds", seconds},
          {"read_gbps", gbps()},
          {"reads_from_tier", reads_from_tier}};
}

nlohmann::json RawTierResult::ToJson() const {
  return {{"bytes", bytes},
          {"put_seconds", put_seconds},
          {"put_gbps", GBps(bytes, put_seconds)},
          {"get_seconds", get_seconds},
          {"get_gbps", GBps(bytes, get_seconds)}};
}

absl::StatusOr<PlainFileResult> RunPlainPhase(SyntheticKv& kv, const std::string& path,
                                              size_t chunk_bytes) {
  // The bytes the store holds: layer l converted, stamped with l (converted once; stamping
  // in place is exact and keeps the conversion out of the physical-limit figure).
  kv.SetLayer(0);
  std::vector<uint8_t> image(kv.layer_bytes());
  kv.ConvertLayer(image);
  PlainFileOptions opt;
  opt.path = path;
  opt.pieces = kv.layout().num_layers;
  opt.piece_bytes = image.size();
  opt.chunk_bytes = chunk_bytes;
  return RunPlainFile(opt, [&](int64_t piece, std::span<uint8_t> out) {
    kv.StampConverted(image, static_cast<int32_t>(piece));
    std::memcpy(out.data(), image.data(), out.size());
    return absl::OkStatus();
  });
}

absl::StatusOr<StoreRunResult> RunDiskTierPhase(SyntheticKv& kv, const std::string& db_dir,
                                                const DiskTierOptions& options) {
  ScratchDir dir(db_dir);
  KvStoreOptions o = BaseOptions(db_dir);
  o.rocksdb = options.rocksdb;
  o.placement.init_blocks = 0;
  o.placement.local_blocks = 0;
  o.placement.hot_blocks = 0;  // nothing hot: every read goes to RocksDB
  StoreRunResult r;
  const CacheId id = CacheId::Random();
  {
    SF_ASSIGN_OR_RETURN(std::unique_ptr<KvStore> store, KvStore::Open(o));
    SF_RETURN_IF_ERROR(WriteCache(*store, kv, id, r));
    const auto close_begin = std::chrono::steady_clock::now();
    store.reset();
    r.close_seconds = SecondsSince(close_begin);
  }
  r.db_bytes_on_disk = DiskUsageBytes(db_dir);
  const Expected x = MakeExpected(kv);
  std::vector<std::pair<ReadMode, int>> plan = {{ReadMode::kBlockByBlock, 1},
                                                {ReadMode::kBatched, 1}};
  if (options.read_threads > 1) plan.emplace_back(ReadMode::kBatched, options.read_threads);
  for (const auto& [mode, threads] : plan) {
    // A fresh open per read: no read finds blocks or index blocks an earlier one cached.
    SF_RETURN_IF_ERROR(EvictFromPageCache(db_dir));
    const auto open_begin = std::chrono::steady_clock::now();
    SF_ASSIGN_OR_RETURN(std::unique_ptr<KvStore> store, KvStore::Open(o));
    const double reopen = SecondsSince(open_begin);
    ColdRead cold;
    cold.mode = mode;
    cold.threads = threads;
    cold.bytes = r.bytes;
    // Recovery may flush a WAL tail into fresh (cached) files; evict those too.
    SF_ASSIGN_OR_RETURN(cold.before_read, EvictAndMeasure(db_dir));
    cold.read_from_disk = cold.before_read.fraction() < 0.01;
    const int64_t reads_before = TierReads(*store, Tier::kDisk);
    SF_ASSIGN_OR_RETURN(cold.seconds, ReadCache(*store, kv, x, id, mode, threads));
    cold.reads_from_tier = TierReads(*store, Tier::kDisk) - reads_before;
    if (mode == ReadMode::kBatched && threads == 1) {
      r.reopen_seconds = reopen;
      r.before_read = cold.before_read;
      r.read_from_disk = cold.read_from_disk;
      r.read_seconds = cold.seconds;
      r.reads_from_tier = cold.reads_from_tier;
    }
    r.reads.push_back(cold);
  }
  return r;  // the scratch directory goes with the store (DeleteCache would compact first)
}

absl::StatusOr<StoreRunResult> RunHostTierPhase(SyntheticKv& kv, const std::string& db_dir) {
  ScratchDir dir(db_dir);
  const CacheLayout& layout = kv.layout();
  KvStoreOptions o = BaseOptions(db_dir);
  // Room for the whole cache; headroom for per-block rounding in the tier's accounting.
  o.host_budget_bytes = layout.total_bytes() + (64ull << 20);
  const int32_t all = static_cast<int32_t>(layout.num_blocks());
  o.placement.init_blocks = 0;
  o.placement.local_blocks = all;  // every block is "local": all hot without an importance
  o.placement.hot_blocks = all;
  StoreRunResult r;
  const CacheId id = CacheId::Random();
  SF_ASSIGN_OR_RETURN(std::unique_ptr<KvStore> store, KvStore::Open(o));
  SF_RETURN_IF_ERROR(WriteCache(*store, kv, id, r));
  r.db_bytes_on_disk = DiskUsageBytes(db_dir);
  const Expected x = MakeExpected(kv);
  const int64_t reads_before = TierReads(*store, Tier::kHost);
  SF_ASSIGN_OR_RETURN(r.read_seconds, ReadCache(*store, kv, x, id, ReadMode::kBatched, 1));
  const int64_t reads_after = TierReads(*store, Tier::kHost);
  r.reads_from_tier = reads_after - reads_before;
  const auto close_begin = std::chrono::steady_clock::now();
  store.reset();
  r.close_seconds = SecondsSince(close_begin);
  return r;
}

absl::StatusOr<RawTierResult> RunRawHostTier(SyntheticKv& kv) {
  const CacheLayout& layout = kv.layout();
  std::unique_ptr<kvstore::BlockTier> tier = kvstore::NewHostTier(layout.total_bytes());
  const CacheId id = CacheId::Random();
  kv.SetLayer(0);
  std::vector<uint8_t> image(kv.layer_bytes());
  kv.ConvertLayer(image);
  RawTierResult r;
  r.bytes = layout.total_bytes();
  Stopwatch put;
  std::vector<kvstore::BlockWrite> writes;
  writes.reserve(static_cast<size_t>(layout.kv_heads) * layout.num_blocks());
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    kv.StampConverted(image, l);
    writes.clear();
    for (int32_t h = 0; h < layout.kv_heads; ++h) {
      for (int64_t b = 0; b < layout.num_blocks(); ++b) {
        writes.push_back({.key = BlockKey{.cache = id, .layer = l, .head = h, .block = b},
                          .data = std::span<const uint8_t>(image.data() + kv.BlockOffset(h, b),
                                                           layout.BlockBytes(b))});
      }
    }
    put.Start();
    const absl::Status s = tier->PutBlocks(writes, /*sync=*/false);
    put.Stop();
    SF_RETURN_IF_ERROR(s);
  }
  r.put_seconds = put.Seconds();
  Stopwatch get;
  std::vector<uint8_t> got(layout.BlockBytes(0));
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    kv.StampConverted(image, l);
    for (int32_t h = 0; h < layout.kv_heads; ++h) {
      for (int64_t b = 0; b < layout.num_blocks(); ++b) {
        const size_t n = layout.BlockBytes(b);
        const BlockKey key{.cache = id, .layer = l, .head = h, .block = b};
        get.Start();
        const absl::Status s = tier->Get(key, std::span<uint8_t>(got.data(), n));
        get.Stop();
        SF_RETURN_IF_ERROR(s);
        if (std::memcmp(got.data(), image.data() + kv.BlockOffset(h, b), n) != 0) {
          return absl::DataLossError(
              absl::StrCat("host tier Get returned wrong bytes for ", key.ToString()));
        }
      }
    }
  }
  r.get_seconds = get.Seconds();
  return r;
}

absl::StatusOr<Samples> TimeConversion(SyntheticKv& kv, int repeats) {
  std::vector<uint8_t> out(kv.layer_bytes());
  return TimeRepeated({.warmup = 1, .repeats = repeats}, [&]() -> absl::StatusOr<double> {
    const auto begin = std::chrono::steady_clock::now();
    kv.ConvertLayer(out);
    return SecondsSince(begin);
  });
}

}  // namespace sparsefill::bench
