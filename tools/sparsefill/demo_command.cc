// `sparsefill demo`: DESIGN §1 end to end on one machine. Starts the real processes on loopback
// (N x sparsefill-worker, sparsefill-coordinator, then decode-sink), prefills the first 32K
// tokens of real text with PHSA (measuring quality against dense attention), lets the decode
// sink stream the cache while later layers are still computing, and prints a short report. Every
// child is in one process group that is killed on every exit path, SIGINT included.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "sparsefill/client/coordinator_client.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/tokenizer.h"
#include "tools/sparsefill/commands.h"
#include "tools/sparsefill/demo_report.h"
#include "tools/sparsefill/local_cluster.h"
#include "tools/sparsefill/token_file.h"

namespace sparsefill::tools {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Blocks the stop signals in this thread and every thread started later (gRPC's included), and
// waits for them on a thread of its own, which kills the cluster's process group, removes the
// work directory and exits: the one place a SIGINT is handled, whatever the main thread is doing.
class SignalWatcher {
 public:
  SignalWatcher() {
    sigemptyset(&set_);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) sigaddset(&set_, s);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this] { Watch(); });
  }
  ~SignalWatcher() {
    done_ = true;
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }
  void SetGroup(pid_t group) { group_ = group; }
  void SetWorkDir(const std::string& dir) {
    std::lock_guard<std::mutex> lock(mu_);
    work_dir_ = dir;
  }

 private:
  void Watch() {
    while (true) {
      int sig = 0;
      if (sigwait(&set_, &sig) != 0) continue;
      if (sig == SIGUSR1) {
        if (done_) return;
        continue;
      }
      const pid_t group = group_;
      if (group > 0) ::killpg(group, SIGKILL);
      std::string dir;
      {
        std::lock_guard<std::mutex> lock(mu_);
        dir = work_dir_;
      }
      // SIGKILL is delivered asynchronously: a dying child can still create a file (a RocksDB
      // log) while the tree is removed, so retry until the directory is really gone (~2 s max).
      for (int attempt = 0; !dir.empty() && attempt < 40; ++attempt) {
        std::error_code ec;
        fs::remove_all(dir, ec);
        if (!fs::exists(dir, ec)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      std::fprintf(stderr, "\nsparsefill demo: %s: stopped every process of the demo\n",
                   strsignal(sig));
      std::_Exit(128 + sig);
    }
  }

  sigset_t set_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  std::atomic<pid_t> group_{0};
  std::mutex mu_;
  std::string work_dir_;
};

// A progress bar on a terminal, plain lines otherwise; driven by the Prefill progress stream.
// With --json the progress goes to stderr so that stdout holds the report alone.
class Progress {
 public:
  Progress(FILE* out, bool tty) : out_(out), tty_(tty) {}
  void Line(const std::string& s) {
    EndBar();
    std::fprintf(out_, "%s\n", s.c_str());
    std::fflush(out_);
  }
  // An empty bar on a terminal (the plain output waits for the first layer).
  void Start(int32_t total) {
    if (tty_) Layer(0, total, 0);
  }
  void Layer(int32_t done, int32_t total, double seconds) {
    if (!tty_) {
      std::fprintf(out_, "  layer %d/%d done (%.1f s)\n", done, total, seconds);
      std::fflush(out_);
      return;
    }
    constexpr int kWidth = 32;
    const int filled = total > 0 ? done * kWidth / total : 0;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(kWidth - filled), '.');
    std::fprintf(out_, "\r  prefill [%s] layer %d/%d  %6.1f s", bar.c_str(), done, total, seconds);
    std::fflush(out_);
    on_bar_ = true;
  }
  void EndBar() {
    if (on_bar_) std::fprintf(out_, "\n");
    on_bar_ = false;
  }

 private:
  FILE* out_;
  bool tty_;
  bool on_bar_ = false;
};

std::string SharedDataDir() {
  if (const char* env = std::getenv("SPARSEFILL_SHARED_DATA"); env != nullptr && *env != '\0') {
    return env;
  }
  std::error_code ec;
  if (fs::is_directory("../shared/data", ec)) return "../shared/data";
  return std::string(SPARSEFILL_SOURCE_DIR) + "/../shared/data";
}

std::string SourceDir() {
  std::error_code ec;
  if (fs::exists("tests/fixtures/tokenizer", ec)) return ".";
  return SPARSEFILL_SOURCE_DIR;
}

struct Prompt {
  std::vector<int32_t> ids;  // max_tokens + 1 when the source has them: the last one follows
  std::string source;        // what the report says about the text
};

// The prompt and the token that follows it. Text is cut to a prefix before tokenising: the novel
// averages ~4.4 bytes per token, so 8 bytes per token leaves room for any text, and only the
// last pre-token can differ from tokenising the whole file.
absl::StatusOr<Prompt> LoadPrompt(const DemoArgs& a, const std::string& model_dir) {
  Prompt p;
  std::string text_path = a.text;
  std::string tokens_path = a.tokens;
  if (text_path.empty() && tokens_path.empty()) {
    const std::string novel = SharedDataDir() + "/pride_and_prejudice.txt";
    std::error_code ec;
    if (fs::exists(novel, ec) && fs::exists(model_dir + "/tokenizer.json", ec)) {
      text_path = novel;
      p.source = absl::StrCat(novel, " (Pride and Prejudice, the shared novel)");
    } else {
      tokens_path = SourceDir() + "/tests/fixtures/tokenizer/pride_and_prejudice.qwen3.u32";
      p.source = absl::StrCat(tokens_path, " (", novel,
                              " or the model's tokenizer is missing: the same novel's Qwen3 token "
                              "ids, shipped in the repository)");
    }
  } else {
    p.source = text_path.empty() ? tokens_path : text_path;
  }
  const size_t want = static_cast<size_t>(a.max_tokens) + 1;
  if (!tokens_path.empty()) {
    SF_ASSIGN_OR_RETURN(p.ids, ReadTokenFile(tokens_path));
  } else {
    SF_ASSIGN_OR_RETURN(auto tok, engine::Tokenizer::FromFile(model_dir + "/tokenizer.json"));
    SF_ASSIGN_OR_RETURN(const std::string bytes, ReadFileBytes(text_path));
    size_t cut = std::min(bytes.size(), want * 8 + 4096);
    // Not inside a UTF-8 sequence: the tokenizer refuses a broken character.
    while (cut > 0 && cut < bytes.size() && (static_cast<uint8_t>(bytes[cut]) & 0xc0) == 0x80) {
      --cut;
    }
    SF_ASSIGN_OR_RETURN(p.ids, tok->Encode(std::string_view(bytes).substr(0, cut)));
    if (p.ids.size() < want + 1 && cut < bytes.size()) {
      SF_ASSIGN_OR_RETURN(p.ids, tok->Encode(bytes));
    }
  }
  if (p.ids.size() > want) p.ids.resize(want);
  if (p.ids.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(p.source, ": fewer than 2 tokens"));
  }
  return p;
}

// Writes the tiny synthetic checkpoint with make-model when the directory has none.
absl::Status EnsureModel(const std::string& bin_dir, const std::string& model_dir,
                         Progress& progress) {
  std::error_code ec;
  if (fs::exists(model_dir + "/config.json", ec)) return absl::OkStatus();
  std::string tokenizer = SharedDataDir() + "/qwen3-tokenizer/tokenizer.json";
  if (!fs::exists(tokenizer, ec)) tokenizer = "none";
  progress.Line(absl::StrCat("writing the tiny synthetic model to ", model_dir,
                             " (make-model; tokenizer ", tokenizer, ")"));
  ChildOptions o;
  o.program = bin_dir + "/make-model";
  o.args = {"--shape", "tiny", "--out", model_dir, "--tokenizer", tokenizer};
  SF_ASSIGN_OR_RETURN(auto child, ChildProcess::Spawn(o));
  SF_ASSIGN_OR_RETURN(const int code, child->Wait(std::chrono::minutes(5)));
  if (code != 0) {
    return absl::InternalError(absl::StrCat("make-model exited with code ", code));
  }
  return absl::OkStatus();
}

absl::Status CheckBinaries(const std::string& bin_dir) {
  for (const char* b :
       {"sparsefill-worker", "sparsefill-coordinator", "decode-sink", "make-model"}) {
    if (::access((bin_dir + "/" + b).c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(bin_dir, "/", b,
                       " is missing: build it (tools/build sparsefill_worker_bin "
                       "sparsefill_coordinator_bin decode_sink make_model)"));
    }
  }
  return absl::OkStatus();
}

struct DemoRun {
  Prompt prompt;
  std::string model_dir;
  client::PrefillResult prefill;
  nlohmann::json sink;
  int64_t prefill_done_unix_ms = 0;
  std::vector<double> layer_done_seconds;  // since admission
};

absl::Status Run(const DemoArgs& a, SignalWatcher& watcher, Progress& progress, DemoRun& run,
                 std::unique_ptr<LocalCluster>& cluster, std::unique_ptr<TempDir>& work) {
  SF_ASSIGN_OR_RETURN(const std::string bin_dir, SelfDirectory());
  SF_RETURN_IF_ERROR(CheckBinaries(bin_dir));
  run.model_dir =
      a.model.empty() ? (fs::path(bin_dir).parent_path() / "models/tiny").string() : a.model;
  SF_RETURN_IF_ERROR(EnsureModel(bin_dir, run.model_dir, progress));
  SF_ASSIGN_OR_RETURN(run.prompt, LoadPrompt(a, run.model_dir));
  const std::vector<int32_t> tokens(run.prompt.ids.begin(), run.prompt.ids.end() - 1);
  const int32_t next_token = a.next_token >= 0 ? a.next_token : run.prompt.ids.back();
  progress.Line(
      absl::StrCat("text      ", run.prompt.source, ": first ", tokens.size(), " tokens"));

  SF_ASSIGN_OR_RETURN(work, TempDir::Create("sparsefill-demo"));
  watcher.SetWorkDir(work->path());
  LocalClusterOptions co;
  co.bin_dir = bin_dir;
  co.model_dir = run.model_dir;
  co.model_name = "tiny";
  co.workers = a.workers;
  co.work_dir = work->path();
  co.metrics_port_base = a.metrics_port_base;
  co.worker_flags = {"--backend", a.backend};
  // The workers share this machine's cores: each gets its share (unless the caller chose).
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    const int32_t cores = static_cast<int32_t>(std::max(1u, std::thread::hardware_concurrency()));
    co.threads_per_worker = std::max(1, cores / a.workers);
  }
  progress.Line(absl::StrCat("starting  ", a.workers,
                             " x sparsefill-worker + "
                             "sparsefill-coordinator on 127.0.0.1 (logs in ",
                             work->path(), "/logs)"));
  absl::StatusOr<std::unique_ptr<LocalCluster>> started = LocalCluster::Start(co);
  if (!started.ok()) return started.status();
  cluster = *std::move(started);
  watcher.SetGroup(cluster->process_group());
  progress.Line(absl::StrCat("          coordinator ", cluster->coordinator_address(), ", workers ",
                             absl::StrJoin(cluster->worker_addresses(), ", ")));
  if (a.metrics_port_base > 0) {
    std::vector<std::string> worker_metrics;
    for (int32_t i = 0; i < a.workers; ++i) {
      worker_metrics.push_back(cluster->worker_metrics_address(i));
    }
    progress.Line(absl::StrCat("          metrics: coordinator ",
                               cluster->coordinator_metrics_address(), ", workers ",
                               absl::StrJoin(worker_metrics, ", ")));
  }

  client::ConnectionOptions conn;
  conn.address = cluster->coordinator_address();
  conn.default_timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  SF_ASSIGN_OR_RETURN(auto client, client::CoordinatorClient::Connect(conn));

  client::PrefillRequest req;
  req.model = "tiny";
  req.tokens = tokens;
  SF_ASSIGN_OR_RETURN(req.selection.policy, engine::ParsePolicy(a.policy));
  req.measure = a.measure;
  SF_ASSIGN_OR_RETURN(req.information_loss_queries, ParseLossQueries(a.loss_queries));
  std::unique_ptr<ChildProcess> sink;
  absl::Status sink_start = absl::OkStatus();
  Clock::time_point admitted = Clock::now();
  absl::StatusOr<client::PrefillResult> result =
      client->Prefill(req, [&](const client::PrefillProgress& p) {
        if (p.kind == client::PrefillProgress::Kind::kAdmitted) {
          admitted = Clock::now();
          progress.Line(absl::StrCat(
              "prefill   cache ", p.cache.ToHex(), " admitted: ", p.num_tokens, " tokens on ",
              p.workers, " workers, ", p.num_layers, " layers, policy ", a.policy,
              a.measure ? "; measuring: a dense reference pass runs first, then the sparse layers"
                        : ""));
          // The decode node starts now, so layer 0 can reach it while later layers compute.
          auto s = cluster->Spawn(
              "decode-sink",
              {"--coordinator", cluster->coordinator_address(), "--model", run.model_dir, "--cache",
               p.cache.ToHex(), "--next-token", std::to_string(next_token), "--top", "5", "--json",
               "--quiet", "--timeout-s", std::to_string(a.timeout_s)},
              "decode-sink");
          if (s.ok()) {
            sink = *std::move(s);
          } else {
            sink_start = s.status();
          }
          progress.Start(p.num_layers);
        } else {
          run.layer_done_seconds.push_back(Since(admitted));
          progress.Layer(p.layer + 1, p.layers_total, Since(admitted));
        }
      });
  progress.EndBar();
  run.prefill_done_unix_ms = UnixMs();
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat("Prefill: ", result.status().message(), "\ncoordinator log:\n",
                                     cluster->LogTail("coordinator")));
  }
  run.prefill = *std::move(result);
  progress.Line(absl::StrCat("          done in ", absl::StrFormat("%.1f", Since(admitted)),
                             " s; waiting for the decode sink"));
  SF_RETURN_IF_ERROR(sink_start);
  if (sink == nullptr) return absl::InternalError("Prefill ended without an Admitted message");
  absl::StatusOr<int> code =
      sink->Wait(std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000)));
  if (!code.ok()) return code.status();
  if (*code != 0) {
    return absl::InternalError(absl::StrCat("decode-sink exited with code ", *code, ":\n",
                                            cluster->LogTail("decode-sink")));
  }
  run.sink = nlohmann::json::parse(sink->Stdout(), nullptr, /*allow_exceptions=*/false);
  if (!run.sink.is_object() || !run.sink.contains("stream") || !run.sink.contains("decode")) {
    return absl::InternalError(
        absl::StrCat("decode-sink printed no JSON result:\n", sink->Stdout().substr(0, 2000)));
  }
  return absl::OkStatus();
}

}  // namespace

CLI::App* AddDemoCommand(CLI::App& app, DemoArgs& a) {
  CLI::App* cmd = app.add_subcommand(
      "demo", "run coordinator, workers and a decode sink on loopback and prefill real text");
  cmd->add_option("--model", a.model,
                  "checkpoint directory (default: <build>/models/tiny, written by make-model "
                  "when missing)");
  auto* text = cmd->add_option("--text", a.text,
                               "text file (default: ../shared/data/pride_and_prejudice.txt, "
                               "else the novel's token ids shipped in tests/fixtures)");
  auto* tokens = cmd->add_option("--tokens", a.tokens, "token-id file instead of text");
  text->excludes(tokens);
  tokens->excludes(text);
  cmd->add_option("--max-tokens", a.max_tokens, "prompt length in tokens")->capture_default_str();
  cmd->add_option("--workers", a.workers, "number of sparsefill-worker processes")
      ->capture_default_str();
  cmd->add_option("--policy", a.policy, "dense|infllmv2|phsa|nosa")->capture_default_str();
  cmd->add_option("--backend", a.backend,
                  "the workers' engine backend: cpu|cuda|auto (cuda runs the prompt on one "
                  "worker's GPU: give --workers 1 --no-measure)")
      ->capture_default_str();
  cmd->add_flag("--measure,!--no-measure", a.measure,
                "measure quality against dense attention (default on; --no-measure skips the "
                "dense reference run)");
  cmd->add_option("--loss-queries", a.loss_queries,
                  "average the information loss over a stratified sample of N query positions "
                  "spread over the prompt, or over every query with 'all' (-1; as costly as "
                  "dense attention scores again: about 40 s more for the 32K demo on 2 cores)")
      ->capture_default_str();
  cmd->add_option("--next-token", a.next_token,
                  "token fed to the decode step (default: the token that follows the prompt "
                  "in the text)");
  cmd->add_flag("--json", a.json, "print the report as one JSON object");
  cmd->add_option("--timeout-s", a.timeout_s, "deadline of the prefill and of the stream")
      ->capture_default_str();
  cmd->add_option("--metrics-port-base", a.metrics_port_base,
                  "serve /metrics on 127.0.0.1: the coordinator on this port, worker i on "
                  "port + 1 + i (default 0: no metrics endpoints)");
  cmd->add_option("--hold-seconds", a.hold_seconds,
                  "keep the cluster up this long after the report, e.g. for Prometheus to "
                  "scrape it; Ctrl-C ends it earlier (default 0)");
  return cmd;
}

int RunDemo(const DemoArgs& a) {
  const Clock::time_point start = Clock::now();
  if (a.max_tokens < 1 || a.workers < 1 || a.timeout_s <= 0) {
    std::fprintf(stderr,
                 "sparsefill demo: --max-tokens, --workers and --timeout-s must be "
                 "positive\n");
    return 2;
  }
  if (a.metrics_port_base < 0 || static_cast<int64_t>(a.metrics_port_base) + a.workers > 65535) {
    std::fprintf(stderr,
                 "sparsefill demo: --metrics-port-base %d: give 0 (no metrics) or a port P with "
                 "P + %d <= 65535 (the coordinator on P, worker i on P + 1 + i)\n",
                 a.metrics_port_base, a.workers);
    return 2;
  }
  if (a.backend != "cpu" && a.backend != "cuda" && a.backend != "auto") {
    std::fprintf(stderr, "sparsefill demo: --backend %s: give cpu, cuda or auto\n",
                 a.backend.c_str());
    return 2;
  }
  if (a.backend == "cuda" && (a.workers != 1 || a.measure)) {
    std::fprintf(stderr,
                 "sparsefill demo: --backend cuda runs a prompt on one worker's GPU and does not "
                 "measure quality yet: add --workers 1 --no-measure\n");
    return 2;
  }
  if (absl::StatusOr<int32_t> q = ParseLossQueries(a.loss_queries); !q.ok()) {
    std::fprintf(stderr, "sparsefill demo: %s\n", std::string(q.status().message()).c_str());
    return 2;
  }
  if (!(a.hold_seconds >= 0) || a.hold_seconds > 7 * 24 * 3600) {
    std::fprintf(stderr, "sparsefill demo: --hold-seconds %g: give 0 .. 604800\n", a.hold_seconds);
    return 2;
  }
  // A closed stdout (`| head`) must not kill the demo before it has stopped its processes.
  ::signal(SIGPIPE, SIG_IGN);
  SignalWatcher watcher;
  FILE* progress_out = a.json ? stderr : stdout;
  Progress progress(progress_out, ::isatty(::fileno(progress_out)) == 1);
  DemoRun run;
  std::unique_ptr<LocalCluster> cluster;
  std::unique_ptr<TempDir> work;
  const absl::Status s = Run(a, watcher, progress, run, cluster, work);
  const bool hold = s.ok() && a.hold_seconds > 0;
  auto report = [&] {
    DemoReport r;
    r.text_source = run.prompt.source;
    r.model_dir = run.model_dir;
    r.workers = a.workers;
    r.backend = a.backend;
    r.prefill = run.prefill;
    r.sink = run.sink;
    r.prefill_done_unix_ms = run.prefill_done_unix_ms;
    r.layer_done_seconds = run.layer_done_seconds;
    r.next_token_note =
        a.next_token >= 0 ? "given by --next-token" : "the token that follows the prompt";
    r.wall_seconds = Since(start);
    PrintDemoReport(r, a.json);
  };
  if (hold) {
    // The report first, so that whoever waits on it can look at the still-running cluster; the
    // signal watcher ends the hold (and the processes) on Ctrl-C or SIGTERM.
    report();
    std::fflush(stdout);
    progress.Line(
        absl::StrFormat("holding   the cluster up for %.0f s (Ctrl-C stops it)", a.hold_seconds));
    std::this_thread::sleep_for(std::chrono::duration<double>(a.hold_seconds));
  }
  // Children first (they write into the work directory), then the directory.
  if (cluster != nullptr) cluster->StopAll();
  watcher.SetGroup(0);
  if (work != nullptr) work->Remove();
  watcher.SetWorkDir("");
  if (!s.ok()) {
    std::fprintf(stderr, "sparsefill demo: %s\n", s.ToString().c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ||
                   s.code() == absl::StatusCode::kFailedPrecondition ||
                   s.code() == absl::StatusCode::kNotFound
               ? 2
               : 1;
  }
  if (!hold) report();
  return 0;
}

}  // namespace sparsefill::tools
