// `bench disk`: sequential write + fsync and cold sequential read of one plain file: the
// physical limit that storage benchmarks (kvstore, load) compare against, on its own.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/common/status.h"
#include "tools/bench/commands.h"
#include "tools/bench/harness/plain_file.h"
#include "tools/bench/harness/timing.h"

namespace sparsefill::bench {
namespace {

constexpr size_t kPieceBytes = 64ull << 20;

absl::Status Validate(const DiskArgs& a) {
  if (!(a.size_gib > 0) || a.size_gib > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("--size-gib must be in (0, 4096], got ", a.size_gib));
  }
  if (a.chunk_mib < 1 || a.chunk_mib > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--chunk-mib must be in [1, 1024], got ", a.chunk_mib));
  }
  if (a.repeats < 1)
    return absl::InvalidArgumentError(absl::StrCat("--repeats must be >= 1, got ", a.repeats));
  return absl::OkStatus();
}

absl::Status Run(const DiskArgs& args, int* exit_code) {
  SF_RETURN_IF_ERROR(Validate(args));
  const std::string date = UtcIsoNow();
  std::error_code ec;
  std::filesystem::create_directories(args.dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("creating --dir '", args.dir, "': ", ec.message()));
  SF_ASSIGN_OR_RETURN(DeviceInfo device, ProbeDevice(args.dir));

  const int64_t pieces = std::max<int64_t>(
      1, static_cast<int64_t>(std::llround(args.size_gib * double(1ull << 30) / kPieceBytes)));
  const uint64_t bytes = static_cast<uint64_t>(pieces) * kPieceBytes;
  if (bytes + (1ull << 30) > device.storage.free_bytes) {
    return absl::FailedPreconditionError(
        absl::StrCat("--dir '", args.dir, "' has ", device.storage.free_bytes >> 20,
                     " MiB free; the run needs ", (bytes >> 20) + 1024, " MiB"));
  }

  // Random bytes (incompressible, in case the filesystem or device compresses); each piece is
  // stamped with its index so a read returning the wrong offset cannot pass the check.
  std::vector<uint8_t> base(kPieceBytes);
  Rng rng(0x5eed);
  for (size_t i = 0; i < base.size(); i += 8) {
    const uint64_t x = rng.NextU64();
    std::memcpy(base.data() + i, &x, 8);
  }
  auto fill = [&base](int64_t piece, std::span<uint8_t> out) {
    std::memcpy(out.data(), base.data(), out.size());
    std::memcpy(out.data(), &piece, sizeof(piece));
    return absl::OkStatus();
  };

  PlainFileOptions opt;
  opt.path = (std::filesystem::path(args.dir) / "bench-disk.plain").string();
  opt.pieces = pieces;
  opt.piece_bytes = kPieceBytes;
  opt.chunk_bytes = static_cast<size_t>(args.chunk_mib) << 20;

  Samples write_gbps, read_gbps;
  nlohmann::json runs = nlohmann::json::array();
  bool all_from_disk = true;
  for (int r = 0; r < args.repeats; ++r) {
    SF_ASSIGN_OR_RETURN(PlainFileResult res, RunPlainFile(opt, fill));
    write_gbps.values.push_back(res.write_gbps());
    read_gbps.values.push_back(res.read_gbps());
    all_from_disk = all_from_disk && res.read_from_disk;
    runs.push_back(res.ToJson());
    std::printf("repeat %d: write %.2f GB/s, read %.2f GB/s (%.1f%% cached before read)\n", r,
                res.write_gbps(), res.read_gbps(), 100.0 * res.before_read.fraction());
  }

  Report report;
  report.benchmark = "disk";
  report.config = {{"dir", args.dir},
                   {"bytes", bytes},
                   {"chunk_bytes", opt.chunk_bytes},
                   {"repeats", args.repeats}};
  report.results = {{"plain_file",
                     {{"write_gbps", write_gbps.ToJson()},
                      {"read_gbps", read_gbps.ToJson()},
                      {"read_from_disk", all_from_disk},
                      {"runs", runs}}}};
  if (!all_from_disk) {
    report.notes.push_back("part of the file was still in the page cache when a read began");
  }
  Table t({"phase", "GB/s (median)", "min", "max"});
  t.AddRow({"plain write+fsync", Fixed(write_gbps.median()), Fixed(write_gbps.min()),
            Fixed(write_gbps.max())});
  t.AddRow({"plain read (cold)", Fixed(read_gbps.median()), Fixed(read_gbps.min()),
            Fixed(read_gbps.max())});
  *exit_code = Publish(report, device, args.common, date, t.ToString());
  return absl::OkStatus();
}

}  // namespace

CLI::App* AddDiskCommand(CLI::App& app, DiskArgs& args) {
  CLI::App* sub = app.add_subcommand("disk", "plain sequential file write/read (the disk's limit)");
  args.dir = DefaultDataDir();
  sub->add_option("--dir", args.dir, "data directory (on the disk to measure)")
      ->capture_default_str();
  sub->add_option("--size-gib", args.size_gib, "file size in GiB")->capture_default_str();
  sub->add_option("--chunk-mib", args.chunk_mib, "bytes per write()/read() call, MiB")
      ->capture_default_str();
  sub->add_option("--repeats", args.repeats, "measured runs (median reported)")
      ->capture_default_str();
  AddCommonFlags(*sub, args.common);
  return sub;
}

int RunDisk(const DiskArgs& args) {
  int exit_code = 0;
  const absl::Status s = Run(args, &exit_code);
  return s.ok() ? exit_code : Fail("disk", s);
}

}  // namespace sparsefill::bench
