#include "tools/bench/harness/plain_file.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "tools/bench/harness/device_info.h"
#include "tools/bench/harness/sequential_file.h"
#include "tools/bench/harness/timing.h"

namespace sparsefill::bench {
namespace {

// The file is scratch: it goes on every exit path, errors included, so a failed run does not
// leave gigabytes behind.
class RemoveOnExit {
 public:
  RemoveOnExit(std::string path, bool active) : path_(std::move(path)), active_(active) {}
  ~RemoveOnExit() {
    std::error_code ec;
    if (active_) std::filesystem::remove(path_, ec);
  }

 private:
  std::string path_;
  bool active_;
};

}  // namespace

double PlainFileResult::write_gbps() const { return GBps(bytes, write_seconds); }
double PlainFileResult::read_gbps() const { return GBps(bytes, read_seconds); }

nlohmann::json PlainFileResult::ToJson() const {
  return {{"bytes", bytes},
          {"write_seconds", write_seconds},
          {"write_gbps", write_gbps()},
          {"read_seconds", read_seconds},
          {"read_gbps", read_gbps()},
          {"meminfo_cached_before_evict", cached_before_evict},
          {"meminfo_cached_after_evict", cached_after_evict},
          {"residency_before_read", before_read.ToJson()},
          {"read_from_disk", read_from_disk}};
}

absl::StatusOr<PlainFileResult> RunPlainFile(const PlainFileOptions& options, const PieceFn& fill) {
  if (options.pieces <= 0 || options.piece_bytes == 0 || options.chunk_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RunPlainFile: pieces (", options.pieces, "), piece_bytes (", options.piece_bytes,
        ") and chunk_bytes (", options.chunk_bytes, ") must be positive"));
  }
  RemoveOnExit remove(options.path, !options.keep_file);
  PlainFileResult r;
  std::vector<uint8_t> piece(options.piece_bytes);
  {
    SF_ASSIGN_OR_RETURN(SequentialWriter writer,
                        SequentialWriter::Create(options.path, options.chunk_bytes));
    for (int64_t i = 0; i < options.pieces; ++i) {
      SF_RETURN_IF_ERROR(fill(i, piece));
      SF_RETURN_IF_ERROR(writer.Append(piece));
    }
    SF_RETURN_IF_ERROR(writer.Finish());
    r.bytes = writer.bytes();
    r.write_seconds = writer.seconds();
  }

  r.cached_before_evict = MeminfoBytes("Cached");
  SF_ASSIGN_OR_RETURN(r.before_read, EvictAndMeasure(options.path));
  r.cached_after_evict = MeminfoBytes("Cached");
  r.read_from_disk = r.before_read.fraction() < 0.01;

  {
    std::vector<uint8_t> got(options.piece_bytes);
    SF_ASSIGN_OR_RETURN(SequentialReader reader, SequentialReader::Open(options.path));
    for (int64_t i = 0; i < options.pieces; ++i) {
      for (size_t off = 0; off < got.size(); off += options.chunk_bytes) {
        const size_t n = std::min(options.chunk_bytes, got.size() - off);
        SF_RETURN_IF_ERROR(reader.ReadFull(std::span<uint8_t>(got).subspan(off, n)));
      }
      SF_RETURN_IF_ERROR(fill(i, piece));
      if (std::memcmp(got.data(), piece.data(), piece.size()) != 0) {
        return absl::DataLossError(absl::StrCat("plain file '", options.path, "': piece ", i,
                                                " read back differs from what was written"));
      }
    }
    r.read_seconds = reader.seconds();
  }
  return r;
}

}  // namespace sparsefill::bench
