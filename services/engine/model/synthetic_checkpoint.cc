#include "sparsefill/engine/synthetic_checkpoint.h"

#include <algorithm>
#include <array>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/engine/model/file_util.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine {
namespace {

namespace fs = std::filesystem;

// Elements per independently seeded stream. Fixed forever: changing it changes every file.
constexpr int64_t kBlock = 4096;
constexpr uint64_t kMaxTokenizerBytes = uint64_t{256} << 20;

uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Approximately standard normal values for one block: the sum of twelve 16-bit uniforms, centred
// (Irwin-Hall; unit variance, tails cut at 6 sigma), which is plenty for random weights. Integer
// arithmetic and one exact scaling only: libm's log / cos (Box-Muller) differ in the last bit
// between glibc's FMA and non-FMA variants, which would break "byte-identical on any machine".
// It is also ~10x cheaper, which matters for the 8B shapes.
void NormalBlock(uint64_t seed, double* out, int64_t n) {
  Rng rng(seed);
  for (int64_t i = 0; i < n; ++i) {
    int64_t sum = 0;
    for (int k = 0; k < 3; ++k) {
      const uint64_t r = rng.NextU64();
      sum += static_cast<int64_t>(r & 0xffff) + static_cast<int64_t>((r >> 16) & 0xffff) +
             static_cast<int64_t>((r >> 32) & 0xffff) + static_cast<int64_t>(r >> 48);
    }
    // (sum - 12 * 32767.5) / 65536, exactly representable.
    out[i] = static_cast<double>(2 * sum - 12 * 65535) * (1.0 / 131072.0);
  }
}

}  // namespace

absl::Status SyntheticCheckpointOptions::Validate() const {
  if (layers < 0) {
    return absl::InvalidArgumentError(absl::StrCat("layers must be >= 0, got ", layers));
  }
  if (max_shard_bytes == 0) return absl::InvalidArgumentError("max_shard_bytes must be > 0");
  if (threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be >= 0, got ", threads));
  }
  if (tokenizer_required && tokenizer_path.empty()) {
    return absl::InvalidArgumentError("tokenizer_required without a tokenizer_path");
  }
  return absl::OkStatus();
}

ModelConfig ApplySyntheticOverrides(ModelConfig config, const SyntheticCheckpointOptions& options) {
  if (options.dtype.has_value()) config.dtype = *options.dtype;
  if (options.layers > 0) config.num_layers = options.layers;
  return config;
}

TensorFillFn SyntheticFill(uint64_t seed) {
  return [seed](const TensorSpec& spec, int64_t first, int64_t count, void* out) -> absl::Status {
    const int64_t numel = spec.numel();
    if (first < 0 || count < 0 || first + count > numel) {
      return absl::InvalidArgumentError(
          absl::StrCat("range [", first, ", ", first + count, ") outside ", numel, " elements"));
    }
    double mean = 0.0;
    double stddev = 0.02;
    if (EndsWith(spec.name, "norm.weight")) {
      mean = 1.0;
    } else if (EndsWith(spec.name, ".bias")) {
      stddev = 0.01;
    }
    const uint64_t tensor_seed = SplitMix64(seed ^ Fnv1a64(spec.name));
    std::array<double, kBlock> normals;
    std::array<float, kBlock> values;
    const size_t es = DTypeSize(spec.dtype);
    auto* dst = static_cast<uint8_t*>(out);
    int64_t pos = first;
    while (pos < first + count) {
      const int64_t block = pos / kBlock;
      const int64_t block_begin = block * kBlock;
      const int64_t block_len = std::min(kBlock, numel - block_begin);
      NormalBlock(tensor_seed + static_cast<uint64_t>(block) * 0x632be59bd9b4e019ull,
                  normals.data(), block_len);
      const int64_t lo = pos - block_begin;
      const int64_t hi = std::min(block_len, first + count - block_begin);
      for (int64_t i = lo; i < hi; ++i) {
        // Two separately rounded IEEE operations (this file is built with -ffp-contract=off, so
        // no FMA on machines that have one): the same float everywhere.
        const size_t k = static_cast<size_t>(i);
        const double scaled = stddev * normals[k];
        values[k] = static_cast<float>(mean + scaled);
      }
      ConvertFromF32(values.data() + lo, spec.dtype, dst, static_cast<size_t>(hi - lo));
      dst += static_cast<size_t>(hi - lo) * es;
      pos = block_begin + hi;
    }
    return absl::OkStatus();
  };
}

absl::StatusOr<int64_t> TokenizerMaxId(const std::string& path) {
  SF_ASSIGN_OR_RETURN(std::string text, model_internal::ReadSmallFile(path, kMaxTokenizerBytes));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a valid JSON object"));
  }
  int64_t max_id = -1;
  auto take = [&](const nlohmann::json& v) {
    if (v.is_number_integer()) max_id = std::max(max_id, v.get<int64_t>());
  };
  auto model = j.find("model");
  if (model != j.end() && model->is_object()) {
    auto vocab = model->find("vocab");
    if (vocab != model->end() && vocab->is_object()) {  // BPE / WordPiece: token -> id
      for (const auto& v : *vocab) take(v);
    } else if (vocab != model->end() && vocab->is_array()) {  // Unigram: ids are positions
      max_id = std::max<int64_t>(max_id, static_cast<int64_t>(vocab->size()) - 1);
    }
  }
  auto added = j.find("added_tokens");
  if (added != j.end() && added->is_array()) {
    for (const auto& t : *added) {
      if (t.is_object() && t.contains("id")) take(t["id"]);
    }
  }
  if (max_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no token ids found"));
  }
  return max_id;
}

absl::StatusOr<SyntheticCheckpointResult> WriteSyntheticCheckpoint(
    const std::string& dir, const ModelConfig& base, const SyntheticCheckpointOptions& options) {
  SF_RETURN_IF_ERROR(options.Validate());
  SyntheticCheckpointResult result;
  result.config = ApplySyntheticOverrides(base, options);
  const ModelConfig& config = result.config;
  const std::string config_json = ModelConfigToJson(config);
  // Whatever we write must load again; catching a bad config here saves writing gigabytes.
  SF_RETURN_IF_ERROR(ParseModelConfig(config_json, "synthetic config.json").status());

  // Decide about the tokenizer before the long part.
  bool copy_tokenizer = false;
  if (!options.tokenizer_path.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(options.tokenizer_path, ec)) {
      if (options.tokenizer_required) {
        return absl::NotFoundError(absl::StrCat(options.tokenizer_path, ": no such tokenizer"));
      }
      result.tokenizer_note = absl::StrCat("no tokenizer at ", options.tokenizer_path);
    } else {
      SF_ASSIGN_OR_RETURN(int64_t max_id, TokenizerMaxId(options.tokenizer_path));
      if (max_id >= config.vocab_size) {
        const std::string why = absl::StrCat(options.tokenizer_path, ": token ids up to ", max_id,
                                             " do not fit the vocabulary of ", config.vocab_size);
        if (options.tokenizer_required) return absl::InvalidArgumentError(why);
        result.tokenizer_note = absl::StrCat("tokenizer not copied (", why, ")");
      } else {
        copy_tokenizer = true;
      }
    }
  } else {
    result.tokenizer_note = "no tokenizer requested";
  }

  const std::vector<TensorSpec> specs = ExpectedTensors(config);
  for (const TensorSpec& s : specs) result.tensor_bytes += s.nbytes();
  SafetensorsWriteOptions write_options;
  write_options.threads = options.threads;
  write_options.metadata["generator"] = "sparsefill make-model";
  write_options.metadata["seed"] = std::to_string(options.seed);
  SF_ASSIGN_OR_RETURN(result.files, WriteCheckpointTensors(dir, specs, SyntheticFill(options.seed),
                                                           options.max_shard_bytes, write_options));

  const fs::path root(dir);
  const std::string config_path = (root / "config.json").string();
  SF_RETURN_IF_ERROR(model_internal::WriteFileAtomically(config_path, config_json));
  result.files.push_back(config_path);

  const std::string tok_path = (root / "tokenizer.json").string();
  if (copy_tokenizer) {
    SF_ASSIGN_OR_RETURN(std::string tok,
                        model_internal::ReadSmallFile(options.tokenizer_path, kMaxTokenizerBytes));
    SF_RETURN_IF_ERROR(model_internal::WriteFileAtomically(tok_path, tok));
    result.files.push_back(tok_path);
    result.tokenizer_note = absl::StrCat("tokenizer copied from ", options.tokenizer_path);
  } else {
    // A tokenizer left from an earlier model in this directory would not match this one.
    std::error_code ec;
    fs::remove(tok_path, ec);
  }
  return result;
}

}  // namespace sparsefill::engine
