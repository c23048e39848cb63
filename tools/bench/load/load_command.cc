// `bench load`: issue 9 item 3. Exit code 1 when any property failed (the JSON lists which).
#include "tools/bench/load/load_command.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "tools/bench/harness/device_info.h"
#include "tools/bench/load/load_run.h"
#include "tools/bench/load/soak_run.h"
#include "tools/sparsefill/child_process.h"

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;

// A directory of the tiny model: --model, else <build>/models/tiny (make-model writes it).
absl::StatusOr<std::string> EnsureTinyModel(const std::string& bin_dir, const std::string& given) {
  if (!given.empty()) return given;
  const std::string dir = (fs::path(bin_dir).parent_path() / "models/tiny").string();
  std::error_code ec;
  if (fs::exists(dir + "/config.json", ec)) return dir;
  std::string tokenizer = "../shared/data/qwen3-tokenizer/tokenizer.json";
  if (!fs::exists(tokenizer, ec)) tokenizer = "none";
  tools::ChildOptions o;
  o.program = bin_dir + "/make-model";
  o.args = {"--shape",     "tiny",
            "--out",       dir,
            "--tokenizer", tokenizer == "none" ? tokenizer : fs::absolute(tokenizer).string()};
  SF_ASSIGN_OR_RETURN(auto child, tools::ChildProcess::Spawn(o));
  SF_ASSIGN_OR_RETURN(const int code, child->Wait(std::chrono::minutes(5)));
  if (code != 0) return absl::InternalError(absl::StrCat("make-model exited with ", code));
  return dir;
}

}  // namespace

// Shared by load and soak: fills the cluster part of the options, with a fresh work directory.
absl::Status PrepareCluster(const ClusterArgs& a, ClusterSetup* setup, std::string* novel,
                            std::string* text, uint64_t* seed,
                            std::unique_ptr<tools::TempDir>* work) {
  SF_ASSIGN_OR_RETURN(setup->bin_dir, tools::SelfDirectory());
  SF_ASSIGN_OR_RETURN(setup->model_dir, EnsureTinyModel(setup->bin_dir, a.model));
  std::error_code ec;
  const std::string base = a.dir.empty() ? DefaultDataDir() : a.dir;
  fs::create_directories(base, ec);
  ::setenv("TMPDIR", base.c_str(), 1);
  SF_ASSIGN_OR_RETURN(*work, tools::TempDir::Create("load"));
  setup->work_dir = (*work)->path();
  setup->workers = a.workers;
  setup->threads_per_worker = a.threads;
  setup->worker_flags.insert(setup->worker_flags.end(), a.worker_flags.begin(),
                             a.worker_flags.end());
  setup->coordinator_flags.insert(setup->coordinator_flags.end(), a.coordinator_flags.begin(),
                                  a.coordinator_flags.end());
  *novel = a.novel.empty() ? "tests/fixtures/tokenizer/pride_and_prejudice.qwen3.u32" : a.novel;
  if (!a.text.empty()) {
    *text = a.text == "none" ? "" : a.text;
  } else if (fs::exists("../shared/data/pride_and_prejudice.txt", ec)) {
    *text = "../shared/data/pride_and_prejudice.txt";
  }
  *seed = a.seed != 0 ? a.seed : std::random_device{}();
  return absl::OkStatus();
}

void AddClusterFlags(CLI::App& sub, ClusterArgs& a) {
  sub.add_option("--model", a.model, "tiny checkpoint dir (default <build>/models/tiny)");
  sub.add_option("--dir", a.dir, "scratch directory for stores, registry, logs");
  sub.add_option("--workers", a.workers, "sparsefill-worker processes")->capture_default_str();
  sub.add_option("--threads-per-worker", a.threads, "OpenMP/BLAS threads per worker")
      ->capture_default_str();
  sub.add_option("--novel-tokens", a.novel, "token ids of the novel (.u32)");
  sub.add_option("--text", a.text, "the novel's text for text requests ('none': ids only)");
  sub.add_option("--seed", a.seed, "seed of the request mix (0: random, printed)");
  sub.add_option("--worker-flag", a.worker_flags,
                 "extra flag of every worker, repeatable (--worker-flag=--heap-trim-ms=0)");
  sub.add_option("--coordinator-flag", a.coordinator_flags,
                 "extra flag of the coordinator, repeatable");
}

CLI::App* AddLoadCommand(CLI::App& app, LoadArgs& a) {
  CLI::App* sub = app.add_subcommand(
      "load", "N clients x mixed/malformed prefills against coordinator + workers on loopback");
  AddClusterFlags(*sub, a.cluster);
  sub->add_option("--clients", a.clients, "concurrent clients")->capture_default_str();
  sub->add_option("--requests", a.requests, "requests in total")->capture_default_str();
  sub->add_option("--min-tokens", a.min_tokens, "shortest valid prompt")->capture_default_str();
  sub->add_option("--max-tokens", a.max_tokens, "longest valid prompt (the server's maximum)")
      ->capture_default_str();
  sub->add_option("--malformed", a.malformed, "fraction of malformed requests")
      ->capture_default_str();
  sub->add_option("--max-queue", a.max_queue, "the coordinator's admission queue")
      ->capture_default_str();
  sub->add_option("--max-inflight-tokens", a.max_inflight,
                  "the coordinator's in-flight token budget (0: 2 x --max-tokens)")
      ->capture_default_str();
  sub->add_option("--timeout-s", a.timeout_s, "deadline of each call")->capture_default_str();
  AddCommonFlags(*sub, a.common);
  return sub;
}

int RunLoad(const LoadArgs& a) {
  const std::string date = UtcIsoNow();
  LoadOptions o;
  std::unique_ptr<tools::TempDir> work;
  if (absl::Status s =
          PrepareCluster(a.cluster, &o.cluster, &o.novel_tokens, &o.novel_text, &o.seed, &work);
      !s.ok()) {
    return Fail("load", s);
  }
  o.clients = a.clients;
  o.requests = a.requests;
  o.min_tokens = a.min_tokens;
  o.max_tokens = a.max_tokens;
  o.malformed_fraction = a.malformed;
  o.max_queue = a.max_queue;
  o.max_inflight_tokens = a.max_inflight;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  o.log = [](const std::string& s) { std::fprintf(stderr, "bench load: %s\n", s.c_str()); };
  std::fprintf(stderr, "bench load: seed %llu\n", static_cast<unsigned long long>(o.seed));
  absl::StatusOr<LoadResult> r = RunLoadTest(o);
  if (!r.ok()) return Fail("load", r.status());
  DeviceInfo device;
  if (auto d = ProbeDevice(DefaultDataDir()); d.ok()) device = *std::move(d);
  Report report;
  report.benchmark = "load";
  report.config = r->json["config"];
  report.config["setup"] =
      "real processes on 127.0.0.1: sparsefill-coordinator + N sparsefill-worker (CPU backend, "
      "tiny synthetic Qwen3 model), clients = CoordinatorClient each on its own channel";
  report.results = r->json;
  report.results.erase("config");
  report.ratios = {{"acceptance", {{"ok", r->violations.empty()}}}};
  report.notes.push_back(
      absl::StrCat(device.logical_cores, " logical cores shared by servers and clients"));
  Table t({"outcome", "count", "p50 s", "p99 s"});
  for (const char* k : {"ready", "resource_exhausted", "invalid_argument", "other"}) {
    const auto& l = r->json["latency_by_outcome"][k];
    const int64_t n = l["count"].get<int64_t>();
    t.AddRow({k, std::to_string(n), n > 0 ? Fixed(l["p50_s"].get<double>(), 3) : "-",
              n > 0 ? Fixed(l["p99_s"].get<double>(), 3) : "-"});
  }
  std::string table = t.ToString();
  table += absl::StrCat(
      "throughput: ", Fixed(r->json["throughput"]["requests_per_s"].get<double>()), " requests/s, ",
      Fixed(r->json["throughput"]["ready_tokens_per_s"].get<double>(), 0),
      " prefilled tokens/s over ", Fixed(r->seconds, 1), " s\n");
  for (const auto& m : r->json["memory"]) {
    table +=
        absl::StrCat(m["process"].get<std::string>(), ": RSS ",
                     Fixed(m["rss_after_warmup_mib"].get<double>(), 1), " MiB after warm-up, ",
                     Fixed(m["rss_after_run_mib"].get<double>(), 1), " MiB after the run, peak ",
                     Fixed(m["peak_rss_mib"].get<double>(), 1), " MiB\n");
  }
  for (const std::string& v : r->violations) table += absl::StrCat("VIOLATION: ", v, "\n");
  table += absl::StrCat("load test: ", r->violations.empty() ? "PASS" : "FAIL", "\n");
  const int code = Publish(report, device, a.common, date, table);
  return r->violations.empty() ? code : 1;
}

}  // namespace sparsefill::bench
