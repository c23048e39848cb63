// `bench prefill`: full-model prefill of a qwen3-8b-shaped synthetic checkpoint on the cuda
// engine (dense, InfLLM-V2 and PHSA policies) with every layer's K/V offloaded to host memory,
// side by side in one run with a dense PyTorch reference of the same model (cuBLAS GEMMs + SDPA,
// tools/bench/prefill/torch_reference.py) and the GEMM floor measured on the same device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "tools/bench/commands.h"

namespace sparsefill::bench {

struct PrefillArgs {
  CommonArgs common;
  std::string model;               // --model (default <build>/models/qwen3-8b; made if absent)
  std::string shape = "qwen3-8b";  // --shape (when the model is made)
  int32_t layers = 0;              // --layers: > 0 makes a shallower model (quick runs)
  std::vector<int64_t> tokens = {32768, 131072};                      // --tokens
  std::vector<std::string> policies = {"dense", "infllmv2", "phsa"};  // --policies
  int64_t long_tokens = 524288;       // --long-tokens: one InfLLM-V2 run at this length (0: none)
  std::string text;                   // --text (default ../shared/data/pride_and_prejudice.txt)
  bool torch = true;                  // --no-torch skips the PyTorch reference
  std::string python = "python3";     // --python
  uint64_t seed = 1;                  // --seed (token ids when no text/tokenizer)
  std::string dense_engine = "auto";  // --dense-engine: the dense attention kernel the engine runs
  // --sparse-rows: the sparse policies run once per CTA shape listed (auto, 64, 128 rows)
  std::vector<std::string> sparse_engines = {"auto"};
  std::vector<std::string> sparse_rows = {"auto"};
  // --tile-skip: each sparse run once per value listed (on, off: the m-tile skip of the kernel)
  std::vector<std::string> tile_skip = {"on"};
};
CLI::App* AddPrefillCommand(CLI::App& app, PrefillArgs& args);
int RunPrefill(const PrefillArgs& args);

}  // namespace sparsefill::bench
