#include "tools/bench/harness/sequential_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sparsefill::bench {
namespace {

absl::Status Errno(const char* what, const std::string& path, int err) {
  return absl::InternalError(absl::StrCat(what, " '", path, "': ", std::strerror(err)));
}

}  // namespace

absl::StatusOr<SequentialWriter> SequentialWriter::Create(const std::string& path,
                                                          size_t chunk_bytes) {
  if (chunk_bytes == 0) return absl::InvalidArgumentError("SequentialWriter: chunk_bytes is 0");
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create", path, errno);
  return SequentialWriter(fd, path, chunk_bytes);
}

SequentialWriter::SequentialWriter(SequentialWriter&& o) noexcept
    : fd_(o.fd_), path_(std::move(o.path_)), chunk_(o.chunk_), bytes_(o.bytes_), watch_(o.watch_) {
  o.fd_ = -1;
}

SequentialWriter::~SequentialWriter() {
  if (fd_ >= 0) close(fd_);
}

absl::Status SequentialWriter::Append(std::span<const uint8_t> data) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
  watch_.Start();
  size_t done = 0;
  while (done < data.size()) {
    const size_t n = std::min(chunk_, data.size() - done);
    const ssize_t w = write(fd_, data.data() + done, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      watch_.Stop();
      return Errno("write", path_, err);
    }
    done += static_cast<size_t>(w);
  }
  watch_.Stop();
  bytes_ += done;
  return absl::OkStatus();
}

absl::Status SequentialWriter::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
  watch_.Start();
  const int rc = fsync(fd_);
  const int err = errno;
  const int crc = close(fd_);
  watch_.Stop();
  fd_ = -1;
  if (rc != 0) return Errno("fsync", path_, err);
  if (crc != 0) return Errno("close", path_, errno);
  return absl::OkStatus();
}

absl::StatusOr<SequentialReader> SequentialReader::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open", path, errno);
  // The kernel's readahead window grows for sequential access; say so up front.
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return SequentialReader(fd, path);
}

SequentialReader::SequentialReader(SequentialReader&& o) noexcept
    : fd_(o.fd_), path_(std::move(o.path_)), bytes_(o.bytes_), watch_(o.watch_) {
  o.fd_ = -1;
}

SequentialReader::~SequentialReader() {
  if (fd_ >= 0) close(fd_);
}

absl::Status SequentialReader::ReadFull(std::span<uint8_t> out) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
  watch_.Start();
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t r = read(fd_, out.data() + done, out.size() - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      watch_.Stop();
      return Errno("read", path_, err);
    }
    if (r == 0) {
      watch_.Stop();
      return absl::OutOfRangeError(absl::StrCat("'", path_, "' ended after ", bytes_ + done,
                                                " bytes; ", out.size() - done, " more wanted"));
    }
    done += static_cast<size_t>(r);
  }
  watch_.Stop();
  bytes_ += done;
  return absl::OkStatus();
}

}  // namespace sparsefill::bench
