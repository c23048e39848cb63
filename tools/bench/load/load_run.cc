#include "tools/bench/load/load_run.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "tools/bench/load/cache_check.h"
#include "tools/bench/load/metrics_probe.h"
#include "tools/bench/load/proc_stats.h"
#include "tools/bench/load/workload.h"

namespace sparsefill::bench {
namespace {

using Clock = std::chrono::steady_clock;

// From the last request of a phase to its RSS snapshot.
constexpr std::chrono::seconds kSettle(2);

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Outcome classes the latencies are reported by.
enum Outcome { kReady, kRejected, kInvalid, kOther, kNumOutcomes };
constexpr const char* kOutcomeNames[] = {"ready", "resource_exhausted", "invalid_argument",
                                         "other"};

struct Kept {
  kvstore::CacheId id;
  CacheDigest digest;
};

// Shared by the client threads of one run.
class LoadState {
 public:
  LoadState(const LoadOptions& o, const Workload& w, const std::string& address)
      : options_(o), workload_(w), address_(address) {}

  void Violation(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (violations_.size() < 200) violations_.push_back(std::move(what));
    ++violation_count_;
  }
  void Record(Outcome o, RequestKind kind, double seconds, int64_t tokens) {
    std::lock_guard<std::mutex> lock(mu_);
    latencies_[o].push_back(seconds);
    ++by_kind_[static_cast<int>(kind)][o];
    if (o == kReady) ready_tokens_ += tokens;
  }
  // The first READY cache of a prompt fixes its digest; every later one must match it (the CPU
  // backend is deterministic, so a differing cache was corrupted somewhere).
  void CheckPrompt(int32_t prompt, const CacheDigest& d, const kvstore::CacheId& id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, fresh] = prompt_digest_.emplace(prompt, d.Fold());
    if (!fresh && it->second != d.Fold()) {
      violations_.push_back(absl::StrCat("cache ", id.ToHex(), " of prompt ", prompt,
                                         " differs from an earlier cache of the same prompt"));
      ++violation_count_;
    }
  }

  // Runs `call` until it reaches the coordinator: retried every 250 ms while the outage it is in
  // is shorter than options_.unreachable_limit. An outage starts at the first undelivered attempt
  // of any client and ends when any call gets through, so a coordinator that is gone fails every
  // later call at once instead of each waiting out the limit. `sent` (optional) gets the start
  // of the attempt that got through, or of the last one.
  template <typename Call>
  auto Deliver(int32_t c, Call&& call, Clock::time_point* sent = nullptr) -> decltype(call()) {
    Clock::time_point start = Clock::now();
    auto result = call();
    bool retried = false;
    while (IsUndeliveredCall(StatusOf(result))) {
      const int64_t now = Clock::now().time_since_epoch().count();
      int64_t since = 0;
      if (!outage_since_.compare_exchange_strong(since, now)) {
        if (std::chrono::nanoseconds(Clock::duration(now - since)) >= options_.unreachable_limit) {
          break;
        }
      }
      NoteUndelivered(c, StatusOf(result), !retried);
      retried = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      start = Clock::now();
      result = call();
    }
    if (!IsUndeliveredCall(StatusOf(result))) outage_since_ = 0;
    if (sent != nullptr) *sent = start;
    return result;
  }
  static absl::Status StatusOf(const absl::Status& s) { return s; }
  template <typename T>
  static absl::Status StatusOf(const absl::StatusOr<T>& s) {
    return s.status();
  }
  void NoteUndelivered(int32_t c, const absl::Status& s, bool first_of_call) {
    std::lock_guard<std::mutex> lock(mu_);
    ++undelivered_attempts_;
    if (first_of_call) ++undelivered_calls_;
    if (first_undelivered_.empty()) {
      first_undelivered_ = absl::StrCat("client ", c, ": ", s.ToString());
    }
  }

  // One client: requests [next_, end) until none are left, then re-verifies and deletes what it
  // still holds.
  void RunClient(int32_t c, int64_t end, std::deque<Kept>& kept) {
    auto client = ConnectTo(address_, options_.timeout);
    if (!client.ok()) {
      Violation(absl::StrCat("client ", c, ": ", client.status().ToString()));
      return;
    }
    std::mt19937_64 rng(options_.seed * 1000003 + static_cast<uint64_t>(c) * 7919 +
                        static_cast<uint64_t>(end));
    int backoff_ms = 0;
    while (next_.fetch_add(1) < end) {
      // Warm-up sends the longest prompt from every client: the servers reach their peak
      // footprint before the RSS baseline, so growth after it means memory that is not reused.
      const LoadRequest r = warmup_ ? workload_.Valid(1) : workload_.Next(rng);
      // Latency from the attempt that reached the coordinator (a wait to connect is not the
      // server's).
      Clock::time_point t0;
      auto result = Deliver(
          c, [&] { return (*client)->Prefill(r.request, {}, {.timeout = options_.timeout}); }, &t0);
      const double seconds = Since(t0);
      const absl::StatusCode code = result.status().code();
      if (IsMalformed(r.kind)) {
        ++malformed_;
        Record(code == absl::StatusCode::kInvalidArgument ? kInvalid
               : result.ok()                              ? kReady
                                                          : kOther,
               r.kind, seconds, 0);
        if (code != absl::StatusCode::kInvalidArgument) {
          Violation(absl::StrCat("malformed request (", AsAbsl(RequestKindName(r.kind)), ") got ",
                                 result.ok() ? "OK" : result.status().ToString(),
                                 " instead of INVALID_ARGUMENT"));
          if (result.ok()) (void)(*client)->DeleteCache(result->cache.id);
        }
        continue;
      }
      if (code == absl::StatusCode::kResourceExhausted) {
        Record(kRejected, r.kind, seconds, 0);
        // A polite client backs off (jittered, doubling to 2 s) before its next request.
        backoff_ms = std::min(2000, std::max(50, backoff_ms * 2));
        std::this_thread::sleep_for(std::chrono::milliseconds(
            std::uniform_int_distribution<int>(backoff_ms / 2, backoff_ms)(rng)));
        continue;
      }
      backoff_ms = 0;
      if (!result.ok()) {
        Record(kOther, r.kind, seconds, 0);
        Violation(absl::StrCat("valid request (", AsAbsl(RequestKindName(r.kind)), ", ", r.tokens,
                               r.kind == RequestKind::kText ? " bytes" : " tokens",
                               ") failed: ", result.status().ToString()));
        continue;
      }
      if (result->cache.state != client::CacheState::kReady) {
        Record(kOther, r.kind, seconds, 0);
        Violation(absl::StrCat("cache ", result->cache.id.ToHex(), " ended ",
                               AsAbsl(client::CacheStateName(result->cache.state)), ", not ready"));
        continue;
      }
      Record(kReady, r.kind, seconds, result->stats.num_tokens);
      auto digest =
          Deliver(c, [&] { return StreamAndVerify(**client, result->cache.id, options_.timeout); });
      if (!digest.ok()) {
        Violation(absl::StrCat("READY cache ", result->cache.id.ToHex(),
                               " did not stream back intact: ", digest.status().ToString()));
        continue;
      }
      CheckPrompt(r.prompt, *digest, result->cache.id);
      kept.push_back({result->cache.id, *std::move(digest)});
      while (static_cast<int32_t>(kept.size()) > options_.keep_per_client) {
        Retire(c, **client, kept.front());
        kept.pop_front();
      }
    }
    while (!kept.empty()) {
      Retire(c, **client, kept.front());
      kept.pop_front();
    }
  }

  // The second read of a cache (after other requests ran), then its deletion.
  void Retire(int32_t c, client::CoordinatorClient& client, const Kept& k) {
    auto again = Deliver(c, [&] { return StreamAndVerify(client, k.id, options_.timeout); });
    absl::Status s = again.ok() ? CompareDigests(k.digest, *again) : again.status();
    if (!s.ok()) {
      Violation(absl::StrCat("cache ", k.id.ToHex(), " on its second read: ", s.ToString()));
    } else {
      ++verified_;
    }
    absl::Status del =
        Deliver(c, [&] { return client.DeleteCache(k.id, {.timeout = options_.timeout}); });
    if (!del.ok()) {
      Violation(absl::StrCat("DeleteCache ", k.id.ToHex(), ": ", del.ToString()));
      return;
    }
    auto gone = Deliver(c, [&] { return client.GetCache(k.id, {.timeout = options_.timeout}); });
    if (gone.status().code() != absl::StatusCode::kNotFound) {
      Violation(absl::StrCat("cache ", k.id.ToHex(), " after DeleteCache: ",
                             gone.ok() ? "still there" : gone.status().ToString()));
    }
  }

  // Runs requests up to `end` on every client and waits for them.
  void RunPhase(int64_t end) {
    std::vector<std::thread> threads;
    std::vector<std::deque<Kept>> kept(static_cast<size_t>(options_.clients));
    for (int32_t c = 0; c < options_.clients; ++c) {
      threads.emplace_back(
          [this, c, end, &kept] { RunClient(c, end, kept[static_cast<size_t>(c)]); });
    }
    for (std::thread& t : threads) t.join();
    next_ = end;  // fetch_add overshoots by one per client
  }

  const LoadOptions& options_;
  const Workload& workload_;
  const std::string address_;
  std::atomic<int64_t> next_{0};
  bool warmup_ = false;  // set only between phases
  std::atomic<int64_t> malformed_{0};
  std::atomic<int64_t> verified_{0};
  std::mutex mu_;
  std::vector<std::string> violations_;
  int64_t violation_count_ = 0;
  std::array<std::vector<double>, kNumOutcomes> latencies_;
  std::map<int, std::array<int64_t, kNumOutcomes>> by_kind_;
  std::map<int32_t, uint64_t> prompt_digest_;
  int64_t ready_tokens_ = 0;
  // Calls retried because no connection could be made, their attempts, and the first failure.
  int64_t undelivered_calls_ = 0;
  int64_t undelivered_attempts_ = 0;
  std::string first_undelivered_;
  std::atomic<Clock::rep> outage_since_{0};  // 0: every recent call got through
};

struct ServerMemory {
  std::string name;
  pid_t pid = 0;
  ProcMemory warm, after;
};

std::vector<ServerMemory> Snapshot(tools::LocalCluster& c, std::vector<ServerMemory> in, bool after,
                                   std::vector<std::string>& errors) {
  if (in.empty()) {
    in.push_back({"coordinator", c.coordinator().pid(), {}, {}});
    for (int32_t i = 0; i < c.options().workers; ++i) {
      in.push_back({absl::StrCat("worker", i), c.worker(i).pid(), {}, {}});
    }
  }
  for (ServerMemory& m : in) {
    auto mem = ReadProcMemory(m.pid);
    if (!mem.ok()) {
      errors.push_back(absl::StrCat(m.name, " (pid ", m.pid, "): ", mem.status().ToString()));
      continue;
    }
    (after ? m.after : m.warm) = *mem;
  }
  return in;
}

// Polls the coordinator's admission gauges and keeps their maxima.
class AdmissionWatch {
 public:
  explicit AdmissionWatch(std::string address) : address_(std::move(address)) {
    thread_ = std::thread([this] {
      while (!stop_) {
        auto m = ScrapeMetrics(address_, std::chrono::seconds(2));
        if (m.ok()) {
          std::lock_guard<std::mutex> lock(mu_);
          ++samples_;
          for (const char* g :
               {"sparsefill_admission_queue_depth", "sparsefill_admission_inflight_tokens",
                "sparsefill_admission_running_requests"}) {
            if (auto it = m->find(g); it != m->end()) max_[g] = std::max(max_[g], it->second);
          }
        } else {
          ++errors_;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  ~AdmissionWatch() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  nlohmann::json Json() {
    std::lock_guard<std::mutex> lock(mu_);
    nlohmann::json j = {{"samples", samples_}, {"scrape_errors", errors_}};
    for (const auto& [k, v] : max_) j["max"][k] = v;
    return j;
  }
  double Max(const std::string& g) {
    std::lock_guard<std::mutex> lock(mu_);
    return max_.contains(g) ? max_[g] : -1;
  }
  int64_t samples() {
    std::lock_guard<std::mutex> lock(mu_);
    return samples_;
  }

 private:
  const std::string address_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<std::string, double> max_;
  int64_t samples_ = 0, errors_ = 0;
  std::thread thread_;
};

}  // namespace

bool IsUndeliveredCall(const absl::Status& s) {
  if (s.code() != absl::StatusCode::kUnavailable) return false;
  // gRPC's own words, alone or behind the client's "<Method>: " (CoordinatorClient names the
  // method of a stream): the coordinator's relay of a worker's failure says more before them.
  absl::string_view m = s.message();
  if (const size_t colon = m.find(": ");
      colon != absl::string_view::npos && m.substr(0, colon).find(' ') == absl::string_view::npos) {
    m.remove_prefix(colon + 2);
  }
  return absl::StartsWith(m, "failed to connect to all addresses");
}

nlohmann::json LatencySummary(std::vector<double> s) {
  if (s.empty()) return {{"count", 0}};
  std::sort(s.begin(), s.end());
  const auto q = [&](double p) {
    const size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(s.size()))) - 1;
    return s[std::min(i, s.size() - 1)];
  };
  double sum = 0;
  for (double x : s) sum += x;
  return {{"count", s.size()},
          {"p50_s", q(0.50)},
          {"p99_s", q(0.99)},
          {"mean_s", sum / static_cast<double>(s.size())},
          {"max_s", s.back()}};
}

absl::StatusOr<LoadResult> RunLoadTest(const LoadOptions& o) {
  if (o.clients < 1 || o.requests < 1 || o.keep_per_client < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("clients (", o.clients, ") and requests (", o.requests, ") must be >= 1"));
  }
  const auto log = [&](const std::string& s) {
    if (o.log) o.log(s);
  };
  const int64_t inflight = o.max_inflight_tokens > 0 ? o.max_inflight_tokens : 2 * o.max_tokens;
  ClusterSetup setup = o.cluster;
  for (std::string f :
       {std::string("--max-tokens"), std::to_string(o.max_tokens), std::string("--max-queue"),
        std::to_string(o.max_queue), std::string("--max-inflight-tokens"), std::to_string(inflight),
        std::string("--metrics-listen"), std::string("127.0.0.1:0")}) {
    setup.coordinator_flags.push_back(f);
  }
  log(absl::StrCat("starting ", setup.workers, " workers + coordinator (logs in ", setup.work_dir,
                   "/logs)"));
  SF_ASSIGN_OR_RETURN(StartedCluster started,
                      StartCluster(setup, o.novel_tokens, o.novel_text, o.timeout));
  const std::unique_ptr<tools::LocalCluster>& cluster = started.cluster;
  const client::ModelInfo& model = started.model;
  const std::string& text = started.novel_text;

  WorkloadOptions wo;
  wo.vocab_size = model.vocab_size;
  wo.server_max_tokens =
      model.max_tokens > 0 ? std::min(model.max_tokens, o.max_tokens) : o.max_tokens;
  wo.min_tokens = std::min(o.min_tokens, wo.server_max_tokens);
  wo.max_tokens = wo.server_max_tokens;
  wo.malformed_fraction = o.malformed_fraction;
  SF_ASSIGN_OR_RETURN(const Workload workload,
                      Workload::Create(wo, started.novel_ids, text, o.seed));

  SF_ASSIGN_OR_RETURN(const std::string metrics_address,
                      MetricsAddress(cluster->coordinator().Stdout()));
  AdmissionWatch watch(metrics_address);
  LoadState state(o, workload, cluster->coordinator_address());
  const int64_t warmup =
      o.warmup_requests >= 0
          ? std::min(o.warmup_requests, o.requests)
          : std::min(o.requests, std::max<int64_t>(o.requests / 10, 2 * int64_t{o.clients}));

  const Clock::time_point start = Clock::now();
  log(absl::StrCat("warm-up: ", warmup, " requests from ", o.clients, " clients"));
  state.warmup_ = true;
  state.RunPhase(warmup);
  state.warmup_ = false;
  const double warm_seconds = Since(start);
  // Both RSS snapshots are taken the same time after the last request ended: by then the servers'
  // heap trimmers (--heap-trim-ms, 1 s) have returned what the requests freed.
  std::this_thread::sleep_for(kSettle);
  std::vector<std::string> mem_errors;
  std::vector<ServerMemory> mem = Snapshot(*cluster, {}, false, mem_errors);
  log(absl::StrCat("run: ", o.requests - warmup, " more requests"));
  state.RunPhase(o.requests);
  // Request time only (the settle above is not part of it).
  const double seconds = Since(start) - std::chrono::duration<double>(kSettle).count();
  // Deleted caches' hot blocks are freed at once; give the coordinator's clean-up a moment.
  std::this_thread::sleep_for(kSettle);
  mem = Snapshot(*cluster, std::move(mem), true, mem_errors);
  watch.Stop();

  LoadResult r;
  std::vector<std::string>& v = r.violations;
  {
    std::lock_guard<std::mutex> lock(state.mu_);
    v = state.violations_;
    if (state.violation_count_ > static_cast<int64_t>(v.size())) {
      v.push_back(
          absl::StrCat("... ", state.violation_count_ - static_cast<int64_t>(v.size()), " more"));
    }
  }
  for (const std::string& e : mem_errors) v.push_back(absl::StrCat("memory: ", e));
  // Every server process must have lived through the run (no crash).
  if (!cluster->coordinator().Running()) v.push_back("the coordinator exited during the run");
  for (int32_t i = 0; i < setup.workers; ++i) {
    if (!cluster->worker(i).Running()) v.push_back(absl::StrCat("worker ", i, " exited"));
  }
  const double max_queue_seen = watch.Max("sparsefill_admission_queue_depth");
  const double max_inflight_seen = watch.Max("sparsefill_admission_inflight_tokens");
  if (watch.samples() == 0) v.push_back("the coordinator's metrics were never scraped");
  if (max_queue_seen > o.max_queue) {
    v.push_back(absl::StrCat("admission queue reached ", max_queue_seen, " > ", o.max_queue));
  }
  if (max_inflight_seen > static_cast<double>(inflight)) {
    v.push_back(absl::StrCat("in-flight tokens reached ", max_inflight_seen, " > ", inflight));
  }
  nlohmann::json memory = nlohmann::json::array();
  for (const ServerMemory& m : mem) {
    const double growth =
        m.warm.rss_kib > 0
            ? static_cast<double>(m.after.rss_kib) / static_cast<double>(m.warm.rss_kib) - 1.0
            : 0.0;
    memory.push_back({{"process", m.name},
                      {"rss_after_warmup_mib", m.warm.rss_kib / 1024.0},
                      {"rss_after_run_mib", m.after.rss_kib / 1024.0},
                      {"peak_rss_mib", m.after.hwm_kib / 1024.0},
                      {"rss_growth", growth},
                      {"within_tolerance", growth <= o.rss_tolerance}});
    if (growth > o.rss_tolerance) {
      v.push_back(absl::StrCat(m.name, " RSS grew ", growth * 100, "% from ", m.warm.rss_kib / 1024,
                               " MiB after warm-up to ", m.after.rss_kib / 1024,
                               " MiB after the run (limit ", o.rss_tolerance * 100, "%)"));
    }
  }
  const int64_t done = state.next_.load();
  int64_t total = 0;
  nlohmann::json by_kind = nlohmann::json::object();
  std::array<int64_t, kNumOutcomes> totals{};
  for (const auto& [kind, counts] : state.by_kind_) {
    nlohmann::json k = nlohmann::json::object();
    for (int oc = 0; oc < kNumOutcomes; ++oc) {
      if (counts[oc] > 0) k[kOutcomeNames[oc]] = counts[oc];
      totals[oc] += counts[oc];
      total += counts[oc];
    }
    by_kind[std::string(RequestKindName(static_cast<RequestKind>(kind)))] = k;
  }
  if (total != o.requests || done != o.requests) {
    v.push_back(absl::StrCat(total, " requests ended of ", o.requests, " sent"));
  }
  r.requests = total;
  r.ready = totals[kReady];
  r.resource_exhausted = totals[kRejected];
  r.invalid_argument = totals[kInvalid];
  r.malformed = state.malformed_.load();
  r.verified_caches = state.verified_.load();
  r.seconds = seconds;
  if (r.verified_caches != r.ready) {
    v.push_back(absl::StrCat(r.ready, " READY caches but ", r.verified_caches,
                             " verified twice and deleted"));
  }
  nlohmann::json latency = nlohmann::json::object();
  for (int oc = 0; oc < kNumOutcomes; ++oc) {
    latency[kOutcomeNames[oc]] = LatencySummary(state.latencies_[oc]);
  }
  r.json = {{"config",
             {{"clients", o.clients},
              {"requests", o.requests},
              {"warmup_requests", warmup},
              {"min_tokens", wo.min_tokens},
              {"max_tokens", wo.max_tokens},
              {"malformed_fraction", o.malformed_fraction},
              {"max_queue", o.max_queue},
              {"max_inflight_tokens", inflight},
              {"timeout_s", o.timeout.count() / 1000.0},
              {"keep_per_client", o.keep_per_client},
              {"workers", setup.workers},
              {"threads_per_worker", setup.threads_per_worker},
              {"model",
               {{"name", model.name},
                {"layers", model.num_layers},
                {"kv_heads", model.kv_heads},
                {"head_dim", model.head_dim},
                {"vocab_size", model.vocab_size},
                {"tokenizer", model.has_tokenizer}}},
              {"prompt_pool", workload.pool_size()},
              {"text_requests", !text.empty()},
              {"seed", o.seed}}},
            {"counts",
             {{"requests", total},
              {"ready", r.ready},
              {"resource_exhausted", r.resource_exhausted},
              {"invalid_argument", r.invalid_argument},
              {"other", totals[kOther]},
              {"malformed_sent", r.malformed},
              {"caches_verified_twice_and_deleted", r.verified_caches},
              {"undelivered_calls", state.undelivered_calls_},
              {"undelivered_attempts", state.undelivered_attempts_},
              {"by_kind", by_kind}}},
            {"latency_by_outcome", latency},
            {"throughput",
             {{"seconds", seconds},
              {"warmup_seconds", warm_seconds},
              {"requests_per_s", static_cast<double>(total) / seconds},
              {"ready_per_s", static_cast<double>(r.ready) / seconds},
              {"ready_tokens_per_s", static_cast<double>(state.ready_tokens_) / seconds},
              {"ready_tokens", state.ready_tokens_}}},
            {"memory", memory},
            {"admission", watch.Json()},
            {"violations", v},
            {"ok", v.empty()}};
  if (!state.first_undelivered_.empty()) {
    r.json["counts"]["first_undelivered_call"] = state.first_undelivered_;
  }
  if (!v.empty()) {
    r.json["coordinator_log_tail"] = cluster->LogTail("coordinator", 3000);
  }
  cluster->StopAll();
  return r;
}

}  // namespace sparsefill::bench
