#include "sparsefill/common/status.h"

#include <cstdio>

namespace sparsefill {

void IgnoreError(const absl::Status& status, std::string_view why) {
  if (status.ok()) return;
  std::fprintf(stderr, "sparsefill: ignoring error (%.*s): %s\n", static_cast<int>(why.size()),
               why.data(), status.ToString().c_str());
}

}  // namespace sparsefill
