#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kvstore/kv_store.h"

namespace sparsefill::kvstore {

absl::Status PlacementOptions::Validate() const {
  if (init_blocks < 0 || local_blocks < 0 || hot_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement init_blocks (", init_blocks, "), local_blocks (", local_blocks,
                     ") and hot_blocks (", hot_blocks, ") must be >= 0"));
  }
  // Init and local blocks are unconditionally hot, so they have to fit in the hot budget.
  if (hot_blocks > 0 && int64_t{init_blocks} + local_blocks > hot_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("placement init_blocks + local_blocks (",
                                                   init_blocks, " + ", local_blocks,
                                                   ") exceeds hot_blocks (", hot_blocks, ")"));
  }
  return absl::OkStatus();
}

absl::Status RocksDbOptions::Validate() const {
  if (min_blob_size == 0) {
    return absl::InvalidArgumentError("rocksdb min_blob_size must be > 0");
  }
  if (blob_file_size < (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rocksdb blob_file_size must be >= 1 MiB, got ", blob_file_size));
  }
  if (write_buffer_size < (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rocksdb write_buffer_size must be >= 1 MiB, got ", write_buffer_size));
  }
  if (max_write_buffer_number < 2 || max_write_buffer_number > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rocksdb max_write_buffer_number must be in [2, 64], got ", max_write_buffer_number));
  }
  if (max_background_jobs < 1 || max_background_jobs > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("rocksdb max_background_jobs must be in [1, 256], got ", max_background_jobs));
  }
  return absl::OkStatus();
}

absl::Status KvStoreOptions::Validate() const {
  if (path.empty()) return absl::InvalidArgumentError("kvstore path is required");
  if (default_ttl_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kvstore default_ttl_ms must be >= 0, got ", default_ttl_ms));
  }
  if (absl::Status s = placement.Validate(); !s.ok()) return s;
  if (absl::Status s = rocksdb.Validate(); !s.ok()) return s;
  if (device_tier && device_tier->Capabilities().tier != Tier::kDevice) {
    return absl::InvalidArgumentError(
        absl::StrCat("kvstore device_tier declares tier ",
                     sparsefill::AsAbsl(TierName(device_tier->Capabilities().tier))));
  }
  if (host_tier && host_tier->Capabilities().tier != Tier::kHost) {
    return absl::InvalidArgumentError(
        absl::StrCat("kvstore host_tier declares tier ",
                     sparsefill::AsAbsl(TierName(host_tier->Capabilities().tier))));
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kvstore
