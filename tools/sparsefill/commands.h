// The CLI's subcommands.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace CLI {
class App;
}

namespace sparsefill::tools {

struct PrefillArgs {
  std::string model;   // checkpoint directory
  std::string text;    // text file (tokenised with the checkpoint's tokenizer.json)
  std::string tokens;  // token-id file
  std::string policy = "phsa";
  std::string backend = "cpu";
  int64_t max_tokens = 0;  // 0: the whole input
  bool measure = false;
  std::string loss_queries = "1024";  // --loss-queries, see ParseLossQueries
  bool json = false;
  // Selection overrides (-1: the policy's default).
  int32_t block_size = -1;
  int32_t topk = -1;
  int64_t dense_below = -1;
  float lambda = -1.0f;
};

// --loss-queries: "all" or -1 (the information loss over every query) or a positive number of
// query positions (a stratified sample, engine::PrefillOptions::information_loss_queries).
// InvalidArgument naming the flag otherwise.
absl::StatusOr<int32_t> ParseLossQueries(const std::string& value);
// Over how many of num_tokens queries the information loss was measured, in words ("all N
// queries", "a stratified sample of Q of the N queries"; Q <= 0: not reported).
std::string LossQueriesWords(int64_t queries, int64_t num_tokens);

CLI::App* AddPrefillCommand(CLI::App& app, PrefillArgs& args);
// Returns the process exit code: 0 on success, 1 on a runtime error, 2 on bad input.
int RunPrefill(const PrefillArgs& args);

struct DemoArgs {
  std::string model;  // "": <build>/models/tiny (written by make-model when missing)
  std::string text;   // "": the shared novel, else its token ids from tests/fixtures
  std::string tokens;
  int64_t max_tokens = 32768;
  int32_t workers = 2;
  std::string policy = "phsa";
  std::string backend = "cpu";  // the workers' engine backend: cpu|cuda|auto
  bool measure = true;
  std::string loss_queries = "1024";  // --loss-queries, see ParseLossQueries
  int32_t next_token = -1;  // -1: the token that follows the prompt in the text
  bool json = false;
  double timeout_s = 600;
  // Metrics endpoints for a Prometheus to scrape: the coordinator on 127.0.0.1:P, worker i on
  // P + 1 + i. 0: none (the default).
  int32_t metrics_port_base = 0;
  // Seconds the cluster stays up after the report (a signal ends it earlier). 0: stop at once.
  double hold_seconds = 0;
};

CLI::App* AddDemoCommand(CLI::App& app, DemoArgs& args);
// Returns the process exit code: 0 on success, 1 on a runtime error, 2 on bad input, 128 + the
// signal when interrupted.
int RunDemo(const DemoArgs& args);

}  // namespace sparsefill::tools
