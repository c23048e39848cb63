#include "sparsefill/kvstore/record_store.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "sparsefill/common/status.h"

namespace sparsefill::kvstore {
namespace {

// Keys may hold binary bytes (cache ids); errors show them escaped so a log line stays one line.
std::string KeyName(std::string_view key) {
  return absl::StrCat("record '", absl::CEscape(AsAbsl(key)), "'");
}

absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(AsAbsl(what), ": rocksdb ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsNoSpace() || s.IsMemoryLimit()) return absl::ResourceExhaustedError(msg);
  // A second process holding the LOCK file reports IOError: retrying later may work.
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut() || s.IsIOError()) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

}  // namespace

struct RecordStore::Impl {
  std::unique_ptr<rocksdb::DB> db;
  std::string path;

  ~Impl() {
    if (db) {
      IgnoreError(FromRocks(db->Close(), absl::StrCat("close record store ", path)),
                  "synced writes are durable already; close only releases resources");
    }
  }
};

RecordStore::RecordStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RecordStore::~RecordStore() = default;

const std::string& RecordStore::path() const { return impl_->path; }

absl::StatusOr<std::unique_ptr<RecordStore>> RecordStore::Open(std::string_view path) {
  if (path.empty()) return absl::InvalidArgumentError("record store: empty path");
  rocksdb::Options options;
  options.create_if_missing = true;
  // Records are small and few: keep memory and background work small.
  options.write_buffer_size = 4 << 20;
  options.max_background_jobs = 1;
  options.keep_log_file_num = 2;
  options.manual_wal_flush = false;
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  rocksdb::DB* raw = nullptr;
  const std::string p(path);
  SF_RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::Open(options, p, &raw), absl::StrCat("open record store ", p)));
  auto impl = std::make_unique<Impl>();
  impl->db.reset(raw);
  impl->path = p;
  return std::unique_ptr<RecordStore>(new RecordStore(std::move(impl)));
}

absl::Status RecordStore::Put(std::string_view key, std::string_view value, bool sync) {
  if (key.empty()) return absl::InvalidArgumentError("record store put: empty key");
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return FromRocks(impl_->db->Put(wo, rocksdb::Slice(key.data(), key.size()),
                                  rocksdb::Slice(value.data(), value.size())),
                   absl::StrCat("put ", KeyName(key)));
}

absl::StatusOr<std::string> RecordStore::Get(std::string_view key) const {
  if (key.empty()) return absl::InvalidArgumentError("record store get: empty key");
  std::string value;
  const rocksdb::Status s =
      impl_->db->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat(KeyName(key), " not found"));
  SF_RETURN_IF_ERROR(FromRocks(s, absl::StrCat("get ", KeyName(key))));
  return value;
}

absl::Status RecordStore::Delete(std::string_view key, bool sync) {
  if (key.empty()) return absl::InvalidArgumentError("record store delete: empty key");
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return FromRocks(impl_->db->Delete(wo, rocksdb::Slice(key.data(), key.size())),
                   absl::StrCat("delete ", KeyName(key)));
}

absl::StatusOr<std::vector<Record>> RecordStore::Scan(std::string_view prefix) const {
  std::vector<Record> out;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions()));
  const rocksdb::Slice start(prefix.data(), prefix.size());
  for (it->Seek(start); it->Valid() && it->key().starts_with(start); it->Next()) {
    out.push_back(Record{it->key().ToString(), it->value().ToString()});
  }
  SF_RETURN_IF_ERROR(
      FromRocks(it->status(), absl::StrCat("scan prefix ", KeyName(prefix), " of ", impl_->path)));
  return out;
}

}  // namespace sparsefill::kvstore
