// Resolves a request's SelectionOverrides against a model, as the workers' ModelInfo describes
// it, into the fully-set form every shard receives (ShardRequest.selection). The only place in
// the coordinator that touches selection semantics; it goes through rpc's converters, never the
// engine directly.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "sparsefill/v1/coordinator.pb.h"

namespace sparsefill::coordinator {

struct ResolvedSelection {
  v1::SelectionOverrides config;  // every field set
  int32_t block_size = 0;         // shard plans align to it
  std::string policy;             // "phsa", "infllmv2", ...
};

// Policy: the override's, else model.default_policy. InvalidArgument names the field
// ("selection.topk: ...").
absl::StatusOr<ResolvedSelection> ResolveSelection(const v1::SelectionOverrides& requested,
                                                   const v1::ModelInfo& model);

}  // namespace sparsefill::coordinator
