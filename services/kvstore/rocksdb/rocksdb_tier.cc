#include "services/kvstore/rocksdb/rocksdb_tier.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "sparsefill/common/status.h"

namespace sparsefill::kvstore {
namespace {

constexpr char kBlockPrefix = 0x01;
constexpr char kManifestPrefix = 0x02;
constexpr size_t kIdBytes = 16;
constexpr size_t kBlockKeyBytes = 1 + kIdBytes + 4 + 4 + 8;
constexpr char kBlocksCf[] = "blocks";
constexpr char kManifestsCf[] = "manifests";

void PutBE(std::string* s, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetBE(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string CachePrefix(char prefix, const CacheId& id) {
  std::string k;
  k.reserve(kBlockKeyBytes);
  k.push_back(prefix);
  PutBE(&k, id.hi, 8);
  PutBE(&k, id.lo, 8);
  return k;
}
std::string BlockKeyBytes(const BlockKey& key) {
  std::string k = CachePrefix(kBlockPrefix, key.cache);
  PutBE(&k, static_cast<uint32_t>(key.layer), 4);
  PutBE(&k, static_cast<uint32_t>(key.head), 4);
  PutBE(&k, static_cast<uint64_t>(key.block), 8);
  return k;
}
// Greater than every 33-byte block key of the cache and smaller than the next cache's keys.
std::string CacheRangeEnd(const CacheId& id) {
  return CachePrefix(kBlockPrefix, id) + std::string(kBlockKeyBytes - 1 - kIdBytes + 1, '\xff');
}
CacheId DecodeId(const char* p) { return CacheId{GetBE(p, 8), GetBE(p + 8, 8)}; }

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(AsAbsl(what), ": rocksdb ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsNoSpace() || s.IsMemoryLimit()) return absl::ResourceExhaustedError(msg);
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) return absl::UnavailableError(msg);
  if (s.IsIOError()) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

}  // namespace

struct RocksDbTier::Impl {
  std::unique_ptr<rocksdb::DB> db;
  rocksdb::ColumnFamilyHandle* blocks = nullptr;
  rocksdb::ColumnFamilyHandle* manifests = nullptr;
  rocksdb::ColumnFamilyHandle* default_cf = nullptr;
  std::string path;
  RocksDbOptions options;

  ~Impl() {
    if (db) {
      for (auto* h : {blocks, manifests, default_cf}) {
        if (h)
          IgnoreError(FromRocks(db->DestroyColumnFamilyHandle(h), "close"),
                      "handles are released at close; nothing is left to retry");
      }
      IgnoreError(FromRocks(db->Close(), "close"),
                  "every write that mattered was synced; close only releases resources");
    }
  }
};

RocksDbTier::RocksDbTier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RocksDbTier::~RocksDbTier() = default;

absl::StatusOr<std::unique_ptr<RocksDbTier>> RocksDbTier::Open(const std::string& path,
                                                               const RocksDbOptions& options) {
  SF_RETURN_IF_ERROR(options.Validate());
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = options.max_background_jobs;
  db_options.use_direct_reads = options.use_direct_reads;
  // Durability relies on these defaults (set explicitly so a future default cannot change it):
  // the WAL is written on every Write and a synced Write syncs all earlier writes with it.
  db_options.manual_wal_flush = false;
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  db_options.avoid_flush_during_shutdown = false;
  db_options.advise_random_on_open = options.advise_random_on_open;

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  auto table_factory =
      std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(table));

  rocksdb::ColumnFamilyOptions blocks_cf;
  blocks_cf.write_buffer_size = options.write_buffer_size;
  blocks_cf.max_write_buffer_number = options.max_write_buffer_number;
  blocks_cf.table_factory = table_factory;
  blocks_cf.enable_blob_files = true;
  blocks_cf.min_blob_size = options.min_blob_size;
  blocks_cf.blob_file_size = options.blob_file_size;
  // KV activations are near-incompressible; compressing them costs CPU for nothing.
  blocks_cf.blob_compression_type = rocksdb::kNoCompression;
  blocks_cf.enable_blob_garbage_collection = options.blob_garbage_collection;

  rocksdb::ColumnFamilyOptions manifests_cf;
  manifests_cf.write_buffer_size = 4ull << 20;  // manifests are small
  manifests_cf.table_factory = table_factory;
  manifests_cf.enable_blob_files = false;

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {kBlocksCf, blocks_cf},
      {kManifestsCf, manifests_cf}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, path, cfs, &handles, &raw);
  if (!s.ok()) return FromRocks(s, absl::StrCat("opening kv store at ", path));
  auto impl = std::make_unique<Impl>();
  impl->db.reset(raw);
  impl->default_cf = handles[0];
  impl->blocks = handles[1];
  impl->manifests = handles[2];
  impl->path = path;
  impl->options = options;
  return std::unique_ptr<RocksDbTier>(new RocksDbTier(std::move(impl)));
}

TierCapabilities RocksDbTier::Capabilities() const {
  return TierCapabilities{
      .tier = Tier::kDisk, .persistent = true, .atomic_batches = true, .budget_bytes = 0};
}

absl::Status RocksDbTier::PutBlocks(std::span<const BlockWrite> blocks, bool sync) {
  rocksdb::WriteBatch batch;
  for (const BlockWrite& w : blocks) {
    const rocksdb::Slice value(reinterpret_cast<const char*>(w.data.data()), w.data.size());
    rocksdb::Status s = batch.Put(impl_->blocks, BlockKeyBytes(w.key), value);
    if (!s.ok()) return FromRocks(s, absl::StrCat("batching ", w.key.ToString()));
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync && !impl_->options.blocks_bypass_wal;
  wo.disableWAL = impl_->options.blocks_bypass_wal;
  return FromRocks(impl_->db->Write(wo, &batch),
                   absl::StrCat("writing ", blocks.size(), " blocks to disk"));
}

namespace {

// Copies one fetched value into the caller's buffer, mapping RocksDB's outcome.
absl::Status CopyValue(const BlockKey& key, const rocksdb::Status& s,
                       const rocksdb::PinnableSlice& value, std::span<uint8_t> out) {
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat("disk has no ", key.ToString()));
  // The message only on failure: this runs for every block streamed from disk.
  if (!s.ok()) return FromRocks(s, absl::StrCat("reading ", key.ToString(), " from disk"));
  if (value.size() != out.size()) {
    return absl::InvalidArgumentError(absl::StrCat("disk ", key.ToString(), " holds ", value.size(),
                                                   " bytes, the buffer has ", out.size()));
  }
  std::memcpy(out.data(), value.data(), value.size());
  return absl::OkStatus();
}

// Bounds the values pinned at once by one MultiGet (256 x 32 KiB = 8 MiB).
constexpr size_t kMultiGetSlice = 256;

}  // namespace

absl::Status RocksDbTier::Get(const BlockKey& key, std::span<uint8_t> out) {
  rocksdb::ReadOptions ro;
  ro.verify_checksums = impl_->options.verify_rocksdb_checksums;
  rocksdb::PinnableSlice value;
  const rocksdb::Status s = impl_->db->Get(ro, impl_->blocks, BlockKeyBytes(key), &value);
  return CopyValue(key, s, value, out);
}

void RocksDbTier::GetBatch(std::span<const BlockKey> keys, std::span<const std::span<uint8_t>> outs,
                           std::span<absl::Status> statuses) {
  std::vector<std::string> encoded(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) encoded[i] = BlockKeyBytes(keys[i]);
  // Sorted input lets MultiGet skip its own sort and visit each SST and blob file once.
  std::vector<size_t> order(keys.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return encoded[a] < encoded[b]; });
  rocksdb::ReadOptions ro;
  ro.verify_checksums = impl_->options.verify_rocksdb_checksums;
  std::vector<rocksdb::Slice> slices;
  std::vector<rocksdb::PinnableSlice> values(std::min(keys.size(), kMultiGetSlice));
  std::vector<rocksdb::Status> rs;
  for (size_t begin = 0; begin < order.size(); begin += kMultiGetSlice) {
    const size_t n = std::min(kMultiGetSlice, order.size() - begin);
    slices.clear();
    for (size_t j = 0; j < n; ++j) slices.emplace_back(encoded[order[begin + j]]);
    rs.assign(n, rocksdb::Status());
    for (size_t j = 0; j < n; ++j) values[j].Reset();
    impl_->db->MultiGet(ro, impl_->blocks, n, slices.data(), values.data(), rs.data(),
                        /*sorted_input=*/true);
    for (size_t j = 0; j < n; ++j) {
      const size_t i = order[begin + j];
      statuses[i] = CopyValue(keys[i], rs[j], values[j], outs[i]);
    }
  }
}

absl::Status RocksDbTier::Erase(const BlockKey& key) {
  return FromRocks(impl_->db->Delete(rocksdb::WriteOptions(), impl_->blocks, BlockKeyBytes(key)),
                   absl::StrCat("erasing ", key.ToString()));
}

absl::Status RocksDbTier::DeleteCache(const CacheId& cache) {
  const std::string begin = CachePrefix(kBlockPrefix, cache);
  const std::string end = CacheRangeEnd(cache);
  rocksdb::WriteBatch batch;
  SF_RETURN_IF_ERROR(FromRocks(batch.DeleteRange(impl_->blocks, begin, end), "batching delete"));
  SF_RETURN_IF_ERROR(FromRocks(batch.Delete(impl_->manifests, CachePrefix(kManifestPrefix, cache)),
                               "batching delete"));
  rocksdb::WriteOptions wo;
  wo.sync = true;  // a deleted cache must not come back after a crash
  SF_RETURN_IF_ERROR(
      FromRocks(impl_->db->Write(wo, &batch), absl::StrCat("deleting cache ", cache.ToHex())));
  // Reclaims the space now rather than whenever background compaction reaches the range:
  // covered keys are dropped, and blob files left without live references are deleted.
  rocksdb::CompactRangeOptions co;
  co.exclusive_manual_compaction = false;
  co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
  const rocksdb::Slice b(begin), e(end);
  // The delete is durable already (the range tombstone hides the blocks); a failed compaction
  // (disk full, shutdown) only delays reclaiming space and must not resurrect the cache.
  IgnoreError(FromRocks(impl_->db->CompactRange(co, impl_->blocks, &b, &e),
                        absl::StrCat("compacting deleted cache ", cache.ToHex())),
              "space is reclaimed by background compaction later");
  return absl::OkStatus();
}

uint64_t RocksDbTier::used_bytes() const {
  uint64_t total = 0;
  for (const char* prop : {"rocksdb.total-sst-files-size", "rocksdb.total-blob-file-size",
                           "rocksdb.cur-size-all-mem-tables"}) {
    uint64_t v = 0;
    if (impl_->db->GetIntProperty(impl_->blocks, prop, &v)) total += v;
  }
  return total;
}

int64_t RocksDbTier::used_blocks() const {
  uint64_t v = 0;
  impl_->db->GetIntProperty(impl_->blocks, "rocksdb.estimate-num-keys", &v);
  return static_cast<int64_t>(v);
}

absl::Status RocksDbTier::PutManifest(const CacheId& id, std::string_view bytes, bool sync) {
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return FromRocks(impl_->db->Put(wo, impl_->manifests, CachePrefix(kManifestPrefix, id),
                                  rocksdb::Slice(bytes.data(), bytes.size())),
                   absl::StrCat("writing the manifest of cache ", id.ToHex()));
}

absl::StatusOr<std::vector<std::pair<CacheId, std::string>>> RocksDbTier::ListManifests() const {
  std::vector<std::pair<CacheId, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->manifests));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const rocksdb::Slice k = it->key();
    if (k.size() != 1 + kIdBytes || k[0] != kManifestPrefix) {
      return absl::DataLossError(
          absl::StrCat("manifest column family holds a malformed key of ", k.size(), " bytes"));
    }
    out.emplace_back(DecodeId(k.data() + 1), it->value().ToString());
  }
  SF_RETURN_IF_ERROR(FromRocks(it->status(), "listing manifests"));
  return out;
}

absl::StatusOr<std::vector<CacheId>> RocksDbTier::ListBlockCaches() const {
  std::vector<CacheId> out;
  // Keys only: a damaged value must not stop recovery (reads of it report DataLoss later).
  rocksdb::ReadOptions ro;
  ro.verify_checksums = false;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->blocks));
  for (it->SeekToFirst(); it->Valid();) {
    const rocksdb::Slice k = it->key();
    if (k.size() != kBlockKeyBytes || k[0] != kBlockPrefix) {
      return absl::DataLossError(
          absl::StrCat("blocks column family holds a malformed key of ", k.size(), " bytes"));
    }
    const CacheId id = DecodeId(k.data() + 1);
    out.push_back(id);
    it->Seek(CacheRangeEnd(id));
  }
  SF_RETURN_IF_ERROR(FromRocks(it->status(), "listing cached blocks"));
  return out;
}

absl::StatusOr<int64_t> RocksDbTier::CountBlocks(const CacheId& id) const {
  const std::string end = CacheRangeEnd(id);
  const rocksdb::Slice upper(end);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper;
  ro.verify_checksums = false;  // counts keys; values are checked by whoever reads them
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->blocks));
  int64_t n = 0;
  for (it->Seek(CachePrefix(kBlockPrefix, id)); it->Valid(); it->Next()) ++n;
  SF_RETURN_IF_ERROR(FromRocks(it->status(), absl::StrCat("counting blocks of ", id.ToHex())));
  return n;
}

absl::Status RocksDbTier::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  return FromRocks(impl_->db->Flush(fo, {impl_->blocks, impl_->manifests}), "flushing memtables");
}

absl::Status RocksDbTier::MakeBlocksDurable() {
  if (!impl_->options.blocks_bypass_wal) return SyncWal();
  rocksdb::FlushOptions fo;
  fo.wait = true;
  fo.allow_write_stall = true;
  return FromRocks(impl_->db->Flush(fo, impl_->blocks), "flushing blocks to SST and blob files");
}

absl::Status RocksDbTier::SyncWal() { return FromRocks(impl_->db->SyncWAL(), "syncing the WAL"); }

}  // namespace sparsefill::kvstore
