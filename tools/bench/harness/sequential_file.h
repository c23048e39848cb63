// The physical-limit baseline of disk benchmarks: a plain file written sequentially with
// write() in large chunks and fsync'd, then read back sequentially with read(). Only the time
// inside the system calls is counted, so callers can prepare or verify data between calls
// without it showing in the figure.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/bench/harness/timing.h"

namespace sparsefill::bench {

class SequentialWriter {
 public:
  // Creates (truncating) `path`. chunk_bytes: the most one write() gets.
  static absl::StatusOr<SequentialWriter> Create(const std::string& path, size_t chunk_bytes);
  SequentialWriter(SequentialWriter&& o) noexcept;
  SequentialWriter& operator=(SequentialWriter&&) = delete;
  ~SequentialWriter();

  [[nodiscard]] absl::Status Append(std::span<const uint8_t> data);
  // fsync + close; counted in seconds(), since durability is part of a write's cost.
  [[nodiscard]] absl::Status Finish();
  double seconds() const { return watch_.Seconds(); }
  uint64_t bytes() const { return bytes_; }

 private:
  SequentialWriter(int fd, std::string path, size_t chunk) : fd_(fd), path_(path), chunk_(chunk) {}
  int fd_ = -1;
  std::string path_;
  size_t chunk_ = 0;
  uint64_t bytes_ = 0;
  Stopwatch watch_;
};

class SequentialReader {
 public:
  static absl::StatusOr<SequentialReader> Open(const std::string& path);
  SequentialReader(SequentialReader&& o) noexcept;
  SequentialReader& operator=(SequentialReader&&) = delete;
  ~SequentialReader();

  // Fills `out` completely (several read() calls if needed); OutOfRange when the file ends first.
  [[nodiscard]] absl::Status ReadFull(std::span<uint8_t> out);
  double seconds() const { return watch_.Seconds(); }
  uint64_t bytes() const { return bytes_; }

 private:
  SequentialReader(int fd, std::string path) : fd_(fd), path_(path) {}
  int fd_ = -1;
  std::string path_;
  uint64_t bytes_ = 0;
  Stopwatch watch_;
};

}  // namespace sparsefill::bench
