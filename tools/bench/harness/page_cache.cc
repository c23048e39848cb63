#include "tools/bench/harness/page_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;

absl::Status Errno(const std::string& what, const std::string& path, int err) {
  return absl::InternalError(absl::StrCat(what, " '", path, "': ", std::strerror(err)));
}

// Calls `fn` for every regular file at or under `path`.
absl::Status ForEachFile(const std::string& path,
                         const std::function<absl::Status(const std::string&)>& fn) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("'", path, "': ", ec.message()));
  if (fs::is_regular_file(st)) return fn(path);
  if (!fs::is_directory(st)) return absl::OkStatus();
  for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_regular_file(ec2)) SF_RETURN_IF_ERROR(fn(it->path().string()));
  }
  if (ec) return absl::InternalError(absl::StrCat("listing '", path, "': ", ec.message()));
  return absl::OkStatus();
}

absl::Status EvictFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    // Files a live database deletes while we walk (obsolete WAL, compaction inputs) are fine.
    if (errno == ENOENT) return absl::OkStatus();
    return Errno("open", path, errno);
  }
  // DONTNEED skips dirty pages, so write them back first.
  absl::Status status;
  if (fdatasync(fd) != 0) status = Errno("fdatasync", path, errno);
  const int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  if (status.ok() && rc != 0) status = Errno("posix_fadvise(DONTNEED)", path, rc);
  close(fd);
  return status;
}

absl::Status AddResidency(const std::string& path, Residency& r) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return Errno("open", path, errno);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return Errno("fstat", path, err);
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  r.files += 1;
  r.bytes += size;
  if (size == 0) {
    close(fd);
    return absl::OkStatus();
  }
  // Mapping does not fault pages in; mincore only reports what the page cache holds.
  void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int map_err = errno;
  close(fd);
  if (map == MAP_FAILED) return Errno("mmap", path, map_err);
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t pages = (size + page - 1) / page;
  std::vector<unsigned char> vec(pages);
  absl::Status status;
  if (mincore(map, size, vec.data()) != 0) {
    status = Errno("mincore", path, errno);
  } else {
    for (uint64_t i = 0; i < pages; ++i) {
      if (vec[i] & 1) r.resident_bytes += (i + 1 == pages) ? size - i * page : page;
    }
  }
  munmap(map, size);
  return status;
}

}  // namespace

nlohmann::json Residency::ToJson() const {
  return {{"files", files},
          {"bytes", bytes},
          {"resident_bytes", resident_bytes},
          {"resident_fraction", fraction()}};
}

absl::Status EvictFromPageCache(const std::string& path) { return ForEachFile(path, EvictFile); }

absl::StatusOr<Residency> MeasureResidency(const std::string& path) {
  Residency r;
  SF_RETURN_IF_ERROR(
      ForEachFile(path, [&r](const std::string& file) { return AddResidency(file, r); }));
  return r;
}

absl::StatusOr<Residency> EvictAndMeasure(const std::string& path) {
  SF_RETURN_IF_ERROR(EvictFromPageCache(path));
  return MeasureResidency(path);
}

uint64_t DiskUsageBytes(const std::string& path) {
  uint64_t total = 0;
  IgnoreError(ForEachFile(path,
                          [&total](const std::string& file) {
                            std::error_code ec;
                            const uintmax_t n = fs::file_size(file, ec);
                            if (!ec) total += n;
                            return absl::OkStatus();
                          }),
              "a size for the report only; a file vanishing mid-walk just is not counted");
  return total;
}

}  // namespace sparsefill::bench
