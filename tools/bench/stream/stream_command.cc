// `bench stream`: StreamCache throughput over loopback for a long-prompt cache, with 1 and N
// parallel streams, side by side in one run with a raw TCP copy of the same bytes (the loopback
// limit), on both serving paths: the relay (worker -> coordinator -> client) and direct streams
// (the coordinator hands out a plan with stream tickets, the client streams every shard from its
// worker). Acceptance (issue "Distributed serving"): StreamCache with 4 streams reaches >= 50%
// of raw loopback TCP throughput in the same run, on the direct path (what the public client
// uses for READY caches); the relay's figures stay in the JSON beside it.
//
// Two tiers, alone or both in one run (--tier both, one JSON):
//   host: every block hot in the worker's memory, against a raw copy from memory. What is left
//         between the two is the serving path's own cost (gRPC, relay, checksums).
//   disk: every block cold in RocksDB with the page cache evicted before each measurement,
//         against a raw copy that read()s a plain file of the same bytes on the same filesystem,
//         also evicted: both pay for the same disk. This is the size (128K tokens of
//         qwen3-8b = 19.3 GB), which does not fit this machine's memory hot.
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "sparsefill/client/coordinator_client.h"
#include "sparsefill/common/status.h"
#include "tools/bench/commands.h"
#include "tools/bench/harness/device_info.h"
#include "tools/bench/harness/page_cache.h"
#include "tools/bench/harness/sequential_file.h"
#include "tools/bench/harness/timing.h"
#include "tools/bench/kvstore/kv_data.h"
#include "tools/bench/stream/raw_tcp.h"
#include "tools/bench/stream/stream_cluster.h"

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;

constexpr double kAcceptRatio = 0.5;

absl::Status Validate(const StreamArgs& a) {
  if (a.tokens < 1 || a.host_tokens < 1 || a.layers < 1 || a.kv_heads < 1 || a.head_dim < 1 ||
      a.block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tokens (", a.tokens, "), --host-tokens (", a.host_tokens, "), --layers (",
                     a.layers, "), --kv-heads (", a.kv_heads, "), --head-dim (", a.head_dim,
                     ") and --block-size (", a.block_size, ") must all be >= 1"));
  }
  if (a.streams < 1 || a.streams > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--streams must be in [1, 64], got ", a.streams));
  }
  if (a.workers < 1 || a.workers > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("--workers must be in [1, 16], got ", a.workers));
  }
  if (a.repeats < 1 || a.warmup < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--repeats must be >= 1 and --warmup >= 0, got ", a.repeats, ", ", a.warmup));
  }
  if (a.chunk_kib < 64 || a.chunk_kib > 32768) {
    return absl::InvalidArgumentError(
        absl::StrCat("--chunk-kib must be in [64, 32768], got ", a.chunk_kib));
  }
  if (a.raw_buffer_kib < 4 || a.raw_buffer_kib > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("--raw-buffer-kib must be in [4, 65536], got ", a.raw_buffer_kib));
  }
  if (a.tier != "host" && a.tier != "disk" && a.tier != "both") {
    return absl::InvalidArgumentError(
        absl::StrCat("--tier must be \"host\", \"disk\" or \"both\", got \"", a.tier, "\""));
  }
  return absl::OkStatus();
}

double MedianRatio(const Samples& num, const Samples& den) {
  Samples r;
  for (size_t i = 0; i < num.values.size() && i < den.values.size(); ++i) {
    r.values.push_back(den.values[i] > 0 ? num.values[i] / den.values[i] : 0.0);
  }
  return r.median();
}

struct StreamRun {
  int streams = 0;
  uint64_t bytes = 0;
  int64_t blocks = 0;
  int64_t chunks = 0;
  int64_t direct_blocks = 0;
  double seconds = 0;
  double cpu_seconds = 0;
};

// Every client streams the whole cache at once; wall clock from the common start to the last
// stream's end. The client library verifies every block's xxh64 before the callback.
// `direct`: the clients ask for direct plans and every block must come straight from a worker
// (a stream that fell back to the relay would measure the wrong path); otherwise none may.
absl::StatusOr<StreamRun> RunStreams(
    const std::vector<std::unique_ptr<client::CoordinatorClient>>& clients, int streams,
    const InstalledCache& cache, bool direct) {
  std::vector<absl::StatusOr<client::StreamStats>> results(static_cast<size_t>(streams),
                                                           absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  const double cpu0 = ProcessCpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < streams; ++i) {
    threads.emplace_back([&, i] {
      client::CallOptions call;
      call.timeout = std::chrono::minutes(30);
      results[static_cast<size_t>(i)] =
          clients[static_cast<size_t>(i)]->StreamCache(cache.id, /*hot_only=*/false, nullptr, call);
    });
  }
  for (std::thread& t : threads) t.join();
  StreamRun r;
  r.seconds = SecondsSince(t0);
  r.cpu_seconds = ProcessCpuSeconds() - cpu0;
  r.streams = streams;
  for (int i = 0; i < streams; ++i) {
    const auto& s = results[static_cast<size_t>(i)];
    if (!s.ok())
      return absl::Status(s.status().code(),
                          absl::StrCat("stream ", i, ": ", s.status().message()));
    if (s->bytes != cache.bytes || s->blocks != cache.blocks) {
      return absl::DataLossError(absl::StrCat("stream ", i, " got ", s->blocks, " blocks / ",
                                              s->bytes, " bytes of ", cache.blocks, " / ",
                                              cache.bytes));
    }
    if (s->direct_blocks != (direct ? s->blocks : 0)) {
      return absl::InternalError(absl::StrCat("stream ", i, " (", direct ? "direct" : "relay",
                                              "): ", s->direct_blocks, " of ", s->blocks,
                                              " blocks came straight from the workers"));
    }
    r.bytes += s->bytes;
    r.direct_blocks += s->direct_blocks;
    r.blocks += s->blocks;
    r.chunks += s->chunks;
  }
  return r;
}

struct Series {
  Samples gbps;
  Samples cpu_s_per_gb;
  nlohmann::json runs = nlohmann::json::array();
  void Add(uint64_t bytes, double seconds, double cpu, nlohmann::json run) {
    gbps.values.push_back(GBps(bytes, seconds));
    cpu_s_per_gb.values.push_back(bytes > 0 ? cpu / (bytes / 1e9) : 0.0);
    runs.push_back(std::move(run));
  }
  nlohmann::json ToJson(const std::string& what) const {
    return {{"what", what},
            {"gbps", gbps.ToJson()},
            {"cpu_seconds_per_gb", cpu_s_per_gb.ToJson()},
            {"runs", runs}};
  }
};

// The cache's bytes in stream order (layer, head, block), written to one plain file: what the
// disk tier's raw baseline reads.
absl::Status WritePlainCopy(SyntheticKv& kv, const std::string& path) {
  SF_ASSIGN_OR_RETURN(SequentialWriter w, SequentialWriter::Create(path, 16 << 20));
  std::vector<uint8_t> layer(kv.layer_bytes());
  for (int32_t l = 0; l < kv.layout().num_layers; ++l) {
    kv.SetLayer(l);
    kv.ConvertLayer(layer);
    SF_RETURN_IF_ERROR(w.Append(layer));
  }
  return w.Finish();
}

// One tier's measurement: its cluster, cache and raw baseline, torn down before returning.
struct Part {
  std::string tier;  // "host" or "disk"
  int64_t tokens = 0;
  nlohmann::json config;
  nlohmann::json results = nlohmann::json::object();
  nlohmann::json ratios = nlohmann::json::object();
  double accept_ratio = 0;  // direct_N vs raw_N (direct_1 vs raw_1 when N = 1)
  double relay_ratio = 0;   // relay_N vs raw_N, beside it
  std::vector<std::vector<std::string>> rows;
};

absl::StatusOr<Part> RunPart(const StreamArgs& args, const std::string& tier, int64_t tokens) {
  Part part;
  part.tier = tier;
  part.tokens = tokens;
  kvstore::CacheLayout layout;
  layout.dtype = DType::kBF16;
  layout.num_layers = args.layers;
  layout.kv_heads = args.kv_heads;
  layout.head_dim = args.head_dim;
  layout.block_size = args.block_size;
  layout.num_tokens = tokens;
  SF_RETURN_IF_ERROR(layout.Validate());
  const uint64_t cache_bytes = layout.total_bytes();
  const bool hot = tier == "host";

  // The store is write-through: the cache lands on disk even when every block is hot; the disk
  // tier's baseline file holds the same bytes once more.
  const uint64_t disk_needed =
      cache_bytes + cache_bytes / 4 + (hot ? 0 : cache_bytes) + (2ull << 30);
  SF_ASSIGN_OR_RETURN(DeviceInfo now, ProbeDevice(args.dir));
  if (now.storage.free_bytes < disk_needed) {
    return absl::FailedPreconditionError(
        absl::StrCat("--dir '", args.dir, "' has ", now.storage.free_bytes >> 20, " MiB free; a ",
                     cache_bytes >> 20, " MiB ", tier, "-tier cache needs about ",
                     disk_needed >> 20, " MiB; lower --tokens"));
  }
  const uint64_t fp32_bytes = 2ull * layout.num_tokens * layout.kv_heads * layout.head_dim * 4;
  const uint64_t mem_needed = (hot ? cache_bytes : 0) + fp32_bytes + (2ull << 30);
  const uint64_t available = MeminfoBytes("MemAvailable");
  if (available < mem_needed) {
    return absl::FailedPreconditionError(absl::StrCat(
        available >> 20, " MiB of memory available; a ", cache_bytes >> 20, " MiB cache in the ",
        tier, " tier needs about ", mem_needed >> 20, " MiB; lower --tokens"));
  }
  std::printf(
      "bench stream [%s tier]: %d layers x %d KV heads x %lld blocks of %d tokens (head_dim %d, "
      "bf16) = %.2f GB per cache, %d worker(s), streams 1 and %d\n",
      tier.c_str(), layout.num_layers, layout.kv_heads, static_cast<long long>(layout.num_blocks()),
      layout.block_size, layout.head_dim, cache_bytes / 1e9, args.workers, args.streams);
  std::fflush(stdout);

  SF_ASSIGN_OR_RETURN(SyntheticKv kv, SyntheticKv::Make(layout, args.seed));
  ClusterOptions co;
  co.dir = (fs::path(args.dir) / absl::StrCat("stream-bench-", tier)).string();
  co.model_dir = (fs::path(ProbeCommit().source_dir) / "tests/fixtures/hf/qwen3").string();
  co.workers = args.workers;
  co.chunk_bytes = static_cast<uint64_t>(args.chunk_kib) << 10;
  co.hot = hot;
  co.cache_bytes = cache_bytes;
  SF_ASSIGN_OR_RETURN(std::unique_ptr<StreamCluster> cluster, StreamCluster::Start(co));
  std::printf("writing the cache into the workers' stores...\n");
  std::fflush(stdout);
  SF_ASSIGN_OR_RETURN(InstalledCache cache, cluster->Install(kv, "qwen3-8b-shaped (synthetic)"));
  std::printf("  %lld blocks (%lld hot) in %.1f s\n", static_cast<long long>(cache.blocks),
              static_cast<long long>(cache.hot_blocks), cache.write_seconds);
  const std::string plain = (fs::path(args.dir) / "stream-bench-plain.bin").string();
  struct RemovePlain {
    std::string path;
    ~RemovePlain() {
      std::error_code ec;
      fs::remove(path, ec);
    }
  } remove_plain{hot ? std::string() : plain};
  double plain_write_seconds = 0;
  if (!hot) {
    std::printf("writing the same bytes to a plain file for the raw baseline...\n");
    std::fflush(stdout);
    const auto t0 = std::chrono::steady_clock::now();
    SF_RETURN_IF_ERROR(WritePlainCopy(kv, plain));
    plain_write_seconds = SecondsSince(t0);
    if (fs::file_size(plain) != cache_bytes) {
      return absl::InternalError(absl::StrCat("the plain copy has ", fs::file_size(plain),
                                              " bytes, the cache ", cache_bytes));
    }
  }
  kv = SyntheticKv::Make(kvstore::CacheLayout{.dtype = DType::kBF16,
                                              .num_layers = 1,
                                              .kv_heads = 1,
                                              .head_dim = 1,
                                              .block_size = 1,
                                              .num_tokens = 1},
                         0)
           .value();  // the fp32 source is not needed any more

  // One set of clients per path, one connection each.
  std::vector<std::unique_ptr<client::CoordinatorClient>> relay_clients, direct_clients;
  for (int i = 0; i < args.streams; ++i) {
    for (bool direct : {false, true}) {
      client::ConnectionOptions o;
      o.address = cluster->address();
      o.direct_streams = direct;
      SF_ASSIGN_OR_RETURN(std::unique_ptr<client::CoordinatorClient> c,
                          client::CoordinatorClient::Connect(o));
      (direct ? direct_clients : relay_clients).push_back(std::move(c));
    }
  }

  const size_t raw_buffer = static_cast<size_t>(args.raw_buffer_kib) << 10;
  Series raw1, rawn, relay1, relayn, direct1, directn;
  const std::vector<int> counts =
      args.streams == 1 ? std::vector<int>{1} : std::vector<int>{1, args.streams};
  for (int rep = -args.warmup; rep < args.repeats; ++rep) {
    const bool keep = rep >= 0;
    for (int n : counts) {
      nlohmann::json raw_cache = nullptr;
      RawTcpResult raw;
      if (hot) {
        SF_ASSIGN_OR_RETURN(raw, RunRawTcpCopy(n, cache_bytes, raw_buffer));
      } else {
        SF_ASSIGN_OR_RETURN(Residency r, EvictAndMeasure(plain));
        raw_cache = r.ToJson();
        SF_ASSIGN_OR_RETURN(raw, RunRawTcpFileCopy(n, plain, raw_buffer));
      }
      // Both paths right after the raw copy, in turns (relay first on even repeats), so neither
      // always runs on a machine its predecessor left warm or busy.
      const bool relay_first = ((rep + args.warmup) % 2) == 0;
      StreamRun relay, direct;
      nlohmann::json relay_cache = nullptr, direct_cache = nullptr;
      for (int k = 0; k < 2; ++k) {
        const bool is_direct = (k == 0) != relay_first;
        if (!hot) {
          SF_ASSIGN_OR_RETURN(Residency r, EvictAndMeasure(co.dir));
          (is_direct ? direct_cache : relay_cache) = r.ToJson();
        }
        SF_ASSIGN_OR_RETURN(
            (is_direct ? direct : relay),
            RunStreams(is_direct ? direct_clients : relay_clients, n, cache, is_direct));
      }
      const double raw_gbps = GBps(raw.bytes, raw.seconds);
      std::printf(
          "[%s] %s %d: %d conn raw tcp %.2f GB/s | %d stream(s) relay %.2f GB/s (%.1f%%) | "
          "direct %.2f GB/s (%.1f%%)\n",
          tier.c_str(), keep ? "repeat" : "warm-up", keep ? rep : rep + args.warmup, n, raw_gbps, n,
          GBps(relay.bytes, relay.seconds), 100 * GBps(relay.bytes, relay.seconds) / raw_gbps,
          GBps(direct.bytes, direct.seconds), 100 * GBps(direct.bytes, direct.seconds) / raw_gbps);
      std::fflush(stdout);
      if (!keep) continue;
      nlohmann::json raw_run = {{"connections", n},
                                {"bytes", raw.bytes},
                                {"seconds", raw.seconds},
                                {"cpu_seconds", raw.cpu_seconds}};
      if (!hot) raw_run["page_cache_before"] = raw_cache;
      (n == 1 ? raw1 : rawn).Add(raw.bytes, raw.seconds, raw.cpu_seconds, std::move(raw_run));
      for (bool is_direct : {false, true}) {
        const StreamRun& st = is_direct ? direct : relay;
        nlohmann::json run = {{"streams", n},
                              {"bytes", st.bytes},
                              {"blocks", st.blocks},
                              {"direct_blocks", st.direct_blocks},
                              {"chunks", st.chunks},
                              {"seconds", st.seconds},
                              {"cpu_seconds", st.cpu_seconds},
                              {"order", is_direct == relay_first ? 2 : 1}};
        if (!hot) run["page_cache_before"] = is_direct ? direct_cache : relay_cache;
        Series& series = is_direct ? (n == 1 ? direct1 : directn) : (n == 1 ? relay1 : relayn);
        series.Add(st.bytes, st.seconds, st.cpu_seconds, std::move(run));
      }
    }
  }
  const bool multi = args.streams > 1;
  const std::string source =
      hot ? "from memory (one buffer, sent over and over)"
          : "read() from a plain file of the cache's bytes on the same filesystem, evicted from "
            "the page cache before each run";
  part.results["raw_tcp_1"] = raw1.ToJson(absl::StrCat(
      "1 loopback TCP connection: one writer thread send()s raw_buffer_bytes pieces ", source,
      ", one reader thread recv()s and counts them; no framing, no checksums"));
  const std::string tier_what =
      hot ? "host tier" : "RocksDB tier, page cache evicted before each run";
  part.results["stream_relay_1"] = relay1.ToJson(absl::StrCat(
      "1 CoordinatorClient::StreamCache of the whole cache over the relay (direct_streams = "
      "false: client -> coordinator -> worker ReadBlocks -> KvStore ",
      tier_what, "; every block's xxh64 verified by the client)"));
  part.results["stream_direct_1"] = direct1.ToJson(absl::StrCat(
      "1 CoordinatorClient::StreamCache of the whole cache, direct (the coordinator answers with "
      "a plan and one ticket per shard; the client streams every shard from its worker's "
      "StreamShard at once -> KvStore ",
      tier_what, "; every block's xxh64 verified by the client)"));
  const std::string n_str = absl::StrCat(args.streams);
  if (multi) {
    part.results["raw_tcp_" + n_str] = rawn.ToJson(absl::StrCat(
        args.streams, " loopback TCP connections at once, each copying the whole cache ", source));
    part.results["stream_relay_" + n_str] = relayn.ToJson(absl::StrCat(
        args.streams,
        " relay CoordinatorClients (one connection each) streaming the same cache at once; total "
        "bytes / wall time"));
    part.results["stream_direct_" + n_str] = directn.ToJson(absl::StrCat(
        args.streams,
        " direct CoordinatorClients streaming the same cache at once; total bytes / wall time"));
  }
  const double relay_ratio1 = MedianRatio(relay1.gbps, raw1.gbps);
  const double direct_ratio1 = MedianRatio(direct1.gbps, raw1.gbps);
  const double relay_ratio_n = MedianRatio(relayn.gbps, rawn.gbps);
  const double direct_ratio_n = MedianRatio(directn.gbps, rawn.gbps);
  part.ratios["direct_1_vs_raw_1"] = direct_ratio1;
  part.ratios["relay_1_vs_raw_1"] = relay_ratio1;
  part.ratios["direct_1_vs_relay_1"] = MedianRatio(direct1.gbps, relay1.gbps);
  if (multi) {
    part.ratios["direct_" + n_str + "_vs_raw_" + n_str] = direct_ratio_n;
    part.ratios["relay_" + n_str + "_vs_raw_" + n_str] = relay_ratio_n;
    part.ratios["direct_" + n_str + "_vs_relay_" + n_str] = MedianRatio(directn.gbps, relayn.gbps);
    part.ratios["direct_" + n_str + "_vs_raw_1"] = MedianRatio(directn.gbps, raw1.gbps);
  }
  part.accept_ratio = multi ? direct_ratio_n : direct_ratio1;
  part.relay_ratio = multi ? relay_ratio_n : relay_ratio1;
  part.config = {
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
      {"placement",
       hot ? nlohmann::json{{"what",
                             "every block hot in the worker's host tier (budget = cache "
                             "bytes + 64 MiB; init 0, local = hot = all blocks): the "
                             "stream measures the serving path, not the disk"},
                            {"hot_blocks", cache.hot_blocks},
                            {"blocks", cache.blocks}}
           : nlohmann::json{{"what",
                             "hot_blocks = 0: every block read from the RocksDB tier (BlobDB), "
                             "the store directory evicted from the page cache before each "
                             "StreamCache run"},
                            {"hot_blocks", cache.hot_blocks},
                            {"blocks", cache.blocks}}},
      {"cache_install_seconds", cache.write_seconds},
      {"worker_addresses", cluster->worker_addresses()}};
  if (!hot) part.config["plain_file_write_seconds"] = plain_write_seconds;
  auto row = [&](const std::string& what, const Series& s, const std::string& ratio) {
    part.rows.push_back({absl::StrCat(tier, ": ", what), Fixed(s.gbps.median()),
                         Fixed(s.cpu_s_per_gb.median()), ratio});
  };
  row("raw tcp, 1 conn", raw1, "1.00");
  row("StreamCache relay, 1 stream", relay1, Fixed(relay_ratio1));
  row("StreamCache direct, 1 stream", direct1, Fixed(direct_ratio1));
  if (multi) {
    row(absl::StrCat("raw tcp, ", args.streams, " conns"), rawn, "1.00");
    row(absl::StrCat("StreamCache relay, ", args.streams, " streams"), relayn,
        Fixed(relay_ratio_n));
    row(absl::StrCat("StreamCache direct, ", args.streams, " streams"), directn,
        Fixed(direct_ratio_n));
  }
  relay_clients.clear();
  direct_clients.clear();
  cluster.reset();
  return part;
}

absl::Status Run(const StreamArgs& args, int* exit_code) {
  SF_RETURN_IF_ERROR(Validate(args));
  const std::string date = UtcIsoNow();
  std::error_code ec;
  fs::create_directories(args.dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("creating --dir '", args.dir, "': ", ec.message()));
  SF_ASSIGN_OR_RETURN(DeviceInfo device, ProbeDevice(args.dir));

  std::vector<std::pair<std::string, int64_t>> plan;
  if (args.tier == "host" || args.tier == "both") {
    plan.emplace_back("host", args.tier == "both" ? args.host_tokens : args.tokens);
  }
  if (args.tier == "disk" || args.tier == "both") plan.emplace_back("disk", args.tokens);
  std::vector<Part> parts;
  for (const auto& [tier, tokens] : plan) {
    SF_ASSIGN_OR_RETURN(Part p, RunPart(args, tier, tokens));
    parts.push_back(std::move(p));
  }

  Report report;
  report.benchmark = "stream";
  report.config = {
      {"tier", args.tier},
      {"issue_num_tokens", 131072},
      {"workers", args.workers},
      {"streams", args.streams},
      {"worker_chunk_bytes", static_cast<uint64_t>(args.chunk_kib) << 10},
      {"raw_buffer_bytes", static_cast<uint64_t>(args.raw_buffer_kib) << 10},
      {"warmup", args.warmup},
      {"repeats", args.repeats},
      {"seed", args.seed},
      {"setup",
       "one process per tier, one after the other: Worker service(s) (real gRPC servers on "
       "127.0.0.1, KvStore in --dir) and the Coordinator service (RecordStore registry); the "
       "cache written straight into the workers' stores (shard record + BeginCache/WriteLayer/"
       "Commit) and registered READY; clients are the public CoordinatorClient, one channel "
       "(and connection) each; relay clients set direct_streams = false, direct clients ask for "
       "a direct plan and open one connection per shard to its worker"},
      {"units",
       "GB/s = 1e9 bytes/s of bf16 cache bytes; cpu_seconds_per_gb: user+sys CPU of "
       "the whole process (servers and clients) per GB moved"}};
  nlohmann::json acceptance = {
      {"threshold", kAcceptRatio},
      {"streams", args.streams},
      {"path", "direct"},
      {"what", absl::StrCat("stream_direct_", args.streams, " / raw_tcp_", args.streams,
                            " median GB/s ratio per tier (relay_ratio: "
                            "the same for stream_relay_",
                            args.streams, ")")}};
  bool all_ok = args.streams == 4;
  Table t({"path", "GB/s", "CPU s/GB", "vs raw same N"});
  for (Part& p : parts) {
    p.config["what"] =
        p.tier == "host"
            ? "in memory: the service's own overhead against a raw copy from memory"
            : "from disk, the issue's size when --tokens 131072: both sides pay the same disk";
    report.config[p.tier] = p.config;
    report.results[p.tier] = p.results;
    report.ratios[p.tier] = p.ratios;
    const bool ok = p.accept_ratio >= kAcceptRatio;
    acceptance[p.tier] = {{"num_tokens", p.tokens},
                          {"ratio", p.accept_ratio},
                          {"relay_ratio", p.relay_ratio},
                          {"ok", ok}};
    all_ok = all_ok && ok;
    for (auto& r : p.rows) t.AddRow(r);
  }
  acceptance["ok"] = all_ok;
  report.ratios["acceptance"] = acceptance;
  nlohmann::json notes = nlohmann::json::array();
  for (const Part& p : parts) {
    if (p.tokens != 131072) {
      notes.push_back(absl::StrCat(p.tier, " tier run at ", p.tokens,
                                   " tokens, not the issue's 131072",
                                   p.tier == "host" ? " (a hot cache must fit in memory)" : "",
                                   "; throughput is per byte, not per cache"));
    }
  }
  if (args.streams != 4) notes.push_back("acceptance is defined for 4 streams");
  notes.push_back(absl::StrCat(device.logical_cores,
                               " logical cores: servers, clients and "
                               "the raw copy's threads share them"));
  if (!args.note.empty()) notes.push_back(args.note);
  report.notes = notes;

  std::string table = t.ToString();
  for (const Part& p : parts) {
    table += absl::StrCat("acceptance [", p.tier, "] (", args.streams,
                          " direct streams >= ", kAcceptRatio,
                          " x raw tcp): ", p.accept_ratio >= kAcceptRatio ? "PASS" : "FAIL", " (",
                          Fixed(p.accept_ratio), "; relay ", Fixed(p.relay_ratio), ")\n");
  }
  *exit_code = Publish(report, device, args.common, date, table);
  return absl::OkStatus();
}

}  // namespace

CLI::App* AddStreamCommand(CLI::App& app, StreamArgs& args) {
  CLI::App* sub = app.add_subcommand(
      "stream", "StreamCache GB/s over loopback (1 and N streams) vs a raw TCP copy");
  args.dir = DefaultDataDir();
  sub->add_option("--dir", args.dir, "scratch directory of the workers' stores and registry")
      ->capture_default_str();
  sub->add_option("--tokens", args.tokens, "prompt tokens of the cache")->capture_default_str();
  sub->add_option("--host-tokens", args.host_tokens,
                  "prompt tokens of the host-tier cache under --tier both")
      ->capture_default_str();
  sub->add_option("--layers", args.layers, "layers")->capture_default_str();
  sub->add_option("--kv-heads", args.kv_heads, "KV heads")->capture_default_str();
  sub->add_option("--head-dim", args.head_dim, "head dimension")->capture_default_str();
  sub->add_option("--block-size", args.block_size, "tokens per block")->capture_default_str();
  sub->add_option("--streams", args.streams, "parallel streams of the second measurement")
      ->capture_default_str();
  sub->add_option("--workers", args.workers, "workers holding shards of the cache")
      ->capture_default_str();
  sub->add_option("--tier", args.tier,
                  "host: every block hot, vs raw TCP from memory; disk: every block from "
                  "RocksDB, vs raw TCP from a plain file (page cache evicted); both: host "
                  "(--host-tokens) then disk (--tokens), one JSON")
      ->capture_default_str();
  sub->add_option("--chunk-kib", args.chunk_kib, "the workers' ReadBlocks chunk size, KiB")
      ->capture_default_str();
  sub->add_option("--raw-buffer-kib", args.raw_buffer_kib, "raw TCP send()/recv() size, KiB")
      ->capture_default_str();
  sub->add_option("--warmup", args.warmup, "runs dropped before the measured ones")
      ->capture_default_str();
  sub->add_option("--repeats", args.repeats, "measured runs (median reported)")
      ->capture_default_str();
  sub->add_option("--seed", args.seed, "seed of the synthetic K/V")->capture_default_str();
  sub->add_option("--note", args.note,
                  "a line for the JSON's notes (e.g. what else loaded the machine)");
  AddCommonFlags(*sub, args.common);
  return sub;
}

int RunStream(const StreamArgs& args) {
  int exit_code = 0;
  const absl::Status s = Run(args, &exit_code);
  return s.ok() ? exit_code : Fail("stream", s);
}

}  // namespace sparsefill::bench
