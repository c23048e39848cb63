// `bench attention` (CUDA builds only): on one GPU and in one run, for each length and selection
// configuration, times torch SDPA dense causal, FlexAttention with our blocks (tile unions), our
// dense kernel, our selection (summaries + block selection), our sparse attention and selection +
// sparse together, and checks the speed targets.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "tools/bench/commands.h"

namespace sparsefill::bench {

struct AttentionArgs {
  CommonArgs common;
  std::vector<int64_t> tokens = {32768, 65536, 131072};  // --tokens
  int32_t q_heads = 32;                                  // --q-heads
  int32_t kv_heads = 8;                                  // --kv-heads
  int32_t head_dim = 128;                                // --head-dim (64 or 128)
  int warmup = 1;                                        // --warmup
  int repeats = 5;                                       // --repeats
  uint64_t seed = 1;                                     // --seed
  std::string python = "python3";                        // --python
  std::string script;            // --torch-script (default <source>/tools/bench/attention/...)
  bool no_torch = false;         // --no-torch: our kernels only
  bool selection_only = false;   // --selection-only: only our selection, fused and materialised
  std::string tmp_dir = "/tmp";  // --tmp-dir: where the exchange directory is made
};

CLI::App* AddAttentionCommand(CLI::App& app, AttentionArgs& args);
int RunAttention(const AttentionArgs& args);

}  // namespace sparsefill::bench
