// A Hugging Face checkpoint directory: config.json, *.safetensors (optionally sharded through
// model.safetensors.index.json), optional tokenizer.json. Files are memory-mapped.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/engine/model_config.h"

namespace sparsefill::engine {

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  // Into the mapped file; valid while the Checkpoint lives. Aligned to the element size when the
  // file's header length is a multiple of 8 (safetensors and WriteSafetensors pad it so).
  const void* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // the safetensors file it came from
  int64_t numel() const;
};

// Hugging Face tensor names of the architectures we load.
struct TensorNames {
  static std::string Embedding();  // model.embed_tokens.weight
  static std::string FinalNorm();  // model.norm.weight
  static std::string LmHead();     // lm_head.weight (absent when tied)
  static std::string Layer(int layer, std::string_view suffix);  // model.layers.{i}.{suffix}
};

// A tensor's name, element type and shape, without data.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  int64_t numel() const;
  uint64_t nbytes() const { return static_cast<uint64_t>(numel()) * DTypeSize(dtype); }
};

// Every tensor the config's architecture needs, in checkpoint order (embedding, layers, final
// norm, LM head), in the config's dtype. Shapes are [out, in] as Hugging Face stores them.
std::vector<TensorSpec> ExpectedTensors(const ModelConfig& config);

class Checkpoint {
 public:
  // Opens and validates the whole directory: config, index, every safetensors header, every
  // tensor the config needs (name, dtype, shape). Any problem is InvalidArgument naming the file
  // and, where there is one, the tensor (NotFound when `dir` itself does not exist). Never
  // crashes on malformed input. Tensors the config does not need are kept but not required.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  virtual ~Checkpoint() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const std::string& dir() const = 0;
  // NotFound naming the tensor when absent.
  virtual absl::StatusOr<TensorView> Tensor(std::string_view name) const = 0;
  // Sorted.
  virtual std::vector<std::string> TensorNamesInFiles() const = 0;
  // The safetensors files in use, sorted (full paths).
  virtual std::vector<std::string> Files() const = 0;
  // Path of tokenizer.json when the directory has one, else "".
  virtual std::string TokenizerPath() const = 0;
};

// ---- Writing ----

// Produces elements [first, first + count) of `spec` into `out` (count * DTypeSize(spec.dtype)
// bytes, in spec.dtype). Called from several threads at once for disjoint ranges, so it must be
// thread-safe, and it must depend only on its arguments: that keeps the files byte-identical
// whatever the thread count and chunking.
using TensorFillFn =
    std::function<absl::Status(const TensorSpec& spec, int64_t first, int64_t count, void* out)>;

struct SafetensorsWriteOptions {
  // Threads calling the fill function; 0 = std::thread::hardware_concurrency().
  int threads = 0;
  // Bytes per fill call (rounded down to whole elements, at least one element). Default 8 MiB.
  uint64_t chunk_bytes = uint64_t{8} << 20;
  // Extra "__metadata__" entries besides "format": "pt".
  std::map<std::string, std::string> metadata;
};

// Writes a safetensors file (header with "__metadata__": {"format": "pt"}, tensors in the given
// order, header padded with spaces to a multiple of 8 bytes) atomically (temp file + rename),
// streaming: at most a few chunks per thread are in memory, never the whole file.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                              const TensorFillFn& fill,
                              const SafetensorsWriteOptions& options = {});

// One tensor held in memory (tests, small fixtures): data holds numel * DTypeSize(dtype) bytes.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};
// The in-memory convenience form of the streaming writer above.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors);

// How a checkpoint's tensors are split over files: one "model.safetensors" when the total fits
// in `max_shard_bytes`, else "model-0000K-of-0000N.safetensors" filled greedily in order (a
// tensor larger than the limit gets a shard of its own).
struct ShardPlan {
  struct Shard {
    std::string file_name;
    std::vector<size_t> tensors;  // indices into the spec list
    uint64_t data_bytes = 0;
  };
  std::vector<Shard> shards;
  uint64_t total_bytes = 0;
  bool sharded() const { return shards.size() > 1; }
};
ShardPlan PlanShards(const std::vector<TensorSpec>& tensors, uint64_t max_shard_bytes);

// Writes the planned safetensors files into `dir` (created when missing) and, when sharded,
// model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map"}). Weight files of an
// earlier, differently sharded checkpoint in `dir` are removed so that Open never mixes them.
// Returns the paths written.
absl::StatusOr<std::vector<std::string>> WriteCheckpointTensors(
    const std::string& dir, const std::vector<TensorSpec>& tensors, const TensorFillFn& fill,
    uint64_t max_shard_bytes, const SafetensorsWriteOptions& options = {});

}  // namespace sparsefill::engine
