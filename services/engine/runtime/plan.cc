#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sparsefill/engine/engine.h"

namespace sparsefill::engine {

std::string PrefillPlan::ToString() const {
  return absl::StrFormat(
      "PrefillPlan{tokens=%d layers=%d attention=%s selection=%s blocks=%d "
      "blocks_per_query=%d mlp_chunk=%d workspace=%.1fMiB}",
      num_tokens, num_layers, dense ? "dense" : "sparse", selection.ToString(), num_blocks,
      blocks_per_query, mlp_chunk_tokens, static_cast<double>(workspace_bytes) / (1 << 20));
}

}  // namespace sparsefill::engine
