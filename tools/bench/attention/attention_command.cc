// `bench attention`: see attention_command.h. One process owns the GPU for our kernels, then
// frees it and runs torch_reference.py on the same device for SDPA and FlexAttention.
#include "tools/bench/attention/attention_command.h"

#include <cuda_runtime.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/dense_attention/dense_engine.h"
#include "kernels/sparse_attention/sparse_engine.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kernels/attention.h"
#include "sparsefill/kernels/selection.h"
#include "tools/bench/attention/attention_inputs.h"
#include "tools/bench/attention/attention_plan.h"
#include "tools/bench/attention/torch_runner.h"
#include "tools/bench/harness/timing.h"

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;
namespace k = ::sparsefill::kernels;

constexpr int32_t kFlexQTile = 128;
constexpr int32_t kFlexMinKvBlock = 64;  // FlexAttention's KV tile for head_dim 128
// The targets.
constexpr double kTargetSelSparseVsSdpa = 8.0;  // at 128K, InfLLM-V2
constexpr double kTargetSparseVsFlex = 1.5;
constexpr double kTargetDenseVsSdpa = 1.15;
constexpr double kTargetPhsaPerKey = 1.3;
constexpr double kTargetSelectionShare = 0.35;

absl::Status Cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(err)));
}

class DeviceMemory {
 public:
  DeviceMemory() = default;
  ~DeviceMemory() { Reset(); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  absl::Status Allocate(size_t bytes) {
    Reset();
    bytes_ = bytes;
    return Cuda(cudaMalloc(&p_, std::max<size_t>(bytes, 256)), "cudaMalloc");
  }
  void Reset() {
    if (p_ != nullptr) cudaFree(p_);
    p_ = nullptr;
  }
  void* get() const { return p_; }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// Median-of-repeats GPU time of `body` in milliseconds, with CUDA events.
absl::StatusOr<Samples> TimeGpu(cudaStream_t stream, int warmup, int repeats,
                                const std::function<absl::Status()>& body) {
  cudaEvent_t start = nullptr, stop = nullptr;
  SF_RETURN_IF_ERROR(Cuda(cudaEventCreate(&start), "cudaEventCreate"));
  SF_RETURN_IF_ERROR(Cuda(cudaEventCreate(&stop), "cudaEventCreate"));
  auto cleanup = [&] {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  };
  Samples ms;
  for (int i = 0; i < warmup + repeats; ++i) {
    absl::Status s = Cuda(cudaEventRecord(start, stream), "cudaEventRecord");
    if (s.ok()) s = body();
    if (s.ok()) s = Cuda(cudaEventRecord(stop, stream), "cudaEventRecord");
    if (s.ok()) s = Cuda(cudaEventSynchronize(stop), "kernel execution");
    float t = 0;
    if (s.ok()) s = Cuda(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
    if (!s.ok()) {
      cleanup();
      return s;
    }
    if (i >= warmup) ms.values.push_back(t);
  }
  cleanup();
  return ms;
}

// One measurement: times, or the status that stopped it.
struct Measure {
  std::optional<Samples> ms;
  std::string error;
  double flops = 0;  // useful FLOPs behind the TFLOP/s figure
  nlohmann::json ToJson() const {
    nlohmann::json j = nlohmann::json::object();
    if (ms) {
      j["ms"] = ms->ToJson();
      if (flops > 0) j["tflops"] = flops / (ms->median() * 1e-3) / 1e12;
    } else {
      j["error"] = error;
    }
    j["flops"] = flops;
    return j;
  }
  double median() const { return ms ? ms->median() : NAN; }
};

Measure FromStatus(absl::StatusOr<Samples> s, double flops) {
  Measure m;
  m.flops = flops;
  if (s.ok()) {
    m.ms = *std::move(s);
  } else {
    m.error = std::string(s.status().ToString());
  }
  return m;
}

Measure FromTorch(const nlohmann::json& j, double flops) {
  Measure m;
  m.flops = flops;
  if (j.is_object() && j.contains("ms") && j["ms"].is_array()) {
    Samples s;
    for (const auto& v : j["ms"]) {
      if (v.is_number()) s.values.push_back(v.get<double>());
    }
    if (!s.values.empty()) m.ms = s;
  }
  if (!m.ms) {
    m.error = j.is_object() && j.contains("error") && j["error"].is_string()
                  ? j["error"].get<std::string>()
                  : "not measured";
  }
  return m;
}

struct ConfigResult {
  SelectionConfig cfg;
  Measure selection, sparse, both, flex;
  Measure sparse_mma;              // the mma.sync kernel (SparseEngine::kMmaSync), 64-row CTAs
  Measure sparse_wgmma;            // the wgmma kernel (SparseEngine::kWgmma)
  Measure sparse_rows128;          // mma.sync forced to 128-row CTAs (SparseRows::k128)
  Measure sparse_noskip;           // mma.sync, 64 rows, without the m-tile skip (SetSparseTileSkip)
  int64_t computed_pairs = 0;      // token-key pairs the default sparse kernel computed, per KV
  int64_t computed_pairs128 = 0;   // head summed (BlockSelection::computed_keys); the 128-row one
  Measure selection_materialized;  // --selection-only: block scores through device memory
  int64_t selected_pairs = 0;      // per KV head, summed
  int64_t flex_pairs = 0;
  int32_t flex_kv_block = 0;
  std::string flex_key;
};

struct LengthResult {
  int64_t tokens = 0;
  Measure dense, sdpa;
  // The dense engines forced one by one (the default above is one of them), side by side.
  std::vector<std::pair<std::string, Measure>> dense_engines;
  std::vector<ConfigResult> configs;
};

absl::Status Validate(const AttentionArgs& a) {
  if (a.tokens.empty()) return absl::InvalidArgumentError("--tokens needs at least one length");
  for (int64_t n : a.tokens) {
    if (n < 1024 || n > (int64_t{1} << 21) || n % 128 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tokens ", n, " must be a multiple of 128 in [1024, 2^21]"));
    }
  }
  if (a.q_heads < 1 || a.kv_heads < 1 || a.q_heads % a.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--q-heads ", a.q_heads, " must be a positive multiple of --kv-heads ", a.kv_heads));
  }
  if (a.head_dim != 64 && a.head_dim != 128) {
    return absl::InvalidArgumentError(absl::StrCat("--head-dim ", a.head_dim, " (64 or 128)"));
  }
  if (a.warmup < 0 || a.repeats < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--warmup ", a.warmup, " >= 0 and --repeats ", a.repeats, " >= 1"));
  }
  return absl::OkStatus();
}

// Our kernels at one length: dense once, then every selection configuration.
absl::Status RunOurs(const AttentionArgs& a, const AttentionInputs& in, cudaStream_t stream,
                     const std::string& tmp, LengthResult& res, nlohmann::json& flex_runs) {
  const int64_t n = res.tokens;
  const int32_t group = a.q_heads / a.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  DeviceMemory out;
  SF_RETURN_IF_ERROR(out.Allocate(static_cast<size_t>(n) * a.q_heads * a.head_dim * 2));
  k::AttentionParams ap;
  ap.q = in.q;
  ap.k = in.k;
  ap.v = in.v;
  ap.out = out.get();
  ap.num_q = n;
  ap.num_kv = n;
  ap.q_heads = a.q_heads;
  ap.kv_heads = a.kv_heads;
  ap.head_dim = a.head_dim;
  ap.scale = scale;
  ap.dtype = DType::kBF16;
  const double dense_flops = AttentionFlops(CausalPairs(n, 0), a.q_heads, a.head_dim);
  if (!a.selection_only) {
    res.dense = FromStatus(
        TimeGpu(stream, a.warmup, a.repeats, [&] { return k::LaunchDenseAttention(ap, stream); }),
        dense_flops);
    cudaGetLastError();  // a failed launch must not poison the next measurement
    // wgmma: FailedPrecondition (reported, not fatal) off compute capability 9.0.
    for (const auto& [name, engine] : std::vector<std::pair<std::string, k::DenseEngine>>{
             {"mma.sync", k::DenseEngine::kMmaSync},
             {"wgmma", k::DenseEngine::kWgmma},
             {"wgmma serial", k::DenseEngine::kWgmmaSerial},
             {"wgmma pingpong", k::DenseEngine::kWgmmaPingPong},
             {"wgmma tma", k::DenseEngine::kWgmmaTma},
             {"wgmma tma pingpong", k::DenseEngine::kWgmmaTmaPingPong}}) {
      res.dense_engines.emplace_back(
          name, FromStatus(TimeGpu(stream, a.warmup, a.repeats,
                                   [&] { return k::LaunchDenseAttentionOn(engine, ap, stream); }),
                           dense_flops));
      cudaGetLastError();
    }
  }

  for (const SelectionConfig& cfg : DefaultSelectionConfigs()) {
    ConfigResult cr;
    cr.cfg = cfg;
    const k::ChunkRange range = k::SummaryChunkRange(0, n, cfg.kernel_size, cfg.kernel_stride);
    DeviceMemory summaries, blocks, ws;
    SF_RETURN_IF_ERROR(
        summaries.Allocate(static_cast<size_t>(range.count) * a.kv_heads * a.head_dim * 2));
    SF_RETURN_IF_ERROR(blocks.Allocate(static_cast<size_t>(n) * a.kv_heads * cfg.topk * 4));
    k::BlockSummaryCudaParams sp;
    sp.k = in.k;
    sp.punct = in.punct;
    sp.summaries = summaries.get();
    sp.num_kv = n;
    sp.kv_heads = a.kv_heads;
    sp.head_dim = a.head_dim;
    sp.kernel_size = cfg.kernel_size;
    sp.kernel_stride = cfg.kernel_stride;
    sp.lambda = cfg.lambda;
    k::SelectBlocksCudaParams sel;
    sel.q = in.q;
    sel.summaries = summaries.get();
    sel.blocks = static_cast<int32_t*>(blocks.get());
    sel.num_q = n;
    sel.num_chunks = range.count;
    sel.q_heads = a.q_heads;
    sel.kv_heads = a.kv_heads;
    sel.head_dim = a.head_dim;
    sel.scale = scale;
    sel.kernel_size = cfg.kernel_size;
    sel.kernel_stride = cfg.kernel_stride;
    sel.block_size = cfg.block_size;
    sel.init_blocks = cfg.init_blocks;
    sel.local_blocks = cfg.local_blocks;
    sel.topk = cfg.topk;
    // --selection-only times the fused path against the materialised one; otherwise `sel` is
    // what the engine runs (the header's default).
    if (a.selection_only) sel.materialize_scores = false;
    k::SelectBlocksCudaParams sel_mat = sel;
    sel_mat.materialize_scores = true;
    const size_t ws_bytes = std::max(k::SelectBlocksWorkspaceBytes(sel),
                                     a.selection_only ? k::SelectBlocksWorkspaceBytes(sel_mat) : 0);
    SF_RETURN_IF_ERROR(ws.Allocate(ws_bytes));
    auto select = [&]() -> absl::Status {
      SF_RETURN_IF_ERROR(k::LaunchBlockSummaries(sp, stream));
      return k::LaunchSelectBlocks(sel, ws.get(), ws_bytes, stream);
    };
    const double score_flops =
        2.0 * 2.0 * VisibleChunkPairs(n, 0, cfg.kernel_size, cfg.kernel_stride) * a.q_heads *
        a.head_dim;  // two passes of QK^T over the visible chunks
    cr.selection = FromStatus(TimeGpu(stream, a.warmup, a.repeats, select), score_flops);
    if (a.selection_only) {
      cudaGetLastError();
      cr.selection_materialized =
          FromStatus(TimeGpu(stream, a.warmup, a.repeats,
                             [&]() -> absl::Status {
                               SF_RETURN_IF_ERROR(k::LaunchBlockSummaries(sp, stream));
                               return k::LaunchSelectBlocks(sel_mat, ws.get(), ws_bytes, stream);
                             }),
                     score_flops);
      cudaGetLastError();
    }
    if (!cr.selection.ms || a.selection_only) {
      res.configs.push_back(cr);
      continue;  // no selection, nothing to attend with (or only the selection is wanted)
    }
    std::vector<int32_t> host(static_cast<size_t>(n) * a.kv_heads * cfg.topk);
    SF_RETURN_IF_ERROR(
        Cuda(cudaMemcpy(host.data(), blocks.get(), host.size() * 4, cudaMemcpyDeviceToHost),
             "copying the selection back"));
    SF_ASSIGN_OR_RETURN(cr.selected_pairs,
                        SelectedPairs(host.data(), a.kv_heads, n, 0, cfg.topk, cfg.block_size));
    const double sparse_flops = AttentionFlops(cr.selected_pairs, group, a.head_dim);

    k::BlockSelection bs;
    bs.blocks = static_cast<const int32_t*>(blocks.get());
    bs.max_blocks = cfg.topk;
    bs.block_size = cfg.block_size;
    cr.sparse = FromStatus(TimeGpu(stream, a.warmup, a.repeats,
                                   [&] { return k::LaunchSparseAttention(ap, bs, stream); }),
                           sparse_flops);
    cudaGetLastError();
    // Each kernel forced, beside the default: wgmma, then mma.sync and its options.
    k::SetSparseEngine(k::SparseEngine::kWgmma);
    cr.sparse_wgmma = FromStatus(TimeGpu(stream, a.warmup, a.repeats,
                                         [&] { return k::LaunchSparseAttention(ap, bs, stream); }),
                                 sparse_flops);
    cudaGetLastError();
    k::SetSparseEngine(k::SparseEngine::kMmaSync);
    cr.sparse_mma = FromStatus(TimeGpu(stream, a.warmup, a.repeats,
                                       [&] { return k::LaunchSparseAttention(ap, bs, stream); }),
                               sparse_flops);
    cudaGetLastError();
    k::SetSparseRows(k::SparseRows::k128);
    cr.sparse_rows128 =
        FromStatus(TimeGpu(stream, a.warmup, a.repeats,
                           [&] { return k::LaunchSparseAttention(ap, bs, stream); }),
                   sparse_flops);
    cudaGetLastError();
    k::SetSparseRows(k::SparseRows::kAuto);
    k::SetSparseTileSkip(false);
    cr.sparse_noskip = FromStatus(TimeGpu(stream, a.warmup, a.repeats,
                                          [&] { return k::LaunchSparseAttention(ap, bs, stream); }),
                                  sparse_flops);
    k::SetSparseTileSkip(true);
    cudaGetLastError();
    // One untimed launch of each shape with the pair counter (mma.sync: the 64-row CTA computes
    // what the wgmma kernel's does).
    {
      DeviceMemory counter;
      SF_RETURN_IF_ERROR(counter.Allocate(8));
      k::BlockSelection counted = bs;
      counted.computed_keys = static_cast<unsigned long long*>(counter.get());
      for (const bool rows128 : {false, true}) {
        k::SetSparseRows(rows128 ? k::SparseRows::k128 : k::SparseRows::kAuto);
        SF_RETURN_IF_ERROR(Cuda(cudaMemsetAsync(counter.get(), 0, 8, stream), "counter reset"));
        SF_RETURN_IF_ERROR(k::LaunchSparseAttention(ap, counted, stream));
        unsigned long long pairs = 0;
        SF_RETURN_IF_ERROR(
            Cuda(cudaMemcpyAsync(&pairs, counter.get(), 8, cudaMemcpyDeviceToHost, stream),
                 "counter download"));
        SF_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream), "counted launch"));
        (rows128 ? cr.computed_pairs128 : cr.computed_pairs) = static_cast<int64_t>(pairs);
      }
    }
    k::SetSparseRows(k::SparseRows::kAuto);
    k::SetSparseEngine(k::SparseEngine::kAuto);
    cr.both = FromStatus(TimeGpu(stream, a.warmup, a.repeats,
                                 [&]() -> absl::Status {
                                   SF_RETURN_IF_ERROR(select());
                                   return k::LaunchSparseAttention(ap, bs, stream);
                                 }),
                         0.0);
    cudaGetLastError();

    cr.flex_kv_block = std::max(cfg.block_size, kFlexMinKvBlock);
    SF_ASSIGN_OR_RETURN(TileBlocks tiles, TileUnion(host.data(), a.kv_heads, n, 0, cfg.topk,
                                                    cfg.block_size, kFlexQTile, cr.flex_kv_block));
    cr.flex_pairs = TilePairs(tiles, n);
    cr.flex_key = absl::StrCat(n, "/", cfg.name);
    SF_ASSIGN_OR_RETURN(nlohmann::json run, WriteFlexRun(tmp, cr.flex_key, n, tiles));
    flex_runs.push_back(run);
    res.configs.push_back(std::move(cr));
  }
  return absl::OkStatus();
}

std::string Ms(const Measure& m) { return m.ms ? Fixed(m.median(), 3) : "-"; }
std::string Tf(const Measure& m) {
  return m.ms && m.flops > 0 ? Fixed(m.flops / (m.median() * 1e-3) / 1e12, 1) : "-";
}
std::string Why(const Measure& m) { return m.ms ? "" : m.error.substr(0, 60); }

nlohmann::json Ratio(double value, double target, bool at_least, const std::string& what) {
  nlohmann::json j = {{"what", what}, {"target", target}, {"at_least", at_least}};
  if (std::isfinite(value)) {
    j["value"] = value;
    j["met"] = at_least ? value >= target : value <= target;
  } else {
    j["value"] = nullptr;
    j["met"] = nullptr;
  }
  return j;
}

std::string RatioLine(const nlohmann::json& r) {
  const std::string v = r["value"].is_number() ? Fixed(r["value"].get<double>(), 2) : "n/a";
  const std::string met = r["met"].is_boolean() ? (r["met"].get<bool>() ? "MET" : "missed") : "-";
  return absl::StrCat(r["what"].get<std::string>(), ": ", v, " (target ",
                      r["at_least"].get<bool>() ? ">= " : "<= ",
                      Fixed(r["target"].get<double>(), 2), ") ", met, "\n");
}

absl::Status Run(const AttentionArgs& args, int* exit_code) {
  SF_RETURN_IF_ERROR(Validate(args));
  const std::string date = UtcIsoNow();
  SF_ASSIGN_OR_RETURN(DeviceInfo host, ProbeDevice(""));
  cudaDeviceProp prop{};
  SF_RETURN_IF_ERROR(Cuda(cudaGetDeviceProperties(&prop, 0), "no CUDA device"));

  std::string script = args.script;
  if (script.empty()) {
    script = "tools/bench/attention/torch_reference.py";
    if (!fs::exists(script)) {
      script = (fs::path(DefaultResultsDir()).parent_path().parent_path() / script).string();
    }
  }
  std::string tmpl = args.tmp_dir + "/sf-bench-attention-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("cannot make a directory under ", args.tmp_dir));
  }
  const std::string tmp = tmpl;
  struct RemoveDir {
    std::string path;
    ~RemoveDir() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } remove_tmp{tmp};

  const int64_t max_n = *std::max_element(args.tokens.begin(), args.tokens.end());
  cudaStream_t stream = nullptr;
  SF_RETURN_IF_ERROR(Cuda(cudaStreamCreate(&stream), "cudaStreamCreate"));
  std::vector<LengthResult> results;
  nlohmann::json flex_runs = nlohmann::json::array();
  TorchRequest treq;
  {
    DeviceMemory q, kk, v, punct;
    SF_RETURN_IF_ERROR(q.Allocate(static_cast<size_t>(max_n) * args.q_heads * args.head_dim * 2));
    SF_RETURN_IF_ERROR(kk.Allocate(static_cast<size_t>(max_n) * args.kv_heads * args.head_dim * 2));
    SF_RETURN_IF_ERROR(v.Allocate(static_cast<size_t>(max_n) * args.kv_heads * args.head_dim * 2));
    SF_RETURN_IF_ERROR(punct.Allocate(static_cast<size_t>(max_n)));
    AttentionInputs in;
    in.q = q.get();
    in.k = kk.get();
    in.v = v.get();
    in.punct = static_cast<uint8_t*>(punct.get());
    in.tokens = max_n;
    in.q_heads = args.q_heads;
    in.kv_heads = args.kv_heads;
    in.head_dim = args.head_dim;
    in.seed = args.seed;
    SF_RETURN_IF_ERROR(FillAttentionInputs(in, stream));
    SF_RETURN_IF_ERROR(Cuda(cudaStreamSynchronize(stream), "filling the inputs"));

    for (int64_t n : args.tokens) {
      LengthResult res;
      res.tokens = n;
      std::printf("bench attention: %lld tokens ...\n", static_cast<long long>(n));
      std::fflush(stdout);
      SF_RETURN_IF_ERROR(RunOurs(args, in, stream, tmp, res, flex_runs));
      results.push_back(std::move(res));
    }
    if (!args.no_torch && !args.selection_only) {
      // The script reads the very same bf16 inputs (prefixes for the shorter lengths).
      for (const auto& [name, mem, heads] :
           {std::tuple{"q", &q, args.q_heads}, std::tuple{"k", &kk, args.kv_heads},
            std::tuple{"v", &v, args.kv_heads}}) {
        std::vector<uint8_t> h(static_cast<size_t>(max_n) * heads * args.head_dim * 2);
        SF_RETURN_IF_ERROR(Cuda(cudaMemcpy(h.data(), mem->get(), h.size(), cudaMemcpyDeviceToHost),
                                "copying inputs back"));
        const std::string path = absl::StrCat(tmp, "/", name, ".bin");
        SF_RETURN_IF_ERROR(WriteBinary(path, h.data(), h.size()));
        (std::string(name) == "q"   ? treq.q_file
         : std::string(name) == "k" ? treq.k_file
                                    : treq.v_file) = path;
      }
    }
  }  // our device memory is freed before torch takes the GPU
  cudaStreamDestroy(stream);

  nlohmann::json torch = nlohmann::json::object();
  std::vector<std::string> notes;
  if (!args.no_torch && !args.selection_only) {
    treq.dir = tmp;
    treq.python = args.python;
    treq.script = script;
    treq.max_tokens = max_n;
    treq.q_heads = args.q_heads;
    treq.kv_heads = args.kv_heads;
    treq.head_dim = args.head_dim;
    treq.warmup = args.warmup;
    treq.repeats = args.repeats;
    treq.dense = args.tokens;
    treq.flex = flex_runs;
    absl::StatusOr<nlohmann::json> t = RunTorchReference(treq);
    if (t.ok()) {
      torch = *std::move(t);
    } else {
      notes.push_back(absl::StrCat("torch reference failed: ", t.status().ToString()));
    }
  } else if (args.selection_only) {
    notes.push_back(
        "--selection-only: only our selection, with the fused top-k (materialize_scores = false) "
        "and with the block scores materialised in device memory (the default path), timed one "
        "after the other");
  } else {
    notes.push_back("--no-torch: SDPA and FlexAttention not measured");
  }
  const nlohmann::json empty = nlohmann::json::object();
  auto torch_entry = [&](const char* kind, const std::string& key) -> const nlohmann::json& {
    if (torch.contains(kind) && torch[kind].is_object() && torch[kind].contains(key)) {
      return torch[kind][key];
    }
    return empty;
  };
  for (LengthResult& r : results) {
    r.sdpa = FromTorch(torch_entry("sdpa", std::to_string(r.tokens)), r.dense.flops);
    for (ConfigResult& c : r.configs) {
      c.flex = FromTorch(torch_entry("flex", c.flex_key), c.sparse.flops);
    }
  }

  // Table, ratios, document.
  Table table({"tokens", "config", "what", "ms", "TFLOP/s", "note"});
  Report report;
  report.benchmark = "attention";
  report.config = {{"tokens", args.tokens},
                   {"q_heads", args.q_heads},
                   {"kv_heads", args.kv_heads},
                   {"head_dim", args.head_dim},
                   {"dtype", "bf16"},
                   {"warmup", args.warmup},
                   {"repeats", args.repeats},
                   {"seed", args.seed},
                   {"gpu", prop.name},
                   {"gpu_sms", prop.multiProcessorCount},
                   {"flex_q_tile", kFlexQTile},
                   {"selection_only", args.selection_only},
                   {"torch", torch.value("torch", "")},
                   {"torch_device", torch.value("device", "")}};
  nlohmann::json cfgs = nlohmann::json::array();
  for (const SelectionConfig& c : DefaultSelectionConfigs()) {
    cfgs.push_back({{"name", c.name},
                    {"kernel_size", c.kernel_size},
                    {"kernel_stride", c.kernel_stride},
                    {"block_size", c.block_size},
                    {"init_blocks", c.init_blocks},
                    {"local_blocks", c.local_blocks},
                    {"topk", c.topk},
                    {"lambda", c.lambda}});
  }
  report.config["selection_configs"] = cfgs;
  nlohmann::json ratios = nlohmann::json::array();
  for (const LengthResult& r : results) {
    const std::string n = std::to_string(r.tokens);
    nlohmann::json jr = {{"sdpa", r.sdpa.ToJson()}, {"dense", r.dense.ToJson()}};
    if (!args.selection_only) {
      table.AddRow({n, "-", "torch SDPA dense causal", Ms(r.sdpa), Tf(r.sdpa), Why(r.sdpa)});
      table.AddRow({n, "-", "ours dense", Ms(r.dense), Tf(r.dense), Why(r.dense)});
      ratios.push_back(Ratio(r.dense.median() / r.sdpa.median(), kTargetDenseVsSdpa, false,
                             absl::StrCat(n, " ours dense / SDPA")));
      nlohmann::json engines = nlohmann::json::object();
      for (const auto& [name, m] : r.dense_engines) {
        table.AddRow({n, "-", absl::StrCat("ours dense, ", name), Ms(m), Tf(m), Why(m)});
        ratios.push_back(Ratio(m.median() / r.sdpa.median(), kTargetDenseVsSdpa, false,
                               absl::StrCat(n, " ours dense ", name, " / SDPA")));
        engines[name] = m.ToJson();
      }
      jr["dense_engines"] = engines;
    }
    const ConfigResult* eq = nullptr;
    const ConfigResult* phsa = nullptr;
    for (const ConfigResult& c : r.configs) {
      if (c.cfg.name == "b64-eqkeys") eq = &c;
      if (c.cfg.name == "phsa") phsa = &c;
      const std::string& name = c.cfg.name;
      table.AddRow({n, name, "ours selection", Ms(c.selection), Tf(c.selection), Why(c.selection)});
      if (args.selection_only) {
        table.AddRow({n, name, "ours selection, materialised scores", Ms(c.selection_materialized),
                      Tf(c.selection_materialized), Why(c.selection_materialized)});
        jr[name] = {{"selection", c.selection.ToJson()},
                    {"selection_materialized", c.selection_materialized.ToJson()}};
        ratios.push_back(
            Ratio(c.selection_materialized.median() / c.selection.median(), 1.0, true,
                  absl::StrCat(n, " ", name, " selection materialised / fused (speed-up)")));
        continue;
      }
      table.AddRow({n, name, "ours sparse attention", Ms(c.sparse), Tf(c.sparse),
                    c.sparse.ms
                        ? absl::StrCat("sparsity ", Fixed(1.0 - double(c.selected_pairs) /
                                                                    (double(args.kv_heads) *
                                                                     CausalPairs(r.tokens, 0)),
                                                          4))
                        : Why(c.sparse)});
      auto computes = [&](int64_t pairs) {
        return absl::StrCat("computes ",
                            Fixed(double(pairs) / std::max<int64_t>(1, c.selected_pairs), 2),
                            "x our keys");
      };
      table.AddRow({n, name, "ours sparse, default CTA", "", "",
                    c.computed_pairs > 0 ? computes(c.computed_pairs) : ""});
      table.AddRow(
          {n, name, "ours sparse, wgmma", Ms(c.sparse_wgmma), Tf(c.sparse_wgmma),
           c.sparse_wgmma.ms && c.sparse_mma.ms
               ? absl::StrCat("mma.sync / wgmma ",
                              Fixed(c.sparse_mma.ms->median() / c.sparse_wgmma.ms->median(), 3))
               : Why(c.sparse_wgmma)});
      table.AddRow({n, name, "ours sparse, mma.sync", Ms(c.sparse_mma), Tf(c.sparse_mma),
                    Why(c.sparse_mma)});
      table.AddRow({n, name, "ours sparse, mma.sync 128-row CTA", Ms(c.sparse_rows128),
                    Tf(c.sparse_rows128),
                    c.sparse_rows128.ms ? computes(c.computed_pairs128) : Why(c.sparse_rows128)});
      table.AddRow({n, name, "ours sparse, mma.sync no m-tile skip", Ms(c.sparse_noskip),
                    Tf(c.sparse_noskip),
                    c.sparse_noskip.ms && c.sparse_mma.ms
                        ? absl::StrCat("skip saves ",
                                       Fixed(100.0 * (1.0 - c.sparse_mma.ms->median() /
                                                                c.sparse_noskip.ms->median()),
                                             1),
                                       "%")
                        : Why(c.sparse_noskip)});
      table.AddRow(
          {n, name, absl::StrCat("FlexAttention (KV block ", c.flex_kv_block, ")"), Ms(c.flex),
           Tf(c.flex),
           c.flex.ms ? absl::StrCat(
                           "computes ",
                           Fixed(double(c.flex_pairs) / std::max<int64_t>(1, c.selected_pairs), 2),
                           "x our keys")
                     : Why(c.flex)});
      table.AddRow({n, name, "ours selection + sparse", Ms(c.both), "-", Why(c.both)});
      jr[name] = {{"selection", c.selection.ToJson()},
                  {"sparse", c.sparse.ToJson()},
                  {"sparse_wgmma", c.sparse_wgmma.ToJson()},
                  {"sparse_mma_sync", c.sparse_mma.ToJson()},
                  {"sparse_rows128", c.sparse_rows128.ToJson()},
                  {"sparse_no_tile_skip", c.sparse_noskip.ToJson()},
                  {"computed_pairs_per_kv_head_sum", c.computed_pairs},
                  {"computed_pairs_rows128_per_kv_head_sum", c.computed_pairs128},
                  {"selection_plus_sparse", c.both.ToJson()},
                  {"flex", c.flex.ToJson()},
                  {"selected_pairs_per_kv_head_sum", c.selected_pairs},
                  {"flex_pairs_per_kv_head_sum", c.flex_pairs},
                  {"flex_kv_block", c.flex_kv_block}};
      ratios.push_back(Ratio(c.flex.median() / c.sparse.median(), kTargetSparseVsFlex, true,
                             absl::StrCat(n, " ", name, " Flex / ours sparse")));
      if (c.sparse_wgmma.ms) {
        ratios.push_back(Ratio(c.flex.median() / c.sparse_wgmma.median(), kTargetSparseVsFlex, true,
                               absl::StrCat(n, " ", name, " Flex / ours sparse wgmma")));
        ratios.push_back(Ratio(c.sparse_mma.median() / c.sparse_wgmma.median(), 1.0, true,
                               absl::StrCat(n, " ", name, " sparse mma.sync / wgmma (speed-up)")));
      }
      ratios.push_back(Ratio(c.selection.median() / (c.selection.median() + c.sparse.median()),
                             kTargetSelectionShare, false,
                             absl::StrCat(n, " ", name, " selection share of sel + sparse")));
      if (name == "infllmv2") {
        ratios.push_back(Ratio(r.sdpa.median() / c.both.median(), kTargetSelSparseVsSdpa, true,
                               absl::StrCat(n, " infllmv2 SDPA / (ours sel + sparse)")));
      }
    }
    if (eq != nullptr && phsa != nullptr && eq->selected_pairs > 0 && phsa->selected_pairs > 0) {
      const double per_key = (phsa->sparse.median() / phsa->selected_pairs) /
                             (eq->sparse.median() / eq->selected_pairs);
      ratios.push_back(Ratio(per_key, kTargetPhsaPerKey, false,
                             absl::StrCat(n, " PHSA (B 16) sparse time per key / B 64")));
    }
    report.results[n] = jr;
  }
  std::string text = table.ToString();
  text += "\ntargets (the issue's at 128K InfLLM-V2; other lengths for the trend):\n";
  for (const auto& r : ratios) text += RatioLine(r);
  report.ratios = {{"checks", ratios}};
  notes.push_back(
      "ms = median of CUDA-event times after warm-up; our selection = block summaries + "
      "LaunchSelectBlocks (two bf16 mma.sync scoring passes + top-k); TFLOP/s of selection count "
      "both passes' QK^T over visible chunks, of sparse rows (ours and Flex) the keys our lists "
      "select (causal diagonal clipped), of dense rows the causal half");
  notes.push_back(
      "FlexAttention gets, per KV head and 128-query tile, the union of our per-token lists as a "
      "BlockMask (blocks below the diagonal full, diagonal ones with a causal mask_mod); for B = "
      "16 (PHSA) the union is coarsened to 64-token KV blocks, Flex's smallest KV tile at d = 128, "
      "so it computes more keys than ours (the 'computes Nx' column)");
  notes.push_back("SDPA: K/V expanded to all query heads, flash backend, is_causal");
  for (const auto& note : torch.value("notes", nlohmann::json::array())) {
    if (note.is_string()) notes.push_back(note.get<std::string>());
  }
  report.notes = notes;
  DeviceInfo device = host;
  *exit_code = Publish(report, device, args.common, date, text);
  return absl::OkStatus();
}

}  // namespace

CLI::App* AddAttentionCommand(CLI::App& app, AttentionArgs& args) {
  CLI::App* sub = app.add_subcommand(
      "attention", "dense / sparse attention and block selection vs torch SDPA and FlexAttention");
  AddCommonFlags(*sub, args.common);
  sub->add_option("--tokens", args.tokens, "sequence lengths")->capture_default_str();
  sub->add_option("--q-heads", args.q_heads)->capture_default_str();
  sub->add_option("--kv-heads", args.kv_heads)->capture_default_str();
  sub->add_option("--head-dim", args.head_dim)->capture_default_str();
  sub->add_option("--warmup", args.warmup)->capture_default_str();
  sub->add_option("--repeats", args.repeats)->capture_default_str();
  sub->add_option("--seed", args.seed)->capture_default_str();
  sub->add_option("--python", args.python, "interpreter for torch_reference.py")
      ->capture_default_str();
  sub->add_option("--torch-script", args.script, "path of torch_reference.py");
  sub->add_flag("--no-torch", args.no_torch, "skip SDPA and FlexAttention");
  sub->add_flag("--selection-only", args.selection_only,
                "time only our selection (fused and materialised top-k); implies --no-torch");
  sub->add_option("--tmp-dir", args.tmp_dir, "where the exchange directory is made")
      ->capture_default_str();
  return sub;
}

int RunAttention(const AttentionArgs& args) {
  int exit_code = 0;
  const absl::Status s = Run(args, &exit_code);
  if (!s.ok()) return Fail("attention", s);
  return exit_code;
}

}  // namespace sparsefill::bench
