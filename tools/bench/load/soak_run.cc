#include "tools/bench/load/soak_run.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "tools/bench/load/cache_check.h"
#include "tools/bench/load/load_run.h"
#include "tools/bench/load/workload.h"

namespace sparsefill::bench {
namespace {

// What sparsefill-worker --inject-write-errors puts in the status of each write it fails.
constexpr char kInjectedWriteError[] = "injected RocksDB write error";

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

class Soak {
 public:
  Soak(const SoakOptions& o, const Workload& w, tools::LocalCluster& c)
      : o_(o), workload_(w), cluster_(c), address_(c.coordinator_address()) {}

  void Violation(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (violations_.size() < 200) violations_.push_back(std::move(what));
    ++violation_count_;
  }
  void Count(std::map<std::string, int64_t>& m, const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    ++m[key];
  }
  // A call that ended later than its deadline plus the grace period hung.
  void CheckTime(const char* what, double seconds) {
    const double limit = std::chrono::duration<double>(o_.deadline + o_.grace).count();
    std::lock_guard<std::mutex> lock(mu_);
    max_call_s_ = std::max(max_call_s_, seconds);
    if (seconds > limit) {
      violations_.push_back(absl::StrCat(what, " took ", seconds, " s, past its deadline of ",
                                         o_.deadline.count() / 1000.0, " s + grace"));
      ++violation_count_;
    }
  }

  // One prefill + stream + delete. Returns true when a READY cache streamed back intact.
  bool OneRequest(client::CoordinatorClient& client, const LoadRequest& r, bool probe) {
    const Clock::time_point t0 = Clock::now();
    auto result = client.Prefill(r.request, {}, {.timeout = o_.deadline});
    const double seconds = Since(t0);
    CheckTime("Prefill", seconds);
    if (!probe) Count(prefill_codes_, CodeName(result.status().code()));
    if (!result.ok()) {
      // The worker's fault flag names itself in the status the client gets.
      if (!probe && absl::StrContains(result.status().message(), kInjectedWriteError)) {
        ++failed_on_injected_writes_;
      }
      return false;
    }
    if (result->cache.state != client::CacheState::kReady) {
      Violation(absl::StrCat("Prefill OK with cache ", result->cache.id.ToHex(), " ",
                             AsAbsl(client::CacheStateName(result->cache.state))));
      return false;
    }
    ++ready_;
    const Clock::time_point s0 = Clock::now();
    auto digest = StreamAndVerify(client, result->cache.id, o_.deadline);
    CheckTime("StreamCache", Since(s0));
    if (!probe) Count(stream_codes_, CodeName(digest.status().code()));
    bool ok = digest.ok();
    if (!ok && digest.status().code() == absl::StatusCode::kDataLoss) {
      Violation(absl::StrCat("READY cache ", result->cache.id.ToHex(),
                             " served corrupt: ", digest.status().ToString()));
    }
    if (ok) {
      ++verified_;
      std::lock_guard<std::mutex> lock(mu_);
      auto [it, fresh] = prompt_digest_.emplace(r.prompt, digest->Fold());
      if (!fresh && it->second != digest->Fold()) {
        violations_.push_back(absl::StrCat("cache ", result->cache.id.ToHex(), " of prompt ",
                                           r.prompt,
                                           " differs from an earlier READY cache of "
                                           "the same prompt"));
        ++violation_count_;
        ok = false;
      }
    }
    const Clock::time_point d0 = Clock::now();
    absl::Status del = client.DeleteCache(result->cache.id, {.timeout = o_.deadline});
    CheckTime("DeleteCache", Since(d0));
    if (!del.ok()) Count(delete_codes_, CodeName(del.code()));
    return ok;
  }

  void Client(int32_t c, Clock::time_point end) {
    auto client = ConnectTo(address_, o_.deadline);
    if (!client.ok()) {
      Violation(client.status().ToString());
      return;
    }
    std::mt19937_64 rng(o_.seed * 1000003 + static_cast<uint64_t>(c));
    while (Clock::now() < end) {
      const LoadRequest r = workload_.Valid(
          std::uniform_int_distribution<int32_t>(0, workload_.pool_size() - 1)(rng));
      ++requests_;
      // A failed request (a server just killed) is retried after a pause, as a real client
      // would, instead of spinning on UNAVAILABLE.
      if (!OneRequest(**client, r, /*probe=*/false)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
  }

  // Kill, restart, probe until a request succeeds; repeated until the clients stop.
  void Chaos(Clock::time_point end) {
    std::mt19937_64 rng(o_.seed ^ 0x5eed);
    auto probe_client = ConnectTo(address_, o_.deadline);
    if (!probe_client.ok()) {
      Violation(probe_client.status().ToString());
      return;
    }
    const int32_t workers = cluster_.options().workers;
    while (true) {
      const double pause = std::uniform_real_distribution<>(o_.chaos_min_s, o_.chaos_max_s)(rng);
      {
        std::unique_lock<std::mutex> lock(stop_mu_);
        const Clock::time_point wake =
            std::min(end, Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(pause)));
        if (stop_cv_.wait_until(lock, wake, [&] { return stop_; })) {
          return;
        }
      }
      if (Clock::now() >= end) return;
      const int32_t victim = std::uniform_int_distribution<int32_t>(0, workers)(rng);
      const std::string name = victim == workers ? "coordinator" : absl::StrCat("worker", victim);
      tools::ChildProcess& p = victim == workers ? cluster_.coordinator() : cluster_.worker(victim);
      if (o_.log) o_.log(absl::StrCat("chaos: SIGKILL ", name, " (pid ", p.pid(), ")"));
      const Clock::time_point killed = Clock::now();
      p.Signal(SIGKILL);
      if (!p.Wait(std::chrono::seconds(10)).ok()) {
        Violation(absl::StrCat(name, " did not die within 10 s of SIGKILL"));
        return;
      }
      absl::Status restarted =
          victim == workers ? cluster_.RestartCoordinator() : cluster_.RestartWorker(victim);
      if (!restarted.ok()) {
        Violation(absl::StrCat("restarting ", name, ": ", restarted.ToString(), "\n",
                               cluster_.LogTail(name)));
        return;
      }
      const double restart_s = Since(killed);
      bool recovered = false;
      int32_t attempts = 0;
      while (Since(killed) < std::chrono::duration<double>(o_.recovery_timeout).count()) {
        ++attempts;
        if (OneRequest(**probe_client, workload_.Smallest(), /*probe=*/true)) {
          recovered = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      const double recovery_s = Since(killed);
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back({{"victim", name},
                         {"at_s", std::chrono::duration<double>(killed - start_).count()},
                         {"restart_s", restart_s},
                         {"recovered", recovered},
                         {"recovery_s", recovery_s},
                         {"probe_attempts", attempts}});
      ++restarts_;
      if (recovered) {
        ++recoveries_;
      } else {
        violations_.push_back(absl::StrCat("no request succeeded within ",
                                           o_.recovery_timeout.count() / 1000.0,
                                           " s after restarting ", name));
        ++violation_count_;
      }
      if (o_.log) {
        o_.log(absl::StrCat("chaos: ", name, " back after ", restart_s, " s; ",
                            recovered ? "a request succeeded " : "NOT recovered ", recovery_s,
                            " s after the kill"));
      }
    }
  }

  void Stop() {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
    stop_cv_.notify_all();
  }

  const SoakOptions& o_;
  const Workload& workload_;
  tools::LocalCluster& cluster_;
  const std::string address_;
  Clock::time_point start_ = Clock::now();
  std::atomic<int64_t> requests_{0}, ready_{0}, verified_{0}, failed_on_injected_writes_{0};
  std::mutex mu_;
  std::vector<std::string> violations_;
  int64_t violation_count_ = 0;
  std::map<std::string, int64_t> prefill_codes_, stream_codes_, delete_codes_;
  std::map<int32_t, uint64_t> prompt_digest_;
  double max_call_s_ = 0;
  nlohmann::json events_ = nlohmann::json::array();
  int64_t restarts_ = 0, recoveries_ = 0;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
};

}  // namespace

absl::StatusOr<SoakResult> RunSoakTest(const SoakOptions& o) {
  if (o.clients < 1 || !(o.seconds > 0) || !(o.chaos_min_s > 0) || o.chaos_max_s < o.chaos_min_s ||
      !(o.write_error_rate >= 0 && o.write_error_rate <= 1)) {
    return absl::InvalidArgumentError(
        "soak: need clients >= 1, seconds > 0, 0 < chaos_min_s <= chaos_max_s, write error rate "
        "in [0, 1]");
  }
  ClusterSetup setup = o.cluster;
  const std::string worker_deadline = std::to_string(o.deadline.count());
  for (std::string f : {std::string("--deadline-ms"), worker_deadline}) {
    setup.worker_flags.push_back(f);
  }
  if (o.write_error_rate > 0) {
    setup.worker_flags.push_back("--inject-write-errors");
    setup.worker_flags.push_back(std::to_string(o.write_error_rate));
  }
  for (std::string f : {std::string("--max-tokens"), std::to_string(o.max_tokens),
                        std::string("--health-interval-ms"), std::string("500"),
                        std::string("--health-timeout-ms"), std::string("1000")}) {
    setup.coordinator_flags.push_back(f);
  }
  SF_ASSIGN_OR_RETURN(StartedCluster started,
                      StartCluster(setup, o.novel_tokens, o.novel_text, o.deadline));
  const std::unique_ptr<tools::LocalCluster>& cluster = started.cluster;
  const client::ModelInfo& model = started.model;
  client::CoordinatorClient& probe = *started.probe;
  WorkloadOptions wo;
  wo.vocab_size = model.vocab_size;
  wo.server_max_tokens = o.max_tokens;
  wo.min_tokens = std::min(o.min_tokens, o.max_tokens);
  wo.max_tokens = o.max_tokens;
  wo.malformed_fraction = 0;
  SF_ASSIGN_OR_RETURN(const Workload workload,
                      Workload::Create(wo, started.novel_ids, started.novel_text, o.seed));

  Soak soak(o, workload, *cluster);
  const Clock::time_point end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> clients;
  for (int32_t c = 0; c < o.clients; ++c) clients.emplace_back([&, c] { soak.Client(c, end); });
  // The chaos loop runs on this thread, which outlives the run: a child's PR_SET_PDEATHSIG fires
  // when the thread that forked it exits, so servers restarted from a short-lived thread would
  // be killed with it.
  soak.Chaos(end);
  for (std::thread& t : clients) t.join();
  const double seconds = Since(soak.start_);

  SoakResult r;
  // The service is up at the end: one more request succeeds.
  bool final_ok = false;
  for (int i = 0; i < 10 && !final_ok; ++i) {
    final_ok = soak.OneRequest(probe, workload.Smallest(), /*probe=*/true);
  }
  std::lock_guard<std::mutex> lock(soak.mu_);
  r.violations = soak.violations_;
  if (soak.violation_count_ > static_cast<int64_t>(r.violations.size())) {
    r.violations.push_back(absl::StrCat(
        "... ", soak.violation_count_ - static_cast<int64_t>(r.violations.size()), " more"));
  }
  if (!final_ok) r.violations.push_back("no request succeeded at the end of the soak");
  // A server that died on its own (not by the chaos loop) is a crash: its exit and log go in.
  const auto dead = [&](tools::ChildProcess& p, const std::string& name) {
    if (p.Running()) return;
    auto code = p.Wait(std::chrono::milliseconds(0));
    r.violations.push_back(absl::StrCat(name, " is not running (exit ",
                                        code.ok() ? std::to_string(*code) : "?", "); log:\n",
                                        cluster->LogTail(name, 3000)));
  };
  dead(cluster->coordinator(), "coordinator");
  for (int32_t i = 0; i < setup.workers; ++i) dead(cluster->worker(i), absl::StrCat("worker", i));
  r.requests = soak.requests_;
  r.ready = soak.ready_;
  r.verified = soak.verified_;
  r.restarts = soak.restarts_;
  r.recoveries = soak.recoveries_;
  r.failed_on_injected_writes = soak.failed_on_injected_writes_;
  std::vector<double> recovery;
  for (const auto& e : soak.events_) {
    if (e["recovered"].get<bool>()) recovery.push_back(e["recovery_s"].get<double>());
  }
  r.json = {{"config",
             {{"seconds", o.seconds},
              {"clients", o.clients},
              {"workers", setup.workers},
              {"min_tokens", wo.min_tokens},
              {"max_tokens", o.max_tokens},
              {"chaos_pause_s", {o.chaos_min_s, o.chaos_max_s}},
              {"write_error_rate", o.write_error_rate},
              {"deadline_s", o.deadline.count() / 1000.0},
              {"grace_s", o.grace.count() / 1000.0},
              {"recovery_timeout_s", o.recovery_timeout.count() / 1000.0},
              {"model", {{"layers", model.num_layers}, {"vocab_size", model.vocab_size}}},
              {"seed", o.seed}}},
            {"counts",
             {{"requests", r.requests},
              {"ready", r.ready},
              {"streamed_and_verified", r.verified},
              {"prefill_by_status", soak.prefill_codes_},
              {"stream_by_status", soak.stream_codes_},
              {"delete_failures_by_status", soak.delete_codes_},
              {"prefills_failed_on_injected_write_errors", r.failed_on_injected_writes}}},
            {"chaos",
             {{"restarts", r.restarts},
              {"recovered", r.recoveries},
              {"recovery_from_kill", LatencySummary(recovery)},
              {"events", soak.events_}}},
            {"longest_call_s", soak.max_call_s_},
            {"wall_seconds", seconds},
            {"violations", r.violations},
            {"ok", r.violations.empty()}};
  cluster->StopAll();
  return r;
}

}  // namespace sparsefill::bench
