// One benchmark result: the JSON document every subcommand writes under bench/results/, and the
// readable table it prints. Every document carries what is needed to trust or redo it: the
// device, the date, the exact command and the source commit.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/bench/harness/device_info.h"

namespace sparsefill::bench {

struct CommitInfo {
  std::string hash;    // git rev-parse HEAD; "unknown" outside a git checkout
  bool dirty = false;  // tracked files differ from HEAD
  std::string source_dir;
};

// The source tree the binary was built from (compiled in), queried with git at run time.
CommitInfo ProbeCommit();

// "2025-01-31T12:34:56Z".
std::string UtcIsoNow();

struct Report {
  std::string benchmark;  // the subcommand, e.g. "kvstore"
  nlohmann::json config = nlohmann::json::object();
  nlohmann::json results = nlohmann::json::object();
  nlohmann::json ratios = nlohmann::json::object();
  nlohmann::json notes = nlohmann::json::array();  // caveats a reader must know
};

// The full document: benchmark, device, date, command, commit, config, results, ratios, notes.
nlohmann::json BuildDocument(const Report& report, const DeviceInfo& device,
                             const std::vector<std::string>& argv, const std::string& date);

// Writes `doc` to <out_dir>/<benchmark>-<device tag>-<date>.json (creating out_dir); returns
// the path. The date in the name is compacted to be file-name safe (20250131T123456Z).
absl::StatusOr<std::string> WriteDocument(const nlohmann::json& doc, const std::string& out_dir);

// Where results go by default: <source>/bench/results.
std::string DefaultResultsDir();
// Scratch data of disk benchmarks by default: <build>/bench-data.
std::string DefaultDataDir();

// A fixed-width text table for stdout.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string ToString() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// "12.34" style numbers for tables.
std::string Fixed(double v, int digits = 2);

}  // namespace sparsefill::bench
