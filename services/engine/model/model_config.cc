#include "sparsefill/engine/model_config.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sparsefill/common/status.h"

namespace sparsefill::engine {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

// Bounds that keep every product of two dimensions far from int64 overflow and reject configs
// no real model has.
constexpr int64_t kMaxDim = int64_t{1} << 24;
constexpr int64_t kMaxLayersOrHeads = 1 << 16;
constexpr int64_t kMaxHeadDim = int64_t{1} << 16;

std::string Shown(const Json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// Reads typed fields of one JSON object; every error names the file and the field path.
class Fields {
 public:
  Fields(const Json& obj, std::string_view file, std::string prefix)
      : obj_(obj), file_(file), prefix_(std::move(prefix)) {}

  // The value under `key`, or nullptr when absent or null (HF writes null for "not set").
  const Json* Find(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool Has(const char* key) const { return Find(key) != nullptr; }

  absl::Status Error(const char* key, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(file_), ": field \"", prefix_, key, "\": ", AsAbsl(what)));
  }

  // Integral numbers only (2048.0 is accepted: some exporters write ints as floats).
  absl::Status Int(const char* key, int64_t* out, bool required, int64_t lo, int64_t hi) const {
    const Json* v = Find(key);
    if (v == nullptr) {
      return required ? Error(key, "missing (required)") : absl::OkStatus();
    }
    return IntValue(key, *v, out, lo, hi);
  }
  absl::Status IntValue(const char* key, const Json& v, int64_t* out, int64_t lo,
                        int64_t hi) const {
    int64_t x = 0;
    if (v.is_number_integer()) {
      if (v.is_number_unsigned() &&
          v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Error(key, absl::StrCat("out of range: ", Shown(v)));
      }
      x = v.get<int64_t>();
    } else if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!(std::abs(d) < 9.0e15) || d != std::floor(d)) {
        return Error(key, absl::StrCat("expected an integer, got ", Shown(v)));
      }
      x = static_cast<int64_t>(d);
    } else {
      return Error(key, absl::StrCat("expected an integer, got ", Shown(v)));
    }
    if (x < lo || x > hi) {
      return Error(key, absl::StrCat("value ", x, " is outside [", lo, ", ", hi, "]"));
    }
    *out = x;
    return absl::OkStatus();
  }
  absl::Status Int32(const char* key, int32_t* out, bool required, int64_t lo, int64_t hi) const {
    int64_t x = *out;
    SF_RETURN_IF_ERROR(Int(key, &x, required, lo, hi));
    *out = static_cast<int32_t>(x);
    return absl::OkStatus();
  }

  // Finite numbers above `lo` (or equal to it when `allow_lo`).
  absl::Status Double(const char* key, double* out, bool required, double lo,
                      bool allow_lo = false) const {
    const Json* v = Find(key);
    if (v == nullptr) return required ? Error(key, "missing (required)") : absl::OkStatus();
    if (!v->is_number()) return Error(key, absl::StrCat("expected a number, got ", Shown(*v)));
    const double d = v->get<double>();
    if (!std::isfinite(d) || !(d > lo || (allow_lo && d == lo))) {
      return Error(key, absl::StrCat("value ", Shown(*v), " must be finite and ",
                                     allow_lo ? ">= " : "> ", lo));
    }
    *out = d;
    return absl::OkStatus();
  }

  absl::Status Bool(const char* key, bool* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean())
      return Error(key, absl::StrCat("expected true or false, got ", Shown(*v)));
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status DoubleList(const char* key, std::vector<double>* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return Error(key, "missing (required)");
    if (!v->is_array()) return Error(key, "expected a list of numbers");
    out->clear();
    for (const Json& e : *v) {
      if (!e.is_number() || !std::isfinite(e.get<double>()) || !(e.get<double>() > 0.0)) {
        return Error(key, absl::StrCat("expected positive numbers, got ", Shown(e)));
      }
      out->push_back(e.get<double>());
    }
    return absl::OkStatus();
  }

  // A token id or a list of them (the first counts); -1 when absent.
  absl::Status TokenId(const char* key, int64_t* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (v->is_array()) {
      if (v->empty()) return absl::OkStatus();
      return IntValue(key, v->front(), out, 0, kMaxDim * 64);
    }
    return IntValue(key, *v, out, 0, kMaxDim * 64);
  }

 private:
  const Json& obj_;
  std::string_view file_;
  std::string prefix_;
};

absl::StatusOr<Architecture> ArchitectureFromClass(std::string_view name) {
  if (name == "Qwen3ForCausalLM") return Architecture::kQwen3;
  if (name == "Qwen2ForCausalLM") return Architecture::kQwen2;
  if (name == "LlamaForCausalLM") return Architecture::kLlama;
  if (name == "MiniCPMForCausalLM") return Architecture::kMiniCpm;
  return absl::InvalidArgumentError("unknown");
}

absl::StatusOr<Architecture> ArchitectureFromModelType(std::string_view type) {
  if (type == "qwen3") return Architecture::kQwen3;
  if (type == "qwen2") return Architecture::kQwen2;
  if (type == "llama") return Architecture::kLlama;
  if (type == "minicpm") return Architecture::kMiniCpm;
  return absl::InvalidArgumentError("unknown");
}

// `rope` is either the legacy "rope_scaling" object or transformers 5's "rope_parameters".
absl::Status ParseRopeScaling(const Json& rope, std::string_view file, const char* field,
                              int64_t top_level_original_max, ModelConfig& c) {
  if (!rope.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(file), ": field \"", field, "\": expected an object"));
  }
  Fields f(rope, file, absl::StrCat(field, "."));
  const char* type_key = f.Has("rope_type") ? "rope_type" : "type";
  std::string type = "default";
  if (const Json* t = f.Find(type_key)) {
    if (!t->is_string()) return f.Error(type_key, "expected a string");
    type = t->get<std::string>();
  }
  RopeScaling& rs = c.rope_scaling;
  rs = RopeScaling{};
  if (type == "default") {
    rs.type = RopeScaling::Type::kNone;
  } else if (type == "linear") {
    rs.type = RopeScaling::Type::kLinear;
    SF_RETURN_IF_ERROR(f.Double("factor", &rs.factor, true, 0.0));
  } else if (type == "llama3") {
    rs.type = RopeScaling::Type::kLlama3;
    SF_RETURN_IF_ERROR(f.Double("factor", &rs.factor, true, 0.0));
    SF_RETURN_IF_ERROR(f.Double("low_freq_factor", &rs.low_freq_factor, true, 0.0));
    SF_RETURN_IF_ERROR(f.Double("high_freq_factor", &rs.high_freq_factor, true, 0.0));
    SF_RETURN_IF_ERROR(f.Int("original_max_position_embeddings",
                             &rs.original_max_position_embeddings, true, 1, kMaxDim * 64));
    if (!(rs.high_freq_factor > rs.low_freq_factor)) {
      return f.Error("high_freq_factor", "must be greater than low_freq_factor");
    }
  } else if (type == "longrope") {
    rs.type = RopeScaling::Type::kLongRope;
    SF_RETURN_IF_ERROR(f.DoubleList("short_factor", &rs.short_factor));
    SF_RETURN_IF_ERROR(f.DoubleList("long_factor", &rs.long_factor));
    // transformers takes original_max_position_embeddings from the top level (Phi-3) or from the
    // scaling dict (MiniCPM4); without either there is no extension.
    rs.original_max_position_embeddings =
        top_level_original_max > 0 ? top_level_original_max : c.max_position_embeddings;
    if (f.Has("original_max_position_embeddings")) {
      SF_RETURN_IF_ERROR(f.Int("original_max_position_embeddings",
                               &rs.original_max_position_embeddings, true, 1, kMaxDim * 64));
    }
    SF_RETURN_IF_ERROR(f.Double("attention_factor", &rs.attention_factor, false, 0.0));
    // Without an explicit attention_factor, an extended context scales attention by
    // sqrt(1 + log(factor) / log(original_max)): infinite for an original length of 1
    // (transformers raises ZeroDivisionError there).
    if (rs.attention_factor == 0.0 && rs.original_max_position_embeddings < 2 &&
        c.max_position_embeddings > rs.original_max_position_embeddings) {
      const std::string what = absl::StrCat(
          "must be at least 2 for LongRoPE to extend the context to ", c.max_position_embeddings,
          " (its attention scaling divides by log(original_max_position_embeddings))");
      if (f.Has("original_max_position_embeddings")) {
        return f.Error("original_max_position_embeddings", what);
      }
      return absl::InvalidArgumentError(
          absl::StrCat(AsAbsl(file), ": field \"original_max_position_embeddings\": ", what));
    }
  } else {
    return f.Error(type_key, absl::StrCat("unsupported RoPE type \"", type,
                                          "\" (supported: default, linear, llama3, longrope)"));
  }
  return absl::OkStatus();
}

absl::Status ParseSparseConfig(const Json& sc, std::string_view file, SparseConfig& s) {
  if (!sc.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(file), ": field \"sparse_config\": expected an object"));
  }
  Fields f(sc, file, "sparse_config.");
  s = SparseConfig{};
  s.present = true;
  SF_RETURN_IF_ERROR(f.Int32("kernel_size", &s.kernel_size, false, 1, kMaxDim));
  SF_RETURN_IF_ERROR(f.Int32("kernel_stride", &s.kernel_stride, false, 1, kMaxDim));
  SF_RETURN_IF_ERROR(f.Int32("init_blocks", &s.init_blocks, false, 0, kMaxDim));
  SF_RETURN_IF_ERROR(f.Int32("block_size", &s.block_size, false, 1, kMaxDim));
  SF_RETURN_IF_ERROR(f.Int32("window_size", &s.window_size, false, 0, kMaxDim * 64));
  SF_RETURN_IF_ERROR(f.Int32("topk", &s.topk, false, 1, kMaxDim));
  SF_RETURN_IF_ERROR(f.Int("dense_len", &s.dense_len, false, -1, kMaxDim * 64));
  SF_RETURN_IF_ERROR(f.Bool("use_nope", &s.use_nope));
  return absl::OkStatus();
}

std::string_view TorchDTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "float32";
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
  }
  return "bfloat16";
}

}  // namespace

std::string_view ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kQwen3:
      return "Qwen3ForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kMiniCpm:
      return "MiniCPMForCausalLM";
  }
  return "?";
}

std::string_view ArchitectureModelType(Architecture a) {
  switch (a) {
    case Architecture::kQwen3:
      return "qwen3";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kLlama:
      return "llama";
    case Architecture::kMiniCpm:
      return "minicpm";
  }
  return "?";
}

int64_t ModelConfig::NonEmbeddingParams() const {
  const int64_t h = hidden_size;
  int64_t per_layer = h * q_dim() + 2 * h * kv_dim() + q_dim() * h;  // q, k, v, o
  if (attention_bias) per_layer += q_dim() + 2 * kv_dim();
  if (qk_norm) per_layer += 2 * int64_t{head_dim};
  per_layer += 2 * h;                      // input and post-attention norms
  per_layer += 3 * h * intermediate_size;  // gate, up, down
  return per_layer * num_layers + h;       // + final norm
}

int64_t ModelConfig::TotalParams() const {
  const int64_t embed = vocab_size * hidden_size;
  return NonEmbeddingParams() + embed + (tie_word_embeddings ? 0 : embed);
}

double ModelConfig::EmbeddingScale() const { return scale_emb; }

double ModelConfig::ResidualScale() const {
  if (scale_depth == 0.0 || num_layers <= 0) return 1.0;
  return scale_depth / std::sqrt(static_cast<double>(num_layers));
}

double ModelConfig::FinalHiddenScale() const {
  if (dim_model_base <= 0) return 1.0;
  return static_cast<double>(dim_model_base) / static_cast<double>(hidden_size);
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view file_name) {
  const Json root = Json::parse(json_text.begin(), json_text.end(), nullptr,
                                /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(file_name), ": not valid JSON"));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(file_name), ": expected a JSON object at the top level"));
  }
  Fields f(root, file_name, "");
  ModelConfig c;

  // Architecture: architectures[0], else model_type.
  std::string model_type;
  if (const Json* mt = f.Find("model_type")) {
    if (!mt->is_string()) return f.Error("model_type", "expected a string");
    model_type = mt->get<std::string>();
  }
  if (const Json* archs = f.Find("architectures")) {
    if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
      return f.Error("architectures", "expected a non-empty list of class names");
    }
    const std::string name = (*archs)[0].get<std::string>();
    auto a = ArchitectureFromClass(name);
    if (!a.ok()) {
      return f.Error("architectures",
                     absl::StrCat("unknown architecture \"", name,
                                  "\" (supported: Qwen3ForCausalLM, Qwen2ForCausalLM, "
                                  "LlamaForCausalLM, MiniCPMForCausalLM)"));
    }
    c.arch = *a;
  } else {
    auto a = ArchitectureFromModelType(model_type);
    if (!a.ok()) {
      return f.Error("model_type", absl::StrCat("no \"architectures\" and unknown model_type \"",
                                                model_type, "\""));
    }
    c.arch = *a;
  }
  c.model_type = model_type.empty() ? std::string(ArchitectureModelType(c.arch)) : model_type;

  SF_RETURN_IF_ERROR(f.Int("vocab_size", &c.vocab_size, true, 1, kMaxDim));
  SF_RETURN_IF_ERROR(f.Int("hidden_size", &c.hidden_size, true, 1, kMaxDim));
  SF_RETURN_IF_ERROR(f.Int("intermediate_size", &c.intermediate_size, true, 1, kMaxDim));
  SF_RETURN_IF_ERROR(f.Int32("num_hidden_layers", &c.num_layers, true, 1, kMaxLayersOrHeads));
  SF_RETURN_IF_ERROR(f.Int32("num_attention_heads", &c.num_heads, true, 1, kMaxLayersOrHeads));
  c.num_kv_heads = c.num_heads;
  SF_RETURN_IF_ERROR(f.Int32("num_key_value_heads", &c.num_kv_heads, false, 1, kMaxLayersOrHeads));
  if (c.num_heads % c.num_kv_heads != 0) {
    return f.Error(
        "num_key_value_heads",
        absl::StrCat(c.num_kv_heads, " does not divide num_attention_heads ", c.num_heads));
  }
  if (f.Has("head_dim")) {
    SF_RETURN_IF_ERROR(f.Int32("head_dim", &c.head_dim, true, 2, kMaxHeadDim));
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      return f.Error("num_attention_heads",
                     absl::StrCat(c.num_heads, " does not divide hidden_size ", c.hidden_size,
                                  " and there is no head_dim"));
    }
    const int64_t derived = c.hidden_size / c.num_heads;
    // The same bounds as a head_dim given outright (a config rewritten with it must parse).
    if (derived < 2 || derived > kMaxHeadDim) {
      return f.Error(
          "num_attention_heads",
          absl::StrCat("hidden_size ", c.hidden_size, " / ", c.num_heads, " heads gives head_dim ",
                       derived, ", outside [2, ", kMaxHeadDim, "] (and there is no head_dim)"));
    }
    c.head_dim = static_cast<int32_t>(derived);
  }
  if (c.head_dim % 2 != 0) {
    return f.Error("head_dim", absl::StrCat("must be even for RoPE, got ", c.head_dim));
  }
  SF_RETURN_IF_ERROR(
      f.Int("max_position_embeddings", &c.max_position_embeddings, true, 1, kMaxDim * 64));
  SF_RETURN_IF_ERROR(f.Double("rms_norm_eps", &c.rms_norm_eps, false, 0.0));

  // dtype: transformers 5 writes "dtype", earlier versions "torch_dtype".
  const char* dtype_key = f.Has("dtype") ? "dtype" : "torch_dtype";
  if (const Json* d = f.Find(dtype_key)) {
    if (!d->is_string()) return f.Error(dtype_key, "expected a string such as \"bfloat16\"");
    auto dt = ParseDType(d->get<std::string>());
    if (!dt.ok()) return f.Error(dtype_key, std::string(dt.status().message()));
    c.dtype = *dt;
  }

  // Absent means untied: the default of LlamaConfig, Qwen2Config, Qwen3Config and MiniCPMConfig.
  c.tie_word_embeddings = false;
  SF_RETURN_IF_ERROR(f.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  SF_RETURN_IF_ERROR(f.Bool("attention_bias", &c.attention_bias));
  if (c.arch == Architecture::kQwen2) c.attention_bias = true;  // Qwen2 has no switch for it
  c.qk_norm = c.arch == Architecture::kQwen3;

  int64_t top_original_max = 0;  // Phi-3 style, read by transformers' longrope initialiser
  SF_RETURN_IF_ERROR(
      f.Int("original_max_position_embeddings", &top_original_max, false, 1, kMaxDim * 64));
  if (const Json* rp = f.Find("rope_parameters")) {
    if (!rp->is_object()) return f.Error("rope_parameters", "expected an object");
    Fields rf(*rp, file_name, "rope_parameters.");
    SF_RETURN_IF_ERROR(rf.Double("rope_theta", &c.rope_theta, false, 0.0));
    SF_RETURN_IF_ERROR(ParseRopeScaling(*rp, file_name, "rope_parameters", top_original_max, c));
  } else {
    SF_RETURN_IF_ERROR(f.Double("rope_theta", &c.rope_theta, false, 0.0));
    if (const Json* rs = f.Find("rope_scaling")) {
      SF_RETURN_IF_ERROR(ParseRopeScaling(*rs, file_name, "rope_scaling", top_original_max, c));
    }
  }
  if (c.rope_scaling.type == RopeScaling::Type::kLongRope) {
    const size_t half = static_cast<size_t>(c.head_dim / 2);
    const char* which = c.rope_scaling.short_factor.size() != half  ? "short_factor"
                        : c.rope_scaling.long_factor.size() != half ? "long_factor"
                                                                    : nullptr;
    if (which != nullptr) {
      const auto& v = which[0] == 's' ? c.rope_scaling.short_factor : c.rope_scaling.long_factor;
      return absl::InvalidArgumentError(
          absl::StrCat(AsAbsl(file_name), ": field \"",
                       f.Has("rope_parameters") ? "rope_parameters" : "rope_scaling", ".", which,
                       "\": has ", v.size(), " entries, expected head_dim / 2 = ", half));
    }
  }

  if (c.arch == Architecture::kMiniCpm) {
    c.scale_depth = 1.0;
    c.dim_model_base = 1;
  }
  SF_RETURN_IF_ERROR(f.Double("scale_emb", &c.scale_emb, false, 0.0));
  SF_RETURN_IF_ERROR(f.Double("scale_depth", &c.scale_depth, false, 0.0, /*allow_lo=*/true));
  SF_RETURN_IF_ERROR(f.Int("dim_model_base", &c.dim_model_base, false, 0, kMaxDim));
  if (const Json* sc = f.Find("sparse_config")) {
    SF_RETURN_IF_ERROR(ParseSparseConfig(*sc, file_name, c.sparse));
  }
  // Each dimension is bounded above, but their products could still overflow int64 in
  // NonEmbeddingParams / tensor sizes: bound the total in floating point first.
  {
    const double h = static_cast<double>(c.hidden_size);
    const double q = static_cast<double>(c.num_heads) * c.head_dim;
    const double kv = static_cast<double>(c.num_kv_heads) * c.head_dim;
    const double per_layer =
        2.0 * h * (q + kv) + 3.0 * h * static_cast<double>(c.intermediate_size);
    const double total = per_layer * c.num_layers + 2.0 * h * static_cast<double>(c.vocab_size);
    if (!(total < 1e15)) {
      return absl::InvalidArgumentError(absl::StrCat(AsAbsl(file_name), ": the shape describes ",
                                                     total,
                                                     " parameters, more than any loadable model"));
    }
  }
  SF_RETURN_IF_ERROR(f.TokenId("bos_token_id", &c.bos_token_id));
  SF_RETURN_IF_ERROR(f.TokenId("eos_token_id", &c.eos_token_id));
  return c;
}

std::string ModelConfigToJson(const ModelConfig& c) {
  OrderedJson j;
  j["architectures"] = OrderedJson::array({std::string(ArchitectureName(c.arch))});
  j["model_type"] =
      c.model_type.empty() ? std::string(ArchitectureModelType(c.arch)) : c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_bias"] = c.attention_bias;
  j["torch_dtype"] = std::string(TorchDTypeName(c.dtype));
  const RopeScaling& rs = c.rope_scaling;
  switch (rs.type) {
    case RopeScaling::Type::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScaling::Type::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rs.factor}};
      break;
    case RopeScaling::Type::kLlama3:
      j["rope_scaling"] = {
          {"rope_type", "llama3"},
          {"factor", rs.factor},
          {"low_freq_factor", rs.low_freq_factor},
          {"high_freq_factor", rs.high_freq_factor},
          {"original_max_position_embeddings", rs.original_max_position_embeddings}};
      break;
    case RopeScaling::Type::kLongRope: {
      OrderedJson r;
      r["rope_type"] = "longrope";
      r["long_factor"] = rs.long_factor;
      r["short_factor"] = rs.short_factor;
      r["original_max_position_embeddings"] = rs.original_max_position_embeddings;
      if (rs.attention_factor > 0.0) r["attention_factor"] = rs.attention_factor;
      j["rope_scaling"] = std::move(r);
      break;
    }
  }
  if (c.arch == Architecture::kMiniCpm || c.scale_emb != 1.0 || c.scale_depth != 0.0 ||
      c.dim_model_base != 0) {
    j["scale_emb"] = c.scale_emb;
    j["scale_depth"] = c.scale_depth;
    j["dim_model_base"] = c.dim_model_base;
  }
  if (c.sparse.present) {
    j["sparse_config"] = {
        {"kernel_size", c.sparse.kernel_size}, {"kernel_stride", c.sparse.kernel_stride},
        {"init_blocks", c.sparse.init_blocks}, {"block_size", c.sparse.block_size},
        {"window_size", c.sparse.window_size}, {"topk", c.sparse.topk},
        {"use_nope", c.sparse.use_nope},       {"dense_len", c.sparse.dense_len}};
  }
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  j["use_cache"] = true;
  // model_type is the only free text; replacing invalid UTF-8 keeps this from throwing.
  return j.dump(2, ' ', false, OrderedJson::error_handler_t::replace) + "\n";
}

}  // namespace sparsefill::engine
