// Deterministic synthetic checkpoints in the exact Hugging Face layout (what tools/make-model
// writes): real shapes and code paths, random weights.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/engine/checkpoint.h"
#include "sparsefill/engine/model_config.h"

namespace sparsefill::engine {

// "tiny" (Qwen3 architecture, 4 layers, hidden 256, vocab 151936), "qwen3-0.6b", "qwen3-8b",
// "llama3-8b" (Llama 3.1 rope scaling), "minicpm4-8b" (LongRoPE + sparse_config).
std::vector<std::string> SyntheticShapeNames();
// The named shape's config as its Hugging Face config.json has it; InvalidArgument naming the
// shape when unknown.
absl::StatusOr<ModelConfig> SyntheticModelConfig(std::string_view shape);

struct SyntheticCheckpointOptions {
  std::optional<DType> dtype;  // default: the config's own (bf16 for every named shape)
  uint64_t seed = 0;
  int32_t layers = 0;                            // > 0 overrides the layer count (quick tests)
  uint64_t max_shard_bytes = uint64_t{4} << 30;  // default 4 GiB
  // tokenizer.json to copy into the directory; "" = none. When its token ids do not fit the
  // vocabulary it is skipped (with a note), or an error when `tokenizer_required`.
  std::string tokenizer_path;
  bool tokenizer_required = false;
  int threads = 0;  // generation threads; 0 = all cores. Never changes the bytes written.
  absl::Status Validate() const;
};

struct SyntheticCheckpointResult {
  ModelConfig config;              // as written to config.json
  std::vector<std::string> files;  // every file written, config.json and tokenizer included
  uint64_t tensor_bytes = 0;
  std::string tokenizer_note;  // what happened to the tokenizer, for the user
};

// `config` with the options' dtype and layer overrides applied.
ModelConfig ApplySyntheticOverrides(ModelConfig config, const SyntheticCheckpointOptions& options);

// The weights: matrices ~ N(0, 0.02), norm weights 1 + N(0, 0.02), biases ~ N(0, 0.01), the
// normal approximated by a centred sum of 12 uniforms (integer arithmetic, so identical bytes on
// every machine). Values depend only on (seed, tensor name, element index): a counter-based
// stream per 4096-element block, seeded from a hash of the name.
TensorFillFn SyntheticFill(uint64_t seed);

// Writes config.json, the safetensors file(s) (+ index when sharded) and, when asked for and
// fitting, tokenizer.json into `dir`. Byte-identical output for identical arguments.
absl::StatusOr<SyntheticCheckpointResult> WriteSyntheticCheckpoint(
    const std::string& dir, const ModelConfig& config, const SyntheticCheckpointOptions& options);

// The largest token id in a tokenizer.json (model vocabulary and added tokens).
absl::StatusOr<int64_t> TokenizerMaxId(const std::string& tokenizer_json_path);

}  // namespace sparsefill::engine
