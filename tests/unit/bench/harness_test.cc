// The bench harness: statistics, page-cache control, the plain-file baseline and the result
// document. Sizes are tiny; these check behaviour, not speed.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/compare.h"
#include "tools/bench/harness/device_info.h"
#include "tools/bench/harness/page_cache.h"
#include "tools/bench/harness/plain_file.h"
#include "tools/bench/harness/report.h"
#include "tools/bench/harness/timing.h"

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;

TEST(Samples, MedianMinMax) {
  Samples odd{{3.0, 1.0, 2.0}};
  EXPECT_DOUBLE_EQ(odd.median(), 2.0);
  EXPECT_DOUBLE_EQ(odd.min(), 1.0);
  EXPECT_DOUBLE_EQ(odd.max(), 3.0);
  Samples even{{4.0, 1.0, 3.0, 2.0}};
  EXPECT_DOUBLE_EQ(even.median(), 2.5);
  EXPECT_DOUBLE_EQ(Samples{}.median(), 0.0);
  EXPECT_DOUBLE_EQ(ToGBps(2'000'000'000, Samples{{1.0, 4.0}}).max(), 2.0);
}

TEST(TimeRepeated, DropsWarmupAndStopsOnError) {
  int calls = 0;
  absl::StatusOr<Samples> s = TimeRepeated({.warmup = 2, .repeats = 3}, [&]() {
    return absl::StatusOr<double>(static_cast<double>(++calls));
  });
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(calls, 5);
  EXPECT_EQ(s->values, (std::vector<double>{3.0, 4.0, 5.0}));

  calls = 0;
  s = TimeRepeated({.warmup = 0, .repeats = 4}, [&]() -> absl::StatusOr<double> {
    if (++calls == 2) return absl::DataLossError("boom");
    return 1.0;
  });
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(TimeRepeated({.warmup = 0, .repeats = 0}, [] { return absl::StatusOr<double>(1.0); })
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PageCache, EvictThenReadBringsFileBack) {
  const std::string dir = testing::MakeTempDir("bench_page_cache");
  const std::string path = dir + "/f";
  const size_t n = 8u << 20;
  {
    std::vector<char> data(n, 'x');
    std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(n));
  }
  absl::StatusOr<Residency> evicted = EvictAndMeasure(dir);
  ASSERT_TRUE(evicted.ok()) << evicted.status();
  EXPECT_EQ(evicted->files, 1);
  EXPECT_EQ(evicted->bytes, n);
  // DONTNEED is advice; on every Linux filesystem we run on it drops clean pages.
  EXPECT_LT(evicted->fraction(), 0.5);
  {
    std::vector<char> back(n);
    std::ifstream(path, std::ios::binary).read(back.data(), static_cast<std::streamsize>(n));
  }
  absl::StatusOr<Residency> read = MeasureResidency(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_GT(read->fraction(), 0.9);
  EXPECT_EQ(DiskUsageBytes(dir), n);
  EXPECT_EQ(MeasureResidency(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(PlainFile, RoundTripsAndCatchesWrongBytes) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  const std::string dir = testing::MakeTempDir("bench_plain");
  PlainFileOptions opt;
  opt.path = dir + "/plain";
  opt.pieces = 5;
  opt.piece_bytes = (1u << 20) + 4096 * 3;
  opt.chunk_bytes = 300000;  // not a divisor: exercises partial chunks
  auto fill = [seed](int64_t piece, std::span<uint8_t> out) {
    Rng rng(seed + static_cast<uint64_t>(piece));
    for (auto& b : out) b = static_cast<uint8_t>(rng.NextU64());
    return absl::OkStatus();
  };
  absl::StatusOr<PlainFileResult> r = RunPlainFile(opt, fill);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->bytes, 5 * opt.piece_bytes);
  EXPECT_GT(r->write_seconds, 0.0);
  EXPECT_GT(r->read_seconds, 0.0);
  EXPECT_FALSE(fs::exists(opt.path));  // scratch file removed

  // A fill that changes between write and check is caught.
  int calls = 0;
  auto unstable = [&](int64_t piece, std::span<uint8_t> out) {
    std::memset(out.data(), calls++ < opt.pieces ? 1 : 2, out.size());
    return absl::OkStatus();
  };
  EXPECT_EQ(RunPlainFile(opt, unstable).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(opt.path));
  opt.pieces = 0;
  EXPECT_EQ(RunPlainFile(opt, fill).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Device, ProbesCpuMemoryAndStorage) {
  const std::string dir = testing::MakeTempDir("bench_device");
  absl::StatusOr<DeviceInfo> d = ProbeDevice(dir);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_GT(d->logical_cores, 0);
  EXPECT_GT(d->memory_bytes, 0u);
  EXPECT_FALSE(d->storage.mount_point.empty());
  EXPECT_FALSE(d->storage.filesystem.empty());
  EXPECT_GT(d->storage.size_bytes, 0u);
  const std::string tag = d->Tag();
  EXPECT_EQ(tag.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-"), std::string::npos)
      << tag;
  EXPECT_EQ(ProbeDevice(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(Report, DocumentHasEveryFieldAndAFileName) {
  const std::string dir = testing::MakeTempDir("bench_report");
  absl::StatusOr<DeviceInfo> d = ProbeDevice("");
  ASSERT_TRUE(d.ok()) << d.status();
  Report r;
  r.benchmark = "unit";
  r.config = {{"n", 1}};
  r.results = {{"x_gbps", 2.5}};
  r.ratios = {{"x_vs_y", 0.5}};
  const nlohmann::json doc =
      BuildDocument(r, *d, {"bench", "unit", "--flag", "a b"}, "2030-01-02T03:04:05Z");
  for (const char* key :
       {"benchmark", "device", "date", "command", "commit", "config", "results", "ratios"}) {
    EXPECT_TRUE(doc.contains(key)) << key;
  }
  EXPECT_EQ(doc["command"], "bench unit --flag 'a b'");
  EXPECT_TRUE(doc["commit"].contains("dirty"));
  const std::string hash = doc["commit"]["hash"].get<std::string>();
  EXPECT_TRUE(hash.size() == 40 || hash == "unknown") << hash;
  absl::StatusOr<std::string> path = WriteDocument(doc, dir + "/results");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(fs::path(*path).filename().string(), "unit-" + d->Tag() + "-20300102T030405Z.json");
  std::ifstream in(*path);
  const nlohmann::json back = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(back.is_discarded());
  EXPECT_EQ(back["ratios"]["x_vs_y"], 0.5);
}

TEST(Table, AlignsColumns) {
  Table t({"phase", "GB/s"});
  t.AddRow({"plain", Fixed(1.234)});
  t.AddRow({"rocksdb tier", Fixed(12.5, 1)});
  EXPECT_EQ(t.ToString(),
            "phase         GB/s\n"
            "------------------\n"
            "plain         1.23\n"
            "rocksdb tier  12.5\n");
}

}  // namespace
}  // namespace sparsefill::bench
