// The report `sparsefill demo` prints: the prefill's stats from the coordinator and the decode
// sink's own JSON result, as text or as one JSON object.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "sparsefill/client/types.h"

namespace sparsefill::tools {

struct DemoReport {
  std::string text_source;
  std::string model_dir;
  int32_t workers = 0;
  std::string backend = "cpu";  // what the workers were started with
  client::PrefillResult prefill;
  nlohmann::json sink;  // decode-sink --json
  int64_t prefill_done_unix_ms = 0;
  std::vector<double> layer_done_seconds;  // since admission
  double wall_seconds = 0;
  std::string next_token_note;  // where the decode step's input token came from
};

// 1 - selected keys / (layers x KV heads x N x N): the PHSA paper's whole-context convention.
double ContextSparsity(const client::PrefillResult& r);

void PrintDemoReport(const DemoReport& report, bool json);

}  // namespace sparsefill::tools
