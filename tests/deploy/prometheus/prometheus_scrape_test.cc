// A real Prometheus (Debian's package) scrapes a real cluster started by `sparsefill demo`, loads
// the rules of deploy/prometheus/rules, and every panel query of every dashboard in
// deploy/grafana/dashboards and every recording rule must return series through the HTTP API. A
// renamed metric, a label a query filters on that no server exports, or a rule that cannot
// evaluate fails here instead of showing an empty panel in production.
// gcc 12 with -fsanitize=address (tools/sanitize asan) reports -Wmaybe-uninitialized inside
// libstdc++'s <regex> (the std::function move in _State), a false positive that -Werror would
// turn into a failed sanitizer build.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/harness.h"
#include "tests/unit/metrics/http_get.h"
#include "tools/sparsefill/child_process.h"

namespace sparsefill::deploy {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr int32_t kWorkers = 2;

std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "";
  dirs += ":/usr/bin:/usr/local/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate = dirs.substr(start, end - start) + "/" + name;
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

bool PortFree(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// A base port P with P .. P + count - 1 free a moment ago (the demo needs them consecutive).
int FreePortRun(int count) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    const int p = metrics::testing::FreePort();
    if (p <= 0 || p + count > 65535) continue;
    bool all = true;
    for (int i = 1; i < count && all; ++i) all = PortFree(p + i);
    if (all) return p;
  }
  return -1;
}

std::string UrlEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

// GET on Prometheus's HTTP API; the parsed body when it says "status": "success".
absl::StatusOr<json> ApiGet(int port, const std::string& path) {
  auto response = metrics::testing::HttpGet(port, path);
  if (!response.ok()) return response.status();
  const size_t body_at = response->find("\r\n\r\n");
  if (body_at == std::string::npos) {
    return absl::InternalError(absl::StrCat("no HTTP body from ", path));
  }
  json body = json::parse(response->substr(body_at + 4), nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || body.value("status", "") != "success" || !body.contains("data")) {
    return absl::InternalError(absl::StrCat(
        path, " answered: ", response->substr(0, std::min<size_t>(600, body_at + 400))));
  }
  return body["data"];
}

// The result vector of an instant query.
absl::StatusOr<json> Query(int port, const std::string& expr) {
  auto data = ApiGet(port, "/api/v1/query?query=" + UrlEncode(expr));
  if (!data.ok()) return data.status();
  if (!data->contains("result") || !(*data)["result"].is_array()) {
    return absl::InternalError(absl::StrCat("query ", expr, ": no result array"));
  }
  return (*data)["result"];
}

// Every `expr` of every target of `panels`, rows' nested panels included, with its panel title.
void CollectExprs(const json& panels, std::vector<std::pair<std::string, std::string>>& out) {
  if (!panels.is_array()) return;
  for (const json& p : panels) {
    if (!p.is_object()) continue;
    const std::string title = p.value("title", "(untitled)");
    if (p.contains("targets") && p["targets"].is_array()) {
      for (const json& t : p["targets"]) {
        if (t.is_object() && t.contains("expr") && t["expr"].is_string()) {
          out.emplace_back(title, t["expr"].get<std::string>());
        }
      }
    }
    if (p.contains("panels")) CollectExprs(p["panels"], out);
  }
}

void ReplaceAll(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

class PrometheusScrapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prometheus_ = FindOnPath("prometheus");
    if (prometheus_.empty()) {
      GTEST_SKIP() << "no prometheus binary on PATH: install Debian's package `prometheus` "
                      "(tools/bootstrap does) to run this test";
    }
    auto dir = tools::TempDir::Create("sparsefill-prom-test");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *std::move(dir);
  }

  void TearDown() override {
    // The demo's signal handler stops its whole process group and removes its work directory.
    if (demo_ != nullptr && demo_->Running()) {
      demo_->Signal(SIGTERM);
      (void)demo_->Wait(std::chrono::seconds(15));
    }
    demo_.reset();
    if (prom_ != nullptr) prom_->Stop(std::chrono::seconds(10));
    prom_.reset();
  }

  // prometheus.yml for this run: the job names and rule files of deploy/prometheus, with the
  // demo's ports and a 1 s scrape and rule interval.
  std::string WriteConfig(int metrics_base) {
    std::string rules;
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator("deploy/prometheus/rules")) {
      if (e.path().extension() == ".yml") files.push_back(fs::absolute(e.path()).string());
    }
    std::sort(files.begin(), files.end());
    for (const std::string& f : files) absl::StrAppend(&rules, "  - \"", f, "\"\n");
    rule_files_ = files;
    std::string workers;
    for (int i = 0; i < kWorkers; ++i) {
      absl::StrAppend(&workers, i ? ", " : "", "\"127.0.0.1:", metrics_base + 1 + i, "\"");
    }
    const std::string path = dir_->path() + "/prometheus.yml";
    std::ofstream(path) << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                        << "  evaluation_interval: 1s\nrule_files:\n"
                        << rules << "scrape_configs:\n"
                        << "  - job_name: sparsefill-coordinator\n    static_configs:\n"
                        << "      - targets: [\"127.0.0.1:" << metrics_base << "\"]\n"
                        << "  - job_name: sparsefill-worker\n    static_configs:\n"
                        << "      - targets: [" << workers << "]\n";
    return path;
  }

  // True once every expression has a series with a value above 0.
  bool AllPositive(const std::vector<std::string>& exprs) {
    for (const std::string& e : exprs) {
      auto r = Query(prom_port_, e + " > 0");
      if (!r.ok() || r->empty()) return false;
    }
    return true;
  }

  std::string prometheus_;
  std::unique_ptr<tools::TempDir> dir_;
  std::unique_ptr<tools::ChildProcess> prom_;
  std::unique_ptr<tools::ChildProcess> demo_;
  int prom_port_ = -1;
  std::vector<std::string> rule_files_;
};

TEST_F(PrometheusScrapeTest, EveryDashboardQueryAndRecordingRuleReturnsSeries) {
  auto model = integration::TinyModel(2);
  ASSERT_TRUE(model.ok()) << model.status();

  // Prometheus first, so that it sees the counters before the prefill moves them.
  const int metrics_base = FreePortRun(kWorkers + 1);
  ASSERT_GT(metrics_base, 0);
  for (int attempt = 0; attempt < 20 && (prom_port_ <= 0 || prom_port_ - metrics_base <= kWorkers);
       ++attempt) {
    prom_port_ = metrics::testing::FreePort();
    if (prom_port_ >= metrics_base && prom_port_ <= metrics_base + kWorkers) prom_port_ = -1;
  }
  ASSERT_GT(prom_port_, 0);
  tools::ChildOptions po;
  po.program = prometheus_;
  po.args = {"--config.file=" + WriteConfig(metrics_base),
             "--storage.tsdb.path=" + dir_->path() + "/tsdb",
             absl::StrCat("--web.listen-address=127.0.0.1:", prom_port_), "--log.level=warn"};
  po.stderr_path = dir_->path() + "/prometheus.log";
  auto prom = tools::ChildProcess::Spawn(po);
  ASSERT_TRUE(prom.ok()) << prom.status();
  prom_ = *std::move(prom);
  const auto ready_by = Clock::now() + std::chrono::seconds(30);
  while (true) {
    auto r = metrics::testing::HttpGet(prom_port_, "/-/ready");
    if (r.ok() && r->rfind("HTTP/1.0 200", 0) == 0) break;
    if (r.ok() && r->rfind("HTTP/1.1 200", 0) == 0) break;
    ASSERT_TRUE(prom_->Running()) << "prometheus exited:\n" << prom_->StderrTail();
    ASSERT_LT(Clock::now(), ready_by) << "prometheus not ready in 30 s:\n" << prom_->StderrTail();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }

  tools::ChildOptions d;
  d.program = integration::Bin() + "/sparsefill";
  d.args = {"demo",
            "--model",
            *model,
            "--max-tokens",
            "4096",
            "--workers",
            "2",
            "--metrics-port-base",
            std::to_string(metrics_base),
            "--hold-seconds",
            "300",
            "--timeout-s",
            "120"};
  d.stderr_path = dir_->path() + "/demo.log";
  auto demo = tools::ChildProcess::Spawn(d);
  ASSERT_TRUE(demo.ok()) << demo.status();
  demo_ = *std::move(demo);

  // A finished prefill and stream, scraped from every server.
  const std::vector<std::string> done = {
      "sparsefill_stream_bytes_total{job=\"sparsefill-coordinator\"}",
      "sparsefill_prefill_tokens_total{job=\"sparsefill-coordinator\"}",
      "count(sparsefill_prefill_tokens_total{job=\"sparsefill-worker\"} > 0) == " +
          std::to_string(kWorkers),
      "count(up{job=~\"sparsefill-.*\"} == 1) == " + std::to_string(kWorkers + 1)};
  const auto scraped_by = Clock::now() + std::chrono::seconds(150);
  while (!AllPositive(done)) {
    ASSERT_TRUE(demo_->Running()) << "the demo ended before its prefill was scraped:\n"
                                  << demo_->Stdout() << "\n"
                                  << demo_->StderrTail();
    ASSERT_TRUE(prom_->Running()) << "prometheus exited:\n" << prom_->StderrTail();
    ASSERT_LT(Clock::now(), scraped_by) << "no prefill + stream scraped in 150 s; demo output:\n"
                                        << demo_->Stdout() << "\n"
                                        << demo_->StderrTail() << "\nprometheus:\n"
                                        << prom_->StderrTail();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  // Two more scrapes (rates of series born in the prefill need two samples) and rule rounds.
  std::this_thread::sleep_for(std::chrono::seconds(3));

  // The two jobs count the same work from two sides (whole prompts, shards): equal totals, which
  // is why every rule and panel must pick one job.
  for (const char* counter :
       {"sparsefill_prefill_tokens_total", "sparsefill_attention_causal_keys_total",
        "sparsefill_attention_selected_keys_total"}) {
    SCOPED_TRACE(counter);
    auto c = Query(prom_port_, absl::StrCat("sum(", counter, "{job=\"sparsefill-coordinator\"})"));
    auto w = Query(prom_port_, absl::StrCat("sum(", counter, "{job=\"sparsefill-worker\"})"));
    ASSERT_TRUE(c.ok() && w.ok());
    ASSERT_EQ(c->size(), 1u);
    ASSERT_EQ(w->size(), 1u);
    EXPECT_GT(std::stod((*c)[0]["value"][1].get<std::string>()), 0);
    EXPECT_EQ((*c)[0]["value"][1], (*w)[0]["value"][1]);
  }
  auto prompt =
      Query(prom_port_, "sparsefill_prefill_tokens_total{job=\"sparsefill-coordinator\"}");
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  ASSERT_EQ(prompt->size(), 1u);
  EXPECT_EQ((*prompt)[0]["value"][1], "4096");

  // Recording rules: every file loaded, every rule healthy, every recorded series present and
  // its expression answering on its own.
  auto rules = ApiGet(prom_port_, "/api/v1/rules");
  ASSERT_TRUE(rules.ok()) << rules.status();
  std::set<std::string> loaded_files;
  int recording = 0;
  int alerting = 0;
  for (const json& g : (*rules)["groups"]) {
    loaded_files.insert(g.value("file", ""));
    for (const json& r : g["rules"]) {
      const std::string name = r.value("name", "");
      EXPECT_EQ(r.value("health", ""), "ok") << name << ": " << r.value("lastError", "");
      if (r.value("type", "") == "alerting") {
        ++alerting;
        continue;
      }
      ++recording;
      SCOPED_TRACE("recording rule " + name);
      auto recorded = Query(prom_port_, name);
      ASSERT_TRUE(recorded.ok()) << recorded.status();
      EXPECT_FALSE(recorded->empty()) << name << " recorded no series";
      auto direct = Query(prom_port_, r.value("query", ""));
      ASSERT_TRUE(direct.ok()) << direct.status();
      EXPECT_FALSE(direct->empty())
          << "expression of " << name << " returns no series: " << r.value("query", "");
    }
  }
  for (const std::string& f : rule_files_) EXPECT_TRUE(loaded_files.count(f)) << f << " not loaded";
  EXPECT_GE(recording, 10);
  EXPECT_GE(alerting, 5);

  // Dashboards: template variables resolved to values the servers really export.
  int dashboards = 0;
  int queries = 0;
  for (const auto& e : fs::directory_iterator("deploy/grafana/dashboards")) {
    if (e.path().extension() != ".json") continue;
    ++dashboards;
    SCOPED_TRACE(e.path().string());
    std::ifstream in(e.path());
    const json board = json::parse(in, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(board.is_object()) << "not a JSON object";
    std::map<std::string, std::string> vars = {
        {"__rate_interval", "1m"}, {"__interval", "15s"}, {"__range", "5m"}};
    if (board.contains("templating") && board["templating"].contains("list")) {
      for (const json& v : board["templating"]["list"]) {
        const std::string name = v.value("name", "");
        if (v.value("type", "") != "query") continue;
        std::string def = v.value("definition", "");
        static const std::regex kLabelValues(R"(^label_values\((.*),\s*([a-zA-Z_]\w*)\)$)");
        std::smatch m;
        ASSERT_TRUE(std::regex_match(def, m, kLabelValues))
            << "variable " << name << ": only label_values(selector, label) is resolved: " << def;
        auto r = Query(prom_port_, m[1].str());
        ASSERT_TRUE(r.ok()) << r.status();
        std::vector<std::string> values;
        for (const json& s : *r) {
          if (s["metric"].contains(m[2].str())) values.push_back(s["metric"][m[2].str()]);
        }
        ASSERT_FALSE(values.empty()) << "variable " << name << " has no values: " << def;
        std::sort(values.begin(), values.end());
        vars[name] = values.front();
      }
    }
    std::vector<std::pair<std::string, std::string>> exprs;
    CollectExprs(board["panels"], exprs);
    EXPECT_FALSE(exprs.empty());
    // Longest names first, so $instance is not taken for a prefix of a longer variable.
    std::vector<std::pair<std::string, std::string>> by_length(vars.begin(), vars.end());
    std::sort(by_length.begin(), by_length.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    for (auto& [title, expr] : exprs) {
      for (const auto& [name, value] : by_length) {
        ReplaceAll(expr, "${" + name + "}", value);
        ReplaceAll(expr, "$" + name, value);
      }
      ++queries;
      EXPECT_EQ(expr.find('$'), std::string::npos)
          << "panel \"" << title << "\": unresolved variable in " << expr;
      auto r = Query(prom_port_, expr);
      ASSERT_TRUE(r.ok()) << "panel \"" << title << "\": " << r.status();
      EXPECT_FALSE(r->empty()) << "panel \"" << title << "\" returns no series: " << expr;
    }
  }
  EXPECT_GE(dashboards, 2);
  EXPECT_GE(queries, 20);
}

// The demo's metrics flags refuse what cannot work before any process starts.
TEST(DemoMetricsFlagsTest, BadPortBaseAndHoldAreRefused) {
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--metrics-port-base", "65534"},  // the second worker would need 65536
           {"--metrics-port-base", "-1"},
           {"--metrics-port-base", "2147483647"},
           {"--hold-seconds", "-1"},
           {"--hold-seconds", "nan"}}) {
    SCOPED_TRACE(bad[0] + " " + bad[1]);
    tools::ChildOptions d;
    d.program = integration::Bin() + "/sparsefill";
    d.args = {"demo", "--workers", "2", bad[0], bad[1]};
    auto demo = tools::ChildProcess::Spawn(d);
    ASSERT_TRUE(demo.ok()) << demo.status();
    auto code = (*demo)->Wait(std::chrono::seconds(30));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 2);
  }
}

}  // namespace
}  // namespace sparsefill::deploy
