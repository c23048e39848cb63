#include "tools/bench/load/proc_stats.h"

#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace sparsefill::bench {

absl::StatusOr<ProcMemory> ReadProcMemory(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/status");
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": no such process"));
  ProcMemory m;
  bool rss = false, hwm = false;
  std::string line;
  // "VmRSS:\t  12345 kB"
  const auto field = [&](absl::string_view name, int64_t* out) {
    absl::string_view v(line);
    if (!absl::ConsumePrefix(&v, name)) return false;
    v = absl::StripAsciiWhitespace(v);
    absl::ConsumeSuffix(&v, "kB");
    return absl::SimpleAtoi(absl::StripAsciiWhitespace(v), out);
  };
  while (std::getline(in, line)) {
    rss = rss || field("VmRSS:", &m.rss_kib);
    hwm = hwm || field("VmHWM:", &m.hwm_kib);
  }
  if (!rss || !hwm) return absl::DataLossError(absl::StrCat(path, ": no VmRSS/VmHWM"));
  return m;
}

}  // namespace sparsefill::bench
