#include "tools/bench/harness/report.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#ifndef SPARSEFILL_BENCH_SOURCE_DIR
#error "SPARSEFILL_BENCH_SOURCE_DIR must name the source tree (set by tools/bench/CMakeLists.txt)"
#endif
#ifndef SPARSEFILL_BENCH_BINARY_DIR
#error "SPARSEFILL_BENCH_BINARY_DIR must name the build tree (set by tools/bench/CMakeLists.txt)"
#endif

namespace sparsefill::bench {
namespace {

namespace fs = std::filesystem;

// Output of a shell command (first line), or "" when it fails. The source dir is quoted: the
// only input is a compile-time path.
std::string RunCapture(const std::string& cmd, int* exit_code) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *exit_code = -1;
    return out;
  }
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  *exit_code = pclose(p);
  return out;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

}  // namespace

CommitInfo ProbeCommit() {
  CommitInfo c;
  c.source_dir = SPARSEFILL_BENCH_SOURCE_DIR;
  const std::string git = "git -C " + ShellQuote(c.source_dir);
  int rc = 0;
  std::string head = RunCapture(git + " rev-parse HEAD 2>/dev/null", &rc);
  while (!head.empty() && (head.back() == '\n' || head.back() == '\r')) head.pop_back();
  c.hash = (rc == 0 && !head.empty()) ? head : "unknown";
  if (rc == 0) {
    const std::string status =
        RunCapture(git + " status --porcelain --untracked-files=no 2>/dev/null", &rc);
    c.dirty = rc != 0 || !status.empty();
  }
  return c;
}

std::string UtcIsoNow() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

nlohmann::json BuildDocument(const Report& report, const DeviceInfo& device,
                             const std::vector<std::string>& argv, const std::string& date) {
  const CommitInfo commit = ProbeCommit();
  std::string command;
  for (const std::string& a : argv) {
    if (!command.empty()) command += ' ';
    const bool plain = !a.empty() && a.find_first_of(" \t'\"\\$") == std::string::npos;
    command += plain ? a : ShellQuote(a);
  }
  nlohmann::json doc;
  doc["benchmark"] = report.benchmark;
  doc["device"] = device.ToJson();
  doc["date"] = date;
  doc["command"] = command;
  doc["argv"] = argv;
  doc["commit"] = {
      {"hash", commit.hash}, {"dirty", commit.dirty}, {"source_dir", commit.source_dir}};
  doc["config"] = report.config;
  doc["results"] = report.results;
  doc["ratios"] = report.ratios;
  doc["notes"] = report.notes;
  return doc;
}

absl::StatusOr<std::string> WriteDocument(const nlohmann::json& doc, const std::string& out_dir) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("creating results dir '", out_dir, "': ", ec.message()));
  }
  std::string date = doc.value("date", std::string("nodate"));
  date.erase(std::remove_if(date.begin(), date.end(), [](char c) { return c == '-' || c == ':'; }),
             date.end());
  std::string tag = "unknown";
  if (doc.contains("device") && doc["device"].contains("tag")) {
    tag = doc["device"]["tag"].get<std::string>();
  }
  const std::string path =
      (fs::path(out_dir) /
       absl::StrCat(doc.value("benchmark", std::string("bench")), "-", tag, "-", date, ".json"))
          .string();
  std::ofstream out(path, std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  // Replace invalid UTF-8 rather than throw: no exception may escape.
  out << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing '", path, "' failed"));
  return path;
}

std::string DefaultResultsDir() {
  return (fs::path(SPARSEFILL_BENCH_SOURCE_DIR) / "bench" / "results").string();
}

std::string DefaultDataDir() {
  return (fs::path(SPARSEFILL_BENCH_BINARY_DIR) / "bench-data").string();
}

std::string Table::ToString() const {
  std::vector<size_t> width(header_.size(), 0);
  auto widen = [&width](const std::vector<std::string>& row) {
    if (row.size() > width.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  };
  widen(header_);
  for (const auto& r : rows_) widen(r);
  auto line = [&width](const std::vector<std::string>& row) {
    std::string s;
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      // First column left-aligned (names), the rest right-aligned (numbers).
      s += i == 0 ? absl::StrFormat("%-*s", static_cast<int>(width[i]), cell)
                  : absl::StrFormat("  %*s", static_cast<int>(width[i]), cell);
    }
    return s + "\n";
  };
  std::string out = line(header_);
  size_t total = 0;
  for (size_t w : width) total += w + 2;
  out += std::string(total > 2 ? total - 2 : 0, '-') + "\n";
  for (const auto& r : rows_) out += line(r);
  return out;
}

std::string Fixed(double v, int digits) { return absl::StrFormat("%.*f", digits, v); }

}  // namespace sparsefill::bench
