// A small durable key -> value map for control-plane records (the coordinator's cache registry):
// a few thousand short values, written rarely, read back whole at start-up. RocksDB underneath
// (private to services/kvstore/rocksdb, DESIGN §2), so this header carries no RocksDB types.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sparsefill::kvstore {

struct Record {
  std::string key;
  std::string value;
};

class RecordStore {
 public:
  // Opens (creating) the database in directory `path`. Errors name the path; a directory locked
  // by another open store is UNAVAILABLE.
  static absl::StatusOr<std::unique_ptr<RecordStore>> Open(std::string_view path);
  ~RecordStore();
  RecordStore(const RecordStore&) = delete;
  RecordStore& operator=(const RecordStore&) = delete;

  // `sync`: the write is on disk before this returns (survives a machine crash, not only a
  // process crash). Empty keys are InvalidArgument.
  [[nodiscard]] absl::Status Put(std::string_view key, std::string_view value, bool sync);
  // NOT_FOUND naming the key when absent.
  absl::StatusOr<std::string> Get(std::string_view key) const;
  // Deleting an absent key is OK (idempotent, like the registry's DeleteCache).
  [[nodiscard]] absl::Status Delete(std::string_view key, bool sync);
  // Every record whose key starts with `prefix`, in key order ("" scans everything).
  absl::StatusOr<std::vector<Record>> Scan(std::string_view prefix) const;

  const std::string& path() const;

 private:
  struct Impl;
  explicit RecordStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparsefill::kvstore
