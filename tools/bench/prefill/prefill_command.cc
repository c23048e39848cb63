// `bench prefill` (see prefill_command.h). Targets (issue "CUDA engine"): at 128K tokens of the
// qwen3-8b shape, InfLLM-V2 >= 3x faster than the dense PyTorch reference and <= 1.5x the GEMM
// floor (2 * non-embedding params * N / the bf16 GEMM rate measured in the same run); our dense
// policy within 10% of the reference; 512K tokens complete on one 80 GB device with the K/V
// offloaded to host memory.
#include "tools/bench/prefill/prefill_command.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/dense_attention/dense_engine.h"
#include "kernels/sparse_attention/sparse_engine.h"
#include "services/engine/cuda/cuda_runner.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/engine.h"
#include "sparsefill/engine/synthetic_checkpoint.h"
#include "sparsefill/engine/tokenizer.h"
#include "tools/bench/prefill/gpu_memory.h"

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;
using engine::Engine;
using Clock = std::chrono::steady_clock;

// Keeps every layer's K/V in host memory as bf16 (the cache the KV store would receive): one
// arena, touched before the timed run, filled by parallel copies of what the engine hands over.
class HostOffloadSink : public engine::LayerSink {
 public:
  HostOffloadSink(const engine::ModelConfig& c, int64_t tokens)
      : layer_elems_(size_t(tokens) * c.num_kv_heads * c.head_dim),
        arena_(layer_elems_ * 2 * size_t(c.num_layers)) {}
  bool AcceptsBf16() const override { return true; }
  absl::Status OnLayer(const engine::LayerKv& kv) override {
    const auto t0 = Clock::now();
    const size_t n = size_t(kv.num_tokens) * kv.kv_heads * kv.head_dim;
    if (n != layer_elems_ || size_t(kv.layer) * 2 * n + 2 * n > arena_.size()) {
      return absl::InternalError("offload sink: unexpected layer shape");
    }
    uint16_t* dst = arena_.data() + size_t(kv.layer) * 2 * n;
    // OpenMP's pool (the build compiles with -fopenmp): no threads started per layer.
    const int64_t count = static_cast<int64_t>(n);
    if (kv.k_bf16 != nullptr) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < count; i += kCopyGrain) {
        const size_t len = size_t(std::min<int64_t>(kCopyGrain, count - i));
        std::memcpy(dst + i, kv.k_bf16 + i, len * 2);
        std::memcpy(dst + n + i, kv.v_bf16 + i, len * 2);
      }
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < count; ++i) {
        dst[i] = F32ToBf16(kv.k[i]);
        dst[n + i] = F32ToBf16(kv.v[i]);
      }
    }
    bytes += 4 * n;
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    return absl::OkStatus();
  }
  void Touch() {
    const size_t page = 4096 / sizeof(uint16_t);
    for (size_t i = 0; i < arena_.size(); i += page) arena_[i] = 0;
  }
  uint64_t bytes = 0;
  double seconds = 0;

 private:
  static constexpr int64_t kCopyGrain = int64_t{1} << 18;  // elements per memcpy piece
  size_t layer_elems_;
  std::vector<uint16_t> arena_;
};

absl::StatusOr<std::string> RunCapture(const std::string& cmd) {
  std::FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return absl::InternalError(absl::StrCat("cannot run: ", cmd));
  std::string out;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, got);
  const int rc = pclose(p);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("`", cmd, "` exited with ", rc, "; output: ", out));
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> PromptTokens(const Engine& e, const PrefillArgs& a, int64_t n,
                                                  std::string* source) {
  std::vector<int32_t> ids;
  if (e.tokenizer() != nullptr && fs::exists(a.text)) {
    std::ifstream in(a.text, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    SF_ASSIGN_OR_RETURN(ids, e.tokenizer()->Encode(ss.str()));
    *source = absl::StrCat(a.text, " (", ids.size(), " tokens, repeated to length)");
  }
  if (ids.empty()) {
    Rng rng(a.seed);
    ids.resize(size_t(std::min<int64_t>(n, 1 << 20)));
    for (auto& t : ids) t = int32_t(rng.NextU64() % uint64_t(e.config().vocab_size));
    *source = absl::StrCat("random ids, seed ", a.seed);
  }
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = ids[size_t(i) % ids.size()];
  return out;
}

absl::Status EnsureModel(const PrefillArgs& a, std::string* note) {
  if (fs::exists(fs::path(a.model) / "config.json")) {
    *note = "existing checkpoint";
    return absl::OkStatus();
  }
  SF_ASSIGN_OR_RETURN(engine::ModelConfig config, engine::SyntheticModelConfig(a.shape));
  // The shape's own position limit (40960 for Qwen3-8B without YaRN) would refuse the lengths
  // this benchmark is about; the limit is raised, nothing else changes.
  int64_t longest = a.long_tokens;
  for (int64_t n : a.tokens) longest = std::max(longest, n);
  config.max_position_embeddings = std::max<int64_t>(config.max_position_embeddings, longest);
  engine::SyntheticCheckpointOptions o;
  o.layers = a.layers;
  o.seed = 1;
  const std::string tok =
      (fs::path(a.text).parent_path() / "qwen3-tokenizer" / "tokenizer.json").string();
  if (fs::exists(tok)) o.tokenizer_path = tok;
  const auto t0 = Clock::now();
  SF_ASSIGN_OR_RETURN(engine::SyntheticCheckpointResult r,
                      engine::WriteSyntheticCheckpoint(a.model, config, o));
  *note = absl::StrCat("made ", a.shape, " (", r.tensor_bytes, " bytes) in ",
                       std::chrono::duration<double>(Clock::now() - t0).count(), " s; ",
                       r.tokenizer_note);
  return absl::OkStatus();
}

struct OurRun {
  std::string policy;
  int64_t tokens = 0;
  absl::Status status;
  double seconds = 0;
  double sparsity = 0;
  uint64_t peak_bytes = 0;
  uint64_t offload_bytes = 0;
  double sink_seconds = 0;
  std::vector<engine::StageTime> stages;
  int64_t selected_keys = 0;
  int64_t computed_keys = 0;  // by the sparse attention kernel, over all layers
};

OurRun RunOurs(Engine& e, const std::vector<int32_t>& tokens, const std::string& policy_name,
               HostOffloadSink& sink) {
  OurRun r;
  r.policy = policy_name;
  r.tokens = static_cast<int64_t>(tokens.size());
  absl::StatusOr<engine::Policy> policy = engine::ParsePolicy(policy_name);
  if (!policy.ok()) {
    r.status = policy.status();
    return r;
  }
  engine::SelectionConfig sel = engine::SelectionConfig::ForPolicy(*policy, e.config());
  absl::StatusOr<engine::PrefillPlan> plan = e.Plan(r.tokens, sel);
  if (!plan.ok()) {
    r.status = plan.status();
    return r;
  }
  sink.bytes = 0;
  sink.seconds = 0;
  GpuMemoryPeak peak;
  engine::PrefillOptions options;
  options.profile_stages = true;  // events between stages: microseconds against seconds
  absl::StatusOr<engine::PrefillResult> res = e.Prefill(*plan, tokens, options, &sink);
  r.peak_bytes = peak.peak_bytes();
  if (!res.ok()) {
    r.status = res.status();
    return r;
  }
  r.seconds = res->seconds;
  r.sparsity = res->sparsity;
  r.offload_bytes = sink.bytes;
  r.sink_seconds = sink.seconds;
  r.stages = res->stages;
  for (const engine::LayerStats& l : res->layers) {
    r.selected_keys += l.selected_keys;
    r.computed_keys += l.computed_keys;
  }
  return r;
}

}  // namespace

CLI::App* AddPrefillCommand(CLI::App& app, PrefillArgs& a) {
  CLI::App* sub = app.add_subcommand(
      "prefill", "cuda engine prefill (dense, InfLLM-V2, PHSA) vs a dense PyTorch reference");
  AddCommonFlags(*sub, a.common);
  sub->add_option("--model", a.model, "checkpoint directory (made when absent)");
  sub->add_option("--shape", a.shape, "make-model shape when the checkpoint is made")
      ->capture_default_str();
  sub->add_option("--layers", a.layers, "> 0: a shallower model (quick runs)");
  sub->add_option("--tokens", a.tokens, "prompt lengths")->capture_default_str();
  sub->add_option("--policies", a.policies, "policies to time")->capture_default_str();
  sub->add_option("--long-tokens", a.long_tokens, "one InfLLM-V2 run at this length (0: none)")
      ->capture_default_str();
  sub->add_option("--text", a.text, "prompt text (tokenized with the checkpoint's tokenizer)");
  sub->add_flag("!--no-torch", a.torch, "skip the PyTorch reference");
  sub->add_option("--python", a.python, "python with torch")->capture_default_str();
  sub->add_option("--seed", a.seed, "token ids when there is no text")->capture_default_str();
  sub->add_option("--dense-engine", a.dense_engine,
                  "dense attention kernel of the engine: auto, mma.sync, wgmma, wgmma-serial, "
                  "wgmma-pingpong, wgmma-tma, wgmma-tma-pingpong")
      ->capture_default_str();
  sub->add_option("--sparse-engine", a.sparse_engines,
                  "the sparse attention kernel, each timed for every sparse policy: auto, "
                  "mma.sync, wgmma")
      ->capture_default_str();
  sub->add_option("--sparse-rows", a.sparse_rows,
                  "CTA shapes of the sparse attention kernel, each timed for every sparse policy: "
                  "auto, 64, 128 (rows = tokens x GQA group heads)")
      ->capture_default_str();
  sub->add_option("--tile-skip", a.tile_skip,
                  "the sparse kernel's skip of key tiles an m-tile's tokens did not select, each "
                  "timed for every sparse policy and CTA shape: on, off")
      ->capture_default_str();
  return sub;
}

int RunPrefill(const PrefillArgs& args) {
  PrefillArgs a = args;
  if (a.model.empty()) a.model = (fs::path(DefaultDataDir()) / "models" / a.shape).string();
  kernels::DenseEngine dense_engine = kernels::DenseEngine::kAuto;
  if (!kernels::ParseDenseEngine(a.dense_engine, &dense_engine)) {
    return Fail("prefill", absl::InvalidArgumentError(
                               absl::StrCat("unknown --dense-engine '", a.dense_engine, "'")));
  }
  kernels::SetAutoDenseEngine(dense_engine);
  std::vector<kernels::SparseEngine> sparse_engines;
  for (const std::string& name : a.sparse_engines) {
    kernels::SparseEngine e;
    if (!kernels::ParseSparseEngine(name, &e)) {
      return Fail("prefill",
                  absl::InvalidArgumentError(absl::StrCat("unknown --sparse-engine '", name,
                                                          "' (auto, mma.sync or wgmma)")));
    }
    sparse_engines.push_back(e);
  }
  if (sparse_engines.empty()) {
    return Fail("prefill", absl::InvalidArgumentError("--sparse-engine needs at least one kernel"));
  }
  std::vector<kernels::SparseRows> sparse_rows;
  for (const std::string& name : a.sparse_rows) {
    kernels::SparseRows rows;
    if (!kernels::ParseSparseRows(name, &rows)) {
      return Fail("prefill", absl::InvalidArgumentError(absl::StrCat("unknown --sparse-rows '",
                                                                     name, "' (auto, 64 or 128)")));
    }
    sparse_rows.push_back(rows);
  }
  if (sparse_rows.empty()) {
    return Fail("prefill", absl::InvalidArgumentError("--sparse-rows needs at least one shape"));
  }
  std::vector<bool> tile_skip;
  for (const std::string& v : a.tile_skip) {
    if (v != "on" && v != "off") {
      return Fail("prefill", absl::InvalidArgumentError(
                                 absl::StrCat("unknown --tile-skip '", v, "' (on or off)")));
    }
    tile_skip.push_back(v == "on");
  }
  if (tile_skip.empty()) {
    return Fail("prefill", absl::InvalidArgumentError("--tile-skip needs on, off or both"));
  }
  if (a.text.empty()) a.text = "../shared/data/pride_and_prejudice.txt";
  if (a.common.out_dir.empty()) a.common.out_dir = DefaultResultsDir();
  for (int64_t n : a.tokens) {
    if (n < 1) return Fail("prefill", absl::InvalidArgumentError("--tokens must be >= 1"));
  }
  engine::cuda::EnableCudaBackend();
  const std::string date = UtcIsoNow();
  std::string model_note;
  if (absl::Status s = EnsureModel(a, &model_note); !s.ok()) return Fail("prefill", s);
  auto engine = Engine::Create(a.model, {.backend = "cuda"});
  if (!engine.ok()) return Fail("prefill", engine.status());
  Engine& e = **engine;
  const engine::ModelConfig& c = e.config();
  const int64_t params = c.NonEmbeddingParams();

  Report report;
  report.benchmark = "prefill";
  report.config = {
      {"model", a.model},           {"model_note", model_note}, {"shape", a.shape},
      {"layers", c.num_layers},     {"hidden", c.hidden_size},  {"q_heads", c.num_heads},
      {"kv_heads", c.num_kv_heads}, {"head_dim", c.head_dim},   {"non_embedding_params", params},
      {"gpu", GpuInfoJson()}};
  Table table({"tokens", "run", "seconds", "tok/s", "sparsity", "peak GPU GiB", "offload GB/s",
               "x GEMM floor", "vs torch"});

  // The reference first, so its GEMM rate and times are known for the ratios.
  nlohmann::json torch = nlohmann::json::object();
  if (a.torch) {
    std::vector<std::string> ns;
    for (int64_t n : a.tokens) ns.push_back(std::to_string(n));
    const std::string script = (fs::path(__FILE__).parent_path() / "torch_reference.py").string();
    const std::string local = "tools/bench/prefill/torch_reference.py";
    const std::string cmd =
        absl::StrCat(a.python, " ", fs::exists(local) ? local : script, " --model ", a.model,
                     " --tokens ", absl::StrJoin(ns, ","), " 2>&1");
    absl::StatusOr<std::string> out = RunCapture(cmd);
    if (!out.ok()) {
      report.notes.push_back(absl::StrCat("PyTorch reference failed: ", out.status().message()));
    } else {
      const size_t brace = out->rfind("\n{");
      torch = nlohmann::json::parse(brace == std::string::npos ? *out : out->substr(brace + 1),
                                    nullptr, /*allow_exceptions=*/false);
      if (torch.is_discarded()) {
        report.notes.push_back(absl::StrCat("PyTorch reference output unreadable: ", *out));
        torch = nlohmann::json::object();
      }
    }
  }
  report.results["torch"] = torch;
  const double gemm_tflops = torch.value("gemm_tflops", 0.0);

  auto torch_seconds = [&](int64_t n) -> double {
    if (!torch.contains("runs")) return 0;
    for (const auto& r : torch["runs"]) {
      if (r.value("tokens", int64_t{0}) == n && r.contains("seconds")) return r["seconds"];
    }
    return 0;
  };
  struct Run {
    int64_t n;
    std::string policy;
    size_t rows;    // index into a.sparse_rows
    size_t skip;    // index into a.tile_skip
    size_t kernel;  // index into a.sparse_engines
  };
  std::vector<Run> runs;
  for (int64_t n : a.tokens) {
    for (const std::string& p : a.policies) {
      const bool dense = p == "dense";
      for (size_t e = 0; e < (dense ? 1 : sparse_engines.size()); ++e) {
        for (size_t r = 0; r < (dense ? 1 : sparse_rows.size()); ++r) {
          for (size_t k = 0; k < (dense ? 1 : tile_skip.size()); ++k) {
            runs.push_back({n, p, r, k, e});
          }
        }
      }
    }
  }
  if (a.long_tokens > 0) runs.push_back({a.long_tokens, "infllmv2", 0, 0, 0});

  nlohmann::json ours = nlohmann::json::array();
  std::string prompt_source;
  std::unique_ptr<HostOffloadSink> sink;
  int64_t sink_tokens = -1;
  for (const auto& [n, policy, rows, skip, kernel] : runs) {
    kernels::SetSparseEngine(sparse_engines[kernel]);
    kernels::SetSparseRows(sparse_rows[rows]);
    kernels::SetSparseTileSkip(tile_skip[skip]);
    std::string run_name = policy;
    if (policy != "dense" && a.sparse_engines[kernel] != "auto") {
      absl::StrAppend(&run_name, "-", a.sparse_engines[kernel]);
    }
    if (policy != "dense" && a.sparse_rows[rows] != "auto") {
      absl::StrAppend(&run_name, "-rows", a.sparse_rows[rows]);
    }
    if (policy != "dense" && !tile_skip[skip]) absl::StrAppend(&run_name, "-noskip");
    absl::StatusOr<std::vector<int32_t>> tokens = PromptTokens(e, a, n, &prompt_source);
    if (!tokens.ok()) return Fail("prefill", tokens.status());
    if (sink_tokens != n) {
      sink.reset();
      sink = std::make_unique<HostOffloadSink>(c, n);
      sink->Touch();
      sink_tokens = n;
      // One untimed run per length: the engine's buffers (pinned host memory included) are
      // allocated once per length and reused, as in a server. Not for the long run, whose
      // single timed run includes that allocation.
      if (n != a.long_tokens) {
        std::printf("warm-up (infllmv2) at %lld tokens...\n", static_cast<long long>(n));
        std::fflush(stdout);
        (void)RunOurs(e, *tokens, "infllmv2", *sink);
      }
    }
    std::printf("prefill %s at %lld tokens...\n", run_name.c_str(), static_cast<long long>(n));
    std::fflush(stdout);
    OurRun r = RunOurs(e, *tokens, policy, *sink);
    r.policy = run_name;
    const double floor_s =
        gemm_tflops > 0 ? 2.0 * double(params) * double(n) / (gemm_tflops * 1e12) : 0.0;
    const double ts = torch_seconds(n);
    nlohmann::json j = {{"policy", r.policy},
                        {"tokens", n},
                        {"ok", r.status.ok()},
                        {"sparse_engine", policy == "dense" ? "" : a.sparse_engines[kernel]},
                        {"sparse_rows", policy == "dense" ? "" : a.sparse_rows[rows]},
                        {"tile_skip", policy == "dense" ? "" : a.tile_skip[skip]}};
    if (!r.status.ok()) {
      j["status"] = r.status.ToString();
      table.AddRow({std::to_string(n), run_name, "failed", "", "", "", "", "", ""});
    } else {
      j["seconds"] = r.seconds;
      j["tokens_per_second"] = double(n) / r.seconds;
      j["sparsity"] = r.sparsity;
      j["peak_gpu_bytes"] = r.peak_bytes;
      j["offload_bytes_bf16"] = r.offload_bytes;
      j["offload_gbps"] = double(r.offload_bytes) / r.seconds / 1e9;
      j["sink_seconds"] = r.sink_seconds;
      if (policy != "dense" && r.selected_keys > 0) {
        // What per-token lists cost this CTA shape: pairs computed over pairs selected.
        j["selected_keys"] = r.selected_keys;
        j["computed_keys"] = r.computed_keys;
        j["computed_over_selected"] = double(r.computed_keys) / double(r.selected_keys);
        std::printf("  %s: the sparse kernel computed %.2fx the selected token-key pairs\n",
                    run_name.c_str(), double(r.computed_keys) / double(r.selected_keys));
      }
      nlohmann::json stages = nlohmann::json::array();
      std::printf("  %s at %lld tokens, device seconds per stage (all layers):", run_name.c_str(),
                  static_cast<long long>(n));
      for (const engine::StageTime& st : r.stages) {
        stages.push_back({{"stage", st.name}, {"seconds", st.seconds}});
        std::printf(" %s %.3f;", st.name.c_str(), st.seconds);
      }
      std::printf("\n");
      j["stage_seconds"] = stages;
      if (floor_s > 0) j["x_gemm_floor"] = r.seconds / floor_s;
      if (ts > 0) j["speedup_vs_torch"] = ts / r.seconds;
      table.AddRow({std::to_string(n), run_name, Fixed(r.seconds, 3),
                    Fixed(double(n) / r.seconds, 0), Fixed(r.sparsity, 3),
                    Fixed(double(r.peak_bytes) / double(1ull << 30), 1),
                    Fixed(double(r.offload_bytes) / r.seconds / 1e9, 2),
                    floor_s > 0 ? Fixed(r.seconds / floor_s, 2) : "",
                    ts > 0 ? Fixed(ts / r.seconds, 2) : ""});
    }
    ours.push_back(j);
  }
  for (int64_t n : a.tokens) {
    const double ts = torch_seconds(n);
    if (ts > 0) {
      const double floor_s =
          gemm_tflops > 0 ? 2.0 * double(params) * double(n) / (gemm_tflops * 1e12) : 0.0;
      table.AddRow({std::to_string(n), "torch dense", Fixed(ts, 3), Fixed(double(n) / ts, 0), "0",
                    "", "", floor_s > 0 ? Fixed(ts / floor_s, 2) : "", "1.00"});
    }
  }
  report.config["prompt"] = prompt_source;
  report.config["dense_engine"] = a.dense_engine;
  report.config["sparse_engines"] = a.sparse_engines;
  report.config["sparse_rows"] = a.sparse_rows;
  report.config["tile_skip"] = a.tile_skip;
  report.results["ours"] = ours;
  report.results["gemm_tflops"] = gemm_tflops;
  for (const auto& j : ours) {
    if (!j.value("ok", false)) continue;
    const std::string key =
        absl::StrCat(j["policy"].get<std::string>(), "_", j["tokens"].get<int64_t>());
    if (j.contains("speedup_vs_torch"))
      report.ratios["speedup_vs_torch_" + key] = j["speedup_vs_torch"];
    if (j.contains("x_gemm_floor")) report.ratios["x_gemm_floor_" + key] = j["x_gemm_floor"];
  }
  report.notes.push_back(
      "seconds: wall time of Engine::Prefill on the cuda backend after one untimed run at the "
      "same length (buffers are allocated once per shape): inputs up, every layer's bf16 K/V "
      "copied to pinned host memory and from there into the sink's host arena, logits down; "
      "the synthetic qwen3-8b checkpoint has its position limit raised to the longest length; "
      "GEMM floor = 2 * non-embedding params * N / the bf16 GEMM rate torch measured in "
      "this run; offload GB/s = bf16 K/V bytes stored in host memory / prefill seconds; "
      "stage_seconds: device time per stage summed over the layers of the timed run (events "
      "recorded between stages on the compute stream; 'wait for an offload slot' is time the "
      "compute stream waited for the K/V copies of two layers earlier)");
  return Publish(report, ProbeDevice("").value_or(DeviceInfo{}), a.common, date, table.ToString());
}

}  // namespace sparsefill::bench
