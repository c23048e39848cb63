// `bench kvstore`: write and read throughput of a long-prompt KV cache into each KV store tier,
// side by side in one run with a plain sequential file of the same bytes on the same disk (the
// physical limit). Acceptance (issue "KV store"): the RocksDB tier writes and reads at >= 50%
// of the plain-file figures of the same run.
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kvstore/kv_store.h"
#include "tools/bench/commands.h"
#include "tools/bench/harness/device_info.h"
#include "tools/bench/kvstore/kv_data.h"
#include "tools/bench/kvstore/kvstore_phases.h"

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;
using kvstore::CacheLayout;

constexpr double kAcceptRatio = 0.5;

absl::Status Validate(const KvStoreArgs& a) {
  if (a.tokens < 1 || a.layers < 1 || a.kv_heads < 1 || a.head_dim < 1 || a.block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tokens (", a.tokens, "), --layers (", a.layers, "), --kv-heads (", a.kv_heads,
        "), --head-dim (", a.head_dim, ") and --block-size (", a.block_size, ") must all be >= 1"));
  }
  if (a.repeats < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--repeats must be >= 1, got ", a.repeats));
  }
  if (a.chunk_mib < 1 || a.chunk_mib > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--chunk-mib must be in [1, 1024], got ", a.chunk_mib));
  }
  if (a.read_threads < 1 || a.read_threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--read-threads must be in [1, 64], got ", a.read_threads));
  }
  if (a.blob_file_mib < 0 || a.blob_file_mib > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("--blob-file-mib must be in [0, 65536], got ", a.blob_file_mib));
  }
  return absl::OkStatus();
}

// Median of per-repeat ratios: each ratio compares figures taken minutes apart on one disk.
double MedianRatio(const Samples& num, const Samples& den) {
  Samples r;
  for (size_t i = 0; i < num.values.size() && i < den.values.size(); ++i) {
    r.values.push_back(den.values[i] > 0 ? num.values[i] / den.values[i] : 0.0);
  }
  return r.median();
}

nlohmann::json RocksDbUsed(const kvstore::RocksDbOptions& d) {
  return {{"min_blob_size", d.min_blob_size},
          {"blob_file_size", d.blob_file_size},
          {"write_buffer_size", d.write_buffer_size},
          {"max_background_jobs", d.max_background_jobs},
          {"blob_garbage_collection", d.blob_garbage_collection},
          {"block_cache_bytes", d.block_cache_bytes},
          {"use_direct_reads", d.use_direct_reads},
          {"advise_random_on_open", d.advise_random_on_open},
          {"verify_rocksdb_checksums", d.verify_rocksdb_checksums},
          {"blocks_bypass_wal", d.blocks_bypass_wal}};
}

struct Collected {
  Samples plain_write, plain_read, disk_write, disk_write_close, disk_read, disk_read_single,
      disk_read_threads, host_write, host_read, raw_put, raw_get;
  nlohmann::json plain_runs = nlohmann::json::array();
  nlohmann::json disk_runs = nlohmann::json::array();
  nlohmann::json host_runs = nlohmann::json::array();
  nlohmann::json raw_runs = nlohmann::json::array();
  bool plain_from_disk = true, disk_from_disk = true, reads_counted = true;
};

absl::Status Run(const KvStoreArgs& args, int* exit_code) {
  SF_RETURN_IF_ERROR(Validate(args));
  const std::string date = UtcIsoNow();
  CacheLayout layout;
  layout.dtype = DType::kBF16;
  layout.num_layers = args.layers;
  layout.kv_heads = args.kv_heads;
  layout.head_dim = args.head_dim;
  layout.block_size = args.block_size;
  layout.num_tokens = args.tokens;
  SF_RETURN_IF_ERROR(layout.Validate());
  const uint64_t cache_bytes = layout.total_bytes();

  std::error_code ec;
  fs::create_directories(args.dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("creating --dir '", args.dir, "': ", ec.message()));
  SF_ASSIGN_OR_RETURN(DeviceInfo device, ProbeDevice(args.dir));
  // Peak disk use: one copy of the cache at a time (each phase removes its files), plus the
  // RocksDB WAL and blob-file slack.
  const uint64_t disk_needed = cache_bytes + cache_bytes / 4 + (2ull << 30);
  if (device.storage.free_bytes < disk_needed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--dir '", args.dir, "' has ", device.storage.free_bytes >> 20, " MiB free; a ",
        cache_bytes >> 20, " MiB cache needs about ", disk_needed >> 20, " MiB"));
  }
  std::printf(
      "bench kvstore: %d layers x %d KV heads x %lld blocks of %d tokens (head_dim %d, "
      "bf16) = %.2f GB per cache, in %s (%s on %s)\n",
      layout.num_layers, layout.kv_heads, static_cast<long long>(layout.num_blocks()),
      layout.block_size, layout.head_dim, cache_bytes / 1e9, device.storage.path.c_str(),
      device.storage.filesystem.c_str(), device.storage.source.c_str());

  std::printf("generating %.2f GB of fp32 K/V...\n",
              2.0 * layout.num_tokens * layout.kv_heads * layout.head_dim * 4 / 1e9);
  SF_ASSIGN_OR_RETURN(SyntheticKv kv, SyntheticKv::Make(layout, args.seed));
  SF_ASSIGN_OR_RETURN(Samples convert_layer_s, TimeConversion(kv, 3));
  const double convert_gbps = GBps(kv.layer_bytes(), convert_layer_s.median());
  std::printf("fp32 -> bf16 conversion alone: %.2f GB/s (%.3f s per layer)\n", convert_gbps,
              convert_layer_s.median());

  const std::string plain_path = (fs::path(args.dir) / "kvstore-bench.plain").string();
  const std::string disk_db = (fs::path(args.dir) / "kvstore-bench-rocksdb").string();
  const std::string host_db = (fs::path(args.dir) / "kvstore-bench-host").string();
  const size_t chunk = static_cast<size_t>(args.chunk_mib) << 20;
  Collected c;
  DiskTierOptions disk_options;
  disk_options.read_threads = args.read_threads;
  if (args.blob_file_mib > 0)
    disk_options.rocksdb.blob_file_size = static_cast<uint64_t>(args.blob_file_mib) << 20;
  nlohmann::json notes = nlohmann::json::array();
  bool host_ran = false;
  for (int rep = 0; rep < args.repeats; ++rep) {
    std::printf("repeat %d: plain file...\n", rep);
    std::fflush(stdout);
    SF_ASSIGN_OR_RETURN(PlainFileResult plain, RunPlainPhase(kv, plain_path, chunk));
    c.plain_write.values.push_back(plain.write_gbps());
    c.plain_read.values.push_back(plain.read_gbps());
    c.plain_from_disk = c.plain_from_disk && plain.read_from_disk;
    c.plain_runs.push_back(plain.ToJson());
    std::printf("  plain: write %.2f GB/s, read %.2f GB/s (%.1f%% cached before read)\n",
                plain.write_gbps(), plain.read_gbps(), 100 * plain.before_read.fraction());

    std::printf("repeat %d: RocksDB tier through KvStore (hot_blocks = 0)...\n", rep);
    std::fflush(stdout);
    SF_ASSIGN_OR_RETURN(StoreRunResult disk, RunDiskTierPhase(kv, disk_db, disk_options));
    c.disk_write.values.push_back(disk.write_gbps());
    c.disk_write_close.values.push_back(disk.write_through_close_gbps());
    c.disk_read.values.push_back(disk.read_gbps());
    for (const ColdRead& cold : disk.reads) {
      c.disk_from_disk = c.disk_from_disk && cold.read_from_disk;
      c.reads_counted = c.reads_counted && cold.reads_from_tier == disk.blocks;
      if (cold.mode == ReadMode::kBlockByBlock) c.disk_read_single.values.push_back(cold.gbps());
      if (cold.threads > 1) c.disk_read_threads.values.push_back(cold.gbps());
      std::printf(
          "  rocksdb read, %s, %d thread(s): %.2f GB/s (%.1f%% cached before read, %lld of "
          "%lld reads from disk)\n",
          cold.mode == ReadMode::kBatched ? "ReadBlocks per run" : "ReadBlock per block",
          cold.threads, cold.gbps(), 100 * cold.before_read.fraction(),
          static_cast<long long>(cold.reads_from_tier), static_cast<long long>(disk.blocks));
    }
    c.disk_runs.push_back(disk.ToJson());
    std::printf("  rocksdb: write %.2f GB/s (%.2f through close), read %.2f GB/s (batched)\n",
                disk.write_gbps(), disk.write_through_close_gbps(), disk.read_gbps());

    if (args.skip_host) continue;
    // The host tier holds the whole cache in memory next to the fp32 buffers and RocksDB's
    // memtables; skip it rather than push the machine into the OOM killer.
    const uint64_t host_needed = cache_bytes + cache_bytes / 8 + (2ull << 30);
    const uint64_t available = MeminfoBytes("MemAvailable");
    if (available < host_needed) {
      notes.push_back(absl::StrCat("host-tier phase skipped in repeat ", rep, ": ", available >> 20,
                                   " MiB available, ", host_needed >> 20, " MiB needed"));
      continue;
    }
    std::printf("repeat %d: host tier through KvStore (all blocks hot, write-through)...\n", rep);
    std::fflush(stdout);
    SF_ASSIGN_OR_RETURN(StoreRunResult host, RunHostTierPhase(kv, host_db));
    c.host_write.values.push_back(host.write_gbps());
    c.host_read.values.push_back(host.read_gbps());
    c.reads_counted = c.reads_counted && host.reads_from_tier == host.blocks;
    c.host_runs.push_back(host.ToJson());
    std::printf(
        "  host: write %.2f GB/s (write-through), read %.2f GB/s (%lld of %lld reads "
        "from host)\n",
        host.write_gbps(), host.read_gbps(), static_cast<long long>(host.reads_from_tier),
        static_cast<long long>(host.blocks));
    std::printf("repeat %d: raw host tier Put/Get...\n", rep);
    std::fflush(stdout);
    SF_ASSIGN_OR_RETURN(RawTierResult raw, RunRawHostTier(kv));
    c.raw_put.values.push_back(GBps(raw.bytes, raw.put_seconds));
    c.raw_get.values.push_back(GBps(raw.bytes, raw.get_seconds));
    c.raw_runs.push_back(raw.ToJson());
    host_ran = true;
  }

  Report report;
  report.benchmark = "kvstore";
  report.config = {
      {"layout",
       {{"shape", "qwen3-8b KV (36 layers, 8 KV heads, head_dim 128) unless overridden"},
        {"dtype", "bf16"},
        {"num_layers", layout.num_layers},
        {"kv_heads", layout.kv_heads},
        {"head_dim", layout.head_dim},
        {"block_size", layout.block_size},
        {"num_tokens", layout.num_tokens},
        {"num_blocks", layout.num_blocks()},
        {"block_bytes", layout.BlockBytes(0)},
        {"total_blocks", layout.total_blocks()},
        {"total_bytes", cache_bytes}}},
      {"dir", args.dir},
      {"repeats", args.repeats},
      {"plain_chunk_bytes", chunk},
      {"seed", args.seed},
      {"rocksdb_options", RocksDbUsed(disk_options.rocksdb)},
      {"read_threads", args.read_threads},
      {"disk_tier_placement", {{"init_blocks", 0}, {"local_blocks", 0}, {"hot_blocks", 0}}},
      {"host_tier_placement",
       {{"init_blocks", 0},
        {"local_blocks", layout.num_blocks()},
        {"hot_blocks", layout.num_blocks()},
        {"host_budget_bytes", cache_bytes + (64ull << 20)}}},
      {"units", "GB/s = 1e9 bytes/s of bf16 cache bytes"}};
  report.results["conversion"] = {
      {"what", "fp32 K/V -> bf16 blocks (gather + convert) of one layer, alone"},
      {"seconds_per_layer", convert_layer_s.ToJson()},
      {"gbps", convert_gbps},
      {"seconds_per_cache", convert_layer_s.median() * layout.num_layers}};
  report.results["plain_file"] = {
      {"what", "write() in chunks + fsync; fadvise(DONTNEED); sequential read()"},
      {"write_gbps", c.plain_write.ToJson()},
      {"read_gbps", c.plain_read.ToJson()},
      {"read_from_disk", c.plain_from_disk},
      {"runs", c.plain_runs}};
  report.results["rocksdb_tier"] = {
      {"what",
       "KvStore BeginCache + WriteLayer x layers (fp32 in, incl. conversion) + Commit (synced); "
       "close; then for each read: fadvise(DONTNEED) of every DB file, reopen, read every block "
       "(checksum verified by the store, bytes compared by the bench). read_gbps: one reader, "
       "ReadBlocks of each (layer, head) run in key order (RocksDB MultiGet); "
       "read_single_block_gbps: one reader, ReadBlock per block; read_threads_gbps: "
       "read_threads readers, each ReadBlocks of whole (layer, head) runs (wall clock)"},
      {"write_gbps", c.disk_write.ToJson()},
      {"write_through_close_gbps", c.disk_write_close.ToJson()},
      {"read_gbps", c.disk_read.ToJson()},
      {"read_single_block_gbps", c.disk_read_single.ToJson()},
      {"read_threads", args.read_threads},
      {"read_from_disk", c.disk_from_disk},
      {"runs", c.disk_runs}};
  if (!c.disk_read_threads.values.empty()) {
    report.results["rocksdb_tier"]["read_threads_gbps"] = c.disk_read_threads.ToJson();
  }
  if (host_ran) {
    report.results["host_tier"] = {
        {"what",
         "KvStore with every block hot; writes are write-through (include the RocksDB "
         "write); reads are served from host memory: the read figure is the one that "
         "measures the host tier"},
        {"write_gbps", c.host_write.ToJson()},
        {"read_gbps", c.host_read.ToJson()},
        {"runs", c.host_runs}};
    report.results["host_tier_raw"] = {
        {"what", "NewHostTier PutBlocks per layer / Get per block, bf16 already"},
        {"put_gbps", c.raw_put.ToJson()},
        {"get_gbps", c.raw_get.ToJson()},
        {"runs", c.raw_runs}};
  }
  const double write_ratio = MedianRatio(c.disk_write, c.plain_write);
  const double read_ratio = MedianRatio(c.disk_read, c.plain_read);
  report.ratios = {
      {"rocksdb_write_vs_plain", write_ratio},
      {"rocksdb_read_vs_plain", read_ratio},
      {"rocksdb_write_through_close_vs_plain", MedianRatio(c.disk_write_close, c.plain_write)},
      {"rocksdb_read_single_block_vs_plain", MedianRatio(c.disk_read_single, c.plain_read)},
      {"acceptance",
       {{"threshold", kAcceptRatio},
        {"write_ok", write_ratio >= kAcceptRatio},
        {"read_ok", read_ratio >= kAcceptRatio},
        {"reads_really_from_disk", c.plain_from_disk && c.disk_from_disk}}}};
  const bool threaded = !c.disk_read_threads.values.empty();
  const double threads_ratio = threaded ? MedianRatio(c.disk_read_threads, c.plain_read) : 0.0;
  if (threaded) {
    // The plain figure stays one sequential stream; the store's is several (layer, head) runs
    // at once, as a serving worker streams several layers and heads.
    report.ratios["rocksdb_read_threads_vs_plain"] = threads_ratio;
    report.ratios["acceptance"]["read_threads_ok"] = threads_ratio >= kAcceptRatio;
  }
  if (host_ran) report.ratios["host_read_vs_plain_read"] = MedianRatio(c.host_read, c.plain_read);
  if (!c.plain_from_disk || !c.disk_from_disk) {
    notes.push_back(
        "some data was still in the page cache when a cold read began "
        "(see residency_before_read)");
  }
  if (!c.reads_counted) {
    notes.push_back(
        "the store's per-tier read counts do not match the blocks read: a tier "
        "other than the one under test served some reads");
  }
  report.notes = notes;

  Table t({"phase", "write GB/s", "read GB/s", "write/plain", "read/plain"});
  t.AddRow({"plain file (the limit)", Fixed(c.plain_write.median()), Fixed(c.plain_read.median()),
            "1.00", "1.00"});
  t.AddRow({"rocksdb tier (KvStore)", Fixed(c.disk_write.median()), Fixed(c.disk_read.median()),
            Fixed(write_ratio), Fixed(read_ratio)});
  t.AddRow({"  read, ReadBlock per block", "", Fixed(c.disk_read_single.median()), "",
            Fixed(MedianRatio(c.disk_read_single, c.plain_read))});
  if (threaded) {
    t.AddRow({absl::StrCat("  read, ", args.read_threads, " readers"), "",
              Fixed(c.disk_read_threads.median()), "", Fixed(threads_ratio)});
  }
  t.AddRow({"  write through close", Fixed(c.disk_write_close.median()), "",
            Fixed(MedianRatio(c.disk_write_close, c.plain_write)), ""});
  if (host_ran) {
    t.AddRow({"host tier (KvStore, w-through)", Fixed(c.host_write.median()),
              Fixed(c.host_read.median()), Fixed(MedianRatio(c.host_write, c.plain_write)),
              Fixed(MedianRatio(c.host_read, c.plain_read))});
    t.AddRow(
        {"host tier raw Put/Get", Fixed(c.raw_put.median()), Fixed(c.raw_get.median()), "", ""});
  }
  t.AddRow({"fp32->bf16 conversion alone", Fixed(convert_gbps), "", "", ""});
  std::string table = t.ToString();
  table += absl::StrCat("acceptance (rocksdb >= ", kAcceptRatio, " x plain): write ",
                        write_ratio >= kAcceptRatio ? "PASS" : "FAIL", ", read ",
                        read_ratio >= kAcceptRatio ? "PASS" : "FAIL", "\n");
  *exit_code = Publish(report, device, args.common, date, table);
  return absl::OkStatus();
}

}  // namespace

CLI::App* AddKvStoreCommand(CLI::App& app, KvStoreArgs& args) {
  CLI::App* sub = app.add_subcommand(
      "kvstore", "KV cache write/read GB/s per KV store tier vs a plain file on the same disk");
  args.dir = DefaultDataDir();
  sub->add_option("--dir", args.dir, "data directory (the disk under test)")->capture_default_str();
  sub->add_option("--tokens", args.tokens, "prompt tokens per cache")->capture_default_str();
  sub->add_option("--layers", args.layers, "layers")->capture_default_str();
  sub->add_option("--kv-heads", args.kv_heads, "KV heads")->capture_default_str();
  sub->add_option("--head-dim", args.head_dim, "head dimension")->capture_default_str();
  sub->add_option("--block-size", args.block_size, "tokens per block")->capture_default_str();
  sub->add_option("--repeats", args.repeats, "measured runs of every phase (median reported)")
      ->capture_default_str();
  sub->add_option("--chunk-mib", args.chunk_mib, "plain file write()/read() size, MiB")
      ->capture_default_str();
  sub->add_flag("--skip-host", args.skip_host, "leave out the host-tier phases");
  sub->add_option("--read-threads", args.read_threads,
                  "RocksDB tier: also read with this many readers, each whole (layer, head) runs "
                  "(1: single reader only)")
      ->capture_default_str();
  sub->add_option("--blob-file-mib", args.blob_file_mib,
                  "RocksDB blob_file_size in MiB (0: the store's default)")
      ->capture_default_str();
  sub->add_option("--seed", args.seed, "seed of the synthetic K/V")->capture_default_str();
  AddCommonFlags(*sub, args.common);
  return sub;
}

int RunKvStore(const KvStoreArgs& args) {
  int exit_code = 0;
  const absl::Status s = Run(args, &exit_code);
  return s.ok() ? exit_code : Fail("kvstore", s);
}

}  // namespace sparsefill::bench
