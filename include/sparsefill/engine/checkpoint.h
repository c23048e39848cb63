// A Hugging Face checkpoint directory: config.json, *.safetensors (optionally sharded through
// model.safetensors.index.json), optional tokenizer.json. Files are memory-mapped.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/engine/model_config.h"

namespace sparsefill::engine {

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // into the mapped file; valid while the Checkpoint lives
  size_t nbytes = 0;
  std::string file;  // the safetensors file it came from
  int64_t numel() const;
};

// Hugging Face tensor names of the architectures we load.
struct TensorNames {
  static std::string Embedding();             // model.embed_tokens.weight
  static std::string FinalNorm();             // model.norm.weight
  static std::string LmHead();                // lm_head.weight (absent when tied)
  static std::string Layer(int layer, std::string_view suffix);  // model.layers.{i}.{suffix}
};

class Checkpoint {
 public:
  // Opens and validates the whole directory: config, index, every safetensors header, every
  // tensor the config needs (name, dtype, shape). Any problem is InvalidArgument naming the file
  // and, where there is one, the tensor. Never crashes on malformed input.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  virtual ~Checkpoint() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const std::string& dir() const = 0;
  // NotFound naming the tensor when absent.
  virtual absl::StatusOr<TensorView> Tensor(std::string_view name) const = 0;
  virtual std::vector<std::string> TensorNamesInFiles() const = 0;
  // Path of tokenizer.json when the directory has one, else "".
  virtual std::string TokenizerPath() const = 0;
};

// One tensor to write: data holds numel * DTypeSize(dtype) bytes.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

// Writes a safetensors file (header with "__metadata__": {"format": "pt"}, tensors in the given
// order, 8-byte-aligned header) atomically (temp file + rename).
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors);

}  // namespace sparsefill::engine
