// The decode sink's run: flags in, exit code out (main only parses).
#pragma once

#include <cstdint>
#include <string>

namespace sparsefill::tools {

struct SinkArgs {
  std::string coordinator;  // host:port
  std::string model_dir;    // checkpoint the sink decodes with
  std::string model_name;   // "": the coordinator's only model
  std::string cache;        // "": prefill text/tokens first
  std::string text;
  std::string tokens;
  int64_t max_tokens = 0;
  std::string policy = "phsa";
  // Selection overrides (negative: the policy's default).
  int32_t block_size = -1;
  int32_t topk = -1;
  int64_t dense_below = -1;
  float lambda = -1.0f;
  int32_t init_blocks = -1;
  int32_t local_tokens = -1;
  bool measure = false;
  int32_t next_token = 0;
  int32_t top = 10;
  bool json = false;
  std::string dump_probs;
  bool verify = false;
  std::string token;
  std::string token_file;
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_name;
  // Stream READY caches straight from the workers when the coordinator offers a plan (the
  // client's default); false: always through the coordinator's relay.
  bool direct = true;
  std::string worker_tls_name;  // name checked against the workers' certificates
  double timeout_s = 600;
  bool quiet = false;
};

// 0 on success; 1 on a runtime error; 2 on bad input; 3 when --verify-against-local found a
// difference.
int RunSink(const SinkArgs& args);

}  // namespace sparsefill::tools
