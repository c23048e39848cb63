// The CLI's subcommands.
#pragma once

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace sparsefill::tools {

struct PrefillArgs {
  std::string model;        // checkpoint directory
  std::string text;         // text file (tokenised with the checkpoint's tokenizer.json)
  std::string tokens;       // token-id file
  std::string policy = "phsa";
  std::string backend = "cpu";
  int64_t max_tokens = 0;   // 0: the whole input
  bool measure = false;
  bool json = false;
  // Selection overrides (-1: the policy's default).
  int32_t block_size = -1;
  int32_t topk = -1;
  int64_t dense_below = -1;
  float lambda = -1.0f;
};

CLI::App* AddPrefillCommand(CLI::App& app, PrefillArgs& args);
// Returns the process exit code: 0 on success, 1 on a runtime error, 2 on bad input.
int RunPrefill(const PrefillArgs& args);

}  // namespace sparsefill::tools
