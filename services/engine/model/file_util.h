// Small POSIX file helpers shared by the checkpoint reader and writers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sparsefill::engine::model_internal {

// Maps errno of a failed file operation on `path` to a Status with a fitting code.
absl::Status ErrnoStatus(int err, std::string_view what, std::string_view path);

// A regular file opened read-only (the caller closes fd): NotFound/PermissionDenied/... from
// errno, InvalidArgument naming the path when it is not a regular file.
struct OpenedFile {
  int fd = -1;
  uint64_t size = 0;
};
absl::StatusOr<OpenedFile> OpenRegularFile(const std::string& path);

// Whole file as a string; InvalidArgument when larger than `max_bytes`.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes);

// Writes `bytes` to `fd` completely (retrying short writes and EINTR).
absl::Status WriteAll(int fd, const void* bytes, size_t n, std::string_view path);

// Writes `contents` to `path` through a temp file in the same directory + fsync + rename, so a
// reader sees either the old file or the whole new one.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents);

// A unique temp name next to `path` for the write-then-rename pattern.
std::string TempPathFor(const std::string& path);

}  // namespace sparsefill::engine::model_internal
