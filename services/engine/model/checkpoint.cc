// Checkpoint::Open: config.json + (index.json ->) memory-mapped safetensors, validated up front so
// that the engine never meets a malformed tensor later.
#include "sparsefill/engine/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "services/engine/model/file_util.h"
#include "services/engine/model/mapped_file.h"
#include "services/engine/model/safetensors_format.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using model_internal::MappedFile;

constexpr char kConfigFile[] = "config.json";
constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kSingleFile[] = "model.safetensors";
constexpr uint64_t kMaxJsonFileBytes = uint64_t{64} << 20;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

class CheckpointImpl final : public Checkpoint {
 public:
  const ModelConfig& config() const override { return config_; }
  const std::string& dir() const override { return dir_; }

  absl::StatusOr<TensorView> Tensor(std::string_view name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      return absl::NotFoundError(
          absl::StrCat(dir_, ": no tensor \"", AsAbsl(name), "\" in the checkpoint"));
    }
    return it->second;
  }

  std::vector<std::string> TensorNamesInFiles() const override {
    std::vector<std::string> names;
    names.reserve(tensors_.size());
    for (const auto& [name, view] : tensors_) names.push_back(name);
    return names;
  }

  std::vector<std::string> Files() const override {
    std::vector<std::string> out;
    for (const auto& f : files_) out.push_back(f->path());
    return out;
  }

  std::string TokenizerPath() const override { return tokenizer_; }

  ModelConfig config_;
  std::string dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorView, std::less<>> tensors_;
  std::string tokenizer_;
};

// weight_map of an index file: tensor -> shard file name (plain names inside the directory).
absl::StatusOr<std::map<std::string, std::string>> ReadIndex(const std::string& path) {
  SF_ASSIGN_OR_RETURN(std::string text, model_internal::ReadSmallFile(path, kMaxJsonFileBytes));
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a valid JSON object"));
  }
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing \"weight_map\" object"));
  }
  std::map<std::string, std::string> out;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", it.key(), "\": weight_map value is not a file name"));
    }
    const std::string file = it->get<std::string>();
    // Shards live in the checkpoint directory itself; anything else could read outside it.
    if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
        file.find('\\') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", it.key(),
                                                     "\": weight_map names file \"", file,
                                                     "\", which is not a plain file name"));
    }
    out[it.key()] = file;
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"weight_map\" is empty"));
  }
  return out;
}

// Maps and validates one safetensors file, adding its tensors to `cp`.
absl::Status AddFile(const std::string& path, CheckpointImpl& cp) {
  SF_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  SF_ASSIGN_OR_RETURN(model_internal::SafetensorsLayout layout,
                      model_internal::ParseSafetensors(file->data(), file->size(), path));
  for (model_internal::SafetensorsEntry& e : layout.tensors) {
    auto it = cp.tensors_.find(e.name);
    if (it != cp.tensors_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor \"", e.name, "\" is also in ",
                                                     it->second.file,
                                                     " (duplicate across shards)"));
    }
    TensorView v;
    v.name = e.name;
    v.dtype = e.dtype;
    v.shape = std::move(e.shape);
    v.nbytes = static_cast<size_t>(e.end - e.begin);
    v.data = file->data() + layout.data_offset + e.begin;
    v.file = path;
    cp.tensors_.emplace(e.name, std::move(v));
  }
  cp.files_.push_back(std::move(file));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a checkpoint directory (does not exist)"));
  }
  auto cp = std::make_unique<CheckpointImpl>();
  cp->dir_ = dir;
  const fs::path root(dir);

  // config.json
  const std::string config_path = (root / kConfigFile).string();
  if (!fs::exists(config_path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": missing"));
  }
  SF_ASSIGN_OR_RETURN(std::string config_text,
                      model_internal::ReadSmallFile(config_path, kMaxJsonFileBytes));
  SF_ASSIGN_OR_RETURN(cp->config_, ParseModelConfig(config_text, config_path));
  bool config_has_dtype = false;
  {
    const Json j = Json::parse(config_text, nullptr, /*allow_exceptions=*/false);
    config_has_dtype = (j.contains("dtype") && !j["dtype"].is_null()) ||
                       (j.contains("torch_dtype") && !j["torch_dtype"].is_null());
  }

  // Weight files: the index's shards, or the single file.
  const std::string index_path = (root / kIndexFile).string();
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index_path, ec)) {
    SF_ASSIGN_OR_RETURN(weight_map, ReadIndex(index_path));
    std::set<std::string> shard_names;
    for (const auto& [tensor, file] : weight_map) {
      if (shard_names.insert(file).second && !fs::is_regular_file(root / file, ec)) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor \"", tensor,
                                                       "\": weight_map names file \"", file,
                                                       "\", which is missing"));
      }
    }
    for (const std::string& file : shard_names) {
      SF_RETURN_IF_ERROR(AddFile((root / file).string(), *cp));
    }
    for (const auto& [tensor, file] : weight_map) {
      auto it = cp->tensors_.find(tensor);
      const std::string shard = (root / file).string();
      if (it == cp->tensors_.end() || it->second.file != shard) {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": tensor \"", tensor, "\": weight_map places it in ", shard,
            it == cp->tensors_.end() ? ", but no shard has it"
                                     : absl::StrCat(", but it is in ", it->second.file)));
      }
    }
  } else {
    const std::string single = (root / kSingleFile).string();
    if (!fs::exists(single, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, ": no ", kSingleFile, " and no ", kIndexFile));
    }
    SF_RETURN_IF_ERROR(AddFile(single, *cp));
  }

  // Every tensor the config needs, with the config's dtype and shapes. Without a dtype in
  // config.json the embedding's dtype stands for the checkpoint's.
  ModelConfig& config = cp->config_;
  if (!config_has_dtype) {
    auto it = cp->tensors_.find(TensorNames::Embedding());
    if (it != cp->tensors_.end()) config.dtype = it->second.dtype;
  }
  const std::string where_missing = weight_map.empty() ? (root / kSingleFile).string() : index_path;
  for (const TensorSpec& spec : ExpectedTensors(config)) {
    auto it = cp->tensors_.find(spec.name);
    if (it == cp->tensors_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_missing, ": tensor \"", spec.name, "\" is missing (",
                       AsAbsl(ArchitectureName(config.arch)),
                       " with this config.json needs it, shape ", ShapeString(spec.shape), ")"));
    }
    const TensorView& v = it->second;
    if (v.dtype != spec.dtype) {
      return absl::InvalidArgumentError(
          absl::StrCat(v.file, ": tensor \"", spec.name, "\": dtype ", AsAbsl(DTypeName(v.dtype)),
                       " disagrees with the checkpoint dtype ", AsAbsl(DTypeName(spec.dtype)),
                       " of ", config_path));
    }
    if (v.shape != spec.shape) {
      return absl::InvalidArgumentError(
          absl::StrCat(v.file, ": tensor \"", spec.name, "\": shape ", ShapeString(v.shape),
                       " disagrees with ", config_path, ", which needs ", ShapeString(spec.shape)));
    }
  }

  const fs::path tok = root / "tokenizer.json";
  if (fs::is_regular_file(tok, ec)) cp->tokenizer_ = tok.string();
  return std::unique_ptr<Checkpoint>(std::move(cp));
}

}  // namespace sparsefill::engine
