// The subprocess half of `bench attention`: files for torch_reference.py in a temporary
// directory, the script run on the same GPU, its JSON read back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/bench/attention/attention_plan.h"

namespace sparsefill::bench {

struct TorchRequest {
  std::string dir;     // temporary directory holding every exchanged file
  std::string python;  // interpreter
  std::string script;  // torch_reference.py
  int64_t max_tokens = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int warmup = 1;
  int repeats = 5;
  std::string q_file, k_file, v_file;             // bf16 [max_tokens, heads, head_dim]
  std::vector<int64_t> dense;                     // lengths for SDPA
  nlohmann::json flex = nlohmann::json::array();  // one object per FlexAttention measurement
};

// Writes `bytes` bytes to `path`.
[[nodiscard]] absl::Status WriteBinary(const std::string& path, const void* data, size_t bytes);

// Writes the CSR lists of `tiles` into the request's directory and returns the flex entry
// describing them (key, tokens, q_tile, kv_block, num_tiles, offsets, blocks).
absl::StatusOr<nlohmann::json> WriteFlexRun(const std::string& dir, const std::string& key,
                                            int64_t tokens, const TileBlocks& tiles);

// Writes meta.json, runs the script (its output goes to this process's stdout) and parses
// torch.json. A failing script is an error carrying its exit status.
absl::StatusOr<nlohmann::json> RunTorchReference(const TorchRequest& request);

}  // namespace sparsefill::bench
