#include <cstdio>

#include "tools/bench/commands.h"

namespace sparsefill::bench {

void AddCommonFlags(CLI::App& sub, CommonArgs& common) {
  common.out_dir = DefaultResultsDir();
  sub.add_option("--out", common.out_dir, "directory of the result JSON")->capture_default_str();
  sub.add_flag("--no-save", common.no_save, "print the table only; write no JSON");
}

int Publish(const Report& report, const DeviceInfo& device, const CommonArgs& common,
            const std::string& date, const std::string& table) {
  std::printf("\n%s", table.c_str());
  for (const auto& note : report.notes) {
    if (note.is_string()) std::printf("note: %s\n", note.get<std::string>().c_str());
  }
  if (common.no_save) return 0;
  const nlohmann::json doc = BuildDocument(report, device, common.argv, date);
  absl::StatusOr<std::string> path = WriteDocument(doc, common.out_dir);
  if (!path.ok()) return Fail(report.benchmark, path.status());
  std::printf("result: %s\n", path->c_str());
  return 0;
}

int Fail(const std::string& name, const absl::Status& status) {
  std::fprintf(stderr, "bench %s: %s\n", name.c_str(), status.ToString().c_str());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 2;
    default:
      return 1;
  }
}

}  // namespace sparsefill::bench
