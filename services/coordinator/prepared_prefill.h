// A validated prefill request (Coordinator::Validate's result). Internal to the coordinator.
#pragma once

#include <cstdint>
#include <vector>

#include "services/coordinator/coordinator.h"

namespace sparsefill::coordinator {

struct Coordinator::PreparedPrefill {
  v1::ModelInfo model;
  std::vector<int32_t> tokens;
  ResolvedSelection selection;
  int64_t ttl_s = 0;
};

}  // namespace sparsefill::coordinator
