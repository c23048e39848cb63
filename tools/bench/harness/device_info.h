// What a result was measured on: the CPU, memory, and the filesystem and disk that hold the
// benchmark's data directory (Linux: /proc/cpuinfo, /proc/meminfo, /proc/mounts, statfs, sysfs).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace sparsefill::bench {

struct StorageInfo {
  std::string path;         // the data directory, resolved
  std::string mount_point;  // longest /proc/mounts prefix of `path`
  std::string filesystem;   // e.g. "ext4"
  std::string source;       // e.g. "/dev/vda1"
  std::string mount_options;
  uint64_t size_bytes = 0;  // statfs
  uint64_t free_bytes = 0;  // available to this user
  std::string disk;         // the whole-disk block device, e.g. "vda" ("" when not a block dev)
  std::string disk_model;   // sysfs model/vendor when the driver exposes it
  int rotational = -1;      // 1 spinning, 0 solid-state, -1 unknown
  uint64_t disk_bytes = 0;  // size of the whole disk
};

struct DeviceInfo {
  std::string hostname;
  std::string cpu_model;
  int logical_cores = 0;
  uint64_t memory_bytes = 0;
  uint64_t memory_available_bytes = 0;  // at probe time
  std::string kernel;
  StorageInfo storage;  // empty path when no data directory applies
  nlohmann::json ToJson() const;
  // Short, file-name-safe name of the machine, e.g. "amd-epyc-2c-24g".
  std::string Tag() const;
};

// `data_dir` may be empty (no storage section); it must exist otherwise.
absl::StatusOr<DeviceInfo> ProbeDevice(const std::string& data_dir);

// Storage of one directory (NotFound when it does not exist).
absl::StatusOr<StorageInfo> ProbeStorage(const std::string& dir);

// A /proc/meminfo field in bytes ("MemAvailable", "Cached", "Dirty"); 0 when absent.
uint64_t MeminfoBytes(const std::string& field);

}  // namespace sparsefill::bench
