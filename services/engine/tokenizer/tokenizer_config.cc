#include "services/engine/tokenizer/tokenizer_config.h"

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::tokenizer_internal {
namespace {

using nlohmann::json;

// The GPT-2 pattern ByteLevel uses when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::Status Bad(std::string_view name, std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(AsAbsl(name), ": ", AsAbsl(field), ": ", AsAbsl(what)));
}

std::string TypeOf(const json& j) {
  const auto t = j.find("type");
  if (t == j.end()) return "(no type)";
  return t->dump();
}

absl::StatusOr<bool> ParseNormalizer(const json& n, std::string_view name, std::string field) {
  if (n.is_null()) return false;
  if (!n.is_object()) return Bad(name, field, "must be an object or null");
  const std::string type = TypeOf(n);
  if (type == "\"NFC\"") return true;
  if (type == "\"Sequence\"") {
    const auto list = n.find("normalizers");
    if (list == n.end() || !list->is_array()) {
      return Bad(name, field + ".normalizers", "must be an array");
    }
    bool nfc = false;
    for (size_t i = 0; i < list->size(); ++i) {
      SF_ASSIGN_OR_RETURN(
          const bool one,
          ParseNormalizer((*list)[i], name, absl::StrCat(field, ".normalizers[", i, "]")));
      nfc = nfc || one;
    }
    return nfc;
  }
  return Bad(
      name, field + ".type",
      absl::StrCat("unsupported normalizer ", type, " (supported: null, NFC, Sequence of NFC)"));
}

absl::StatusOr<bool> BoolField(const json& obj, std::string_view name, const std::string& field,
                               const char* key, std::optional<bool> default_value) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (default_value.has_value()) return *default_value;
    return Bad(name, field + "." + key, "missing");
  }
  if (!it->is_boolean()) return Bad(name, field + "." + key, "must be a boolean");
  return it->get<bool>();
}

absl::Status ParsePreTokenizer(const json& p, std::string_view name, const std::string& field,
                               std::vector<PreTokenizerStep>& steps, bool& saw_byte_level) {
  if (!p.is_object()) return Bad(name, field, "must be an object");
  if (saw_byte_level) {
    return Bad(name, field, "a pre-tokenizer after ByteLevel is not supported");
  }
  const std::string type = TypeOf(p);
  if (type == "\"Sequence\"") {
    const auto list = p.find("pretokenizers");
    if (list == p.end() || !list->is_array()) {
      return Bad(name, field + ".pretokenizers", "must be an array");
    }
    for (size_t i = 0; i < list->size(); ++i) {
      SF_RETURN_IF_ERROR(ParsePreTokenizer(
          (*list)[i], name, absl::StrCat(field, ".pretokenizers[", i, "]"), steps, saw_byte_level));
    }
    return absl::OkStatus();
  }
  if (type == "\"Split\"") {
    const auto behavior = p.find("behavior");
    if (behavior == p.end() || *behavior != "Isolated") {
      return Bad(name, field + ".behavior",
                 absl::StrCat("unsupported split behavior ",
                              behavior == p.end() ? "(missing)" : behavior->dump(),
                              " (only \"Isolated\")"));
    }
    SF_ASSIGN_OR_RETURN(const bool invert, BoolField(p, name, field, "invert", false));
    if (invert) return Bad(name, field + ".invert", "true is not supported");
    const auto pattern = p.find("pattern");
    if (pattern == p.end() || !pattern->is_object()) {
      return Bad(name, field + ".pattern", "must be {\"Regex\": ...} or {\"String\": ...}");
    }
    std::string pcre2;
    if (const auto re = pattern->find("Regex"); re != pattern->end() && re->is_string()) {
      auto translated = OnigurumaToPcre2(re->get_ref<const std::string&>());
      if (!translated.ok()) {
        return Bad(name, field + ".pattern.Regex", std::string(translated.status().message()));
      }
      pcre2 = *std::move(translated);
    } else if (const auto s = pattern->find("String"); s != pattern->end() && s->is_string()) {
      pcre2 = QuotePcre2(s->get_ref<const std::string&>());
    } else {
      return Bad(name, field + ".pattern", "must be {\"Regex\": ...} or {\"String\": ...}");
    }
    SF_ASSIGN_OR_RETURN(auto regex, SplitRegex::Compile(pcre2, absl::StrCat(AsAbsl(name), ": ",
                                                                            field, ".pattern")));
    steps.push_back(PreTokenizerStep{std::move(regex), false});
    return absl::OkStatus();
  }
  if (type == "\"ByteLevel\"") {
    SF_ASSIGN_OR_RETURN(const bool add_prefix_space,
                        BoolField(p, name, field, "add_prefix_space", std::nullopt));
    SF_ASSIGN_OR_RETURN(const bool use_regex, BoolField(p, name, field, "use_regex", true));
    PreTokenizerStep step;
    step.add_prefix_space = add_prefix_space;
    if (use_regex) {
      SF_ASSIGN_OR_RETURN(const std::string pcre2, OnigurumaToPcre2(kGpt2Pattern));
      SF_ASSIGN_OR_RETURN(step.regex, SplitRegex::Compile(pcre2, "GPT-2 pattern"));
    }
    steps.push_back(std::move(step));
    saw_byte_level = true;
    return absl::OkStatus();
  }
  return Bad(
      name, field + ".type",
      absl::StrCat("unsupported pre-tokenizer ", type, " (supported: Sequence, Split, ByteLevel)"));
}

absl::Status ParseAddedTokens(const json& root, std::string_view name,
                              std::vector<AddedToken>& out) {
  const auto list = root.find("added_tokens");
  if (list == root.end() || list->is_null()) return absl::OkStatus();
  if (!list->is_array()) return Bad(name, "added_tokens", "must be an array");
  // Two added tokens with one id cannot both decode to their own content (one would silently
  // decode as the other), so such a file is refused.
  std::map<int32_t, size_t> first_with_id;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& t = (*list)[i];
    const std::string field = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object()) return Bad(name, field, "must be an object");
    AddedToken a;
    const auto id = t.find("id");
    if (id == t.end() || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() > kMaxTokenId) {
      return Bad(name, field + ".id", "must be an integer in [0, 2^22)");
    }
    a.id = static_cast<int32_t>(id->get<int64_t>());
    const auto content = t.find("content");
    if (content == t.end() || !content->is_string()) {
      return Bad(name, field + ".content", "must be a string");
    }
    a.content = content->get<std::string>();
    if (const auto [it, fresh] = first_with_id.emplace(a.id, i); !fresh) {
      return Bad(
          name, field + ".id",
          absl::StrCat("id ", a.id, " is already the id of added_tokens[", it->second, "] (\"",
                       out[it->second].content, "\"); each added token needs its own id"));
    }
    SF_ASSIGN_OR_RETURN(a.special, BoolField(t, name, field, "special", false));
    SF_ASSIGN_OR_RETURN(a.single_word, BoolField(t, name, field, "single_word", false));
    SF_ASSIGN_OR_RETURN(a.lstrip, BoolField(t, name, field, "lstrip", false));
    SF_ASSIGN_OR_RETURN(a.rstrip, BoolField(t, name, field, "rstrip", false));
    SF_ASSIGN_OR_RETURN(a.normalized, BoolField(t, name, field, "normalized", !a.special));
    out.push_back(std::move(a));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenizerConfig> ParseTokenizerJson(std::string_view json_text,
                                                   std::string_view name,
                                                   const ByteLevelAlphabet& alphabet) {
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(name), ": not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return Bad(name, "(root)", "must be a JSON object");

  TokenizerConfig config;
  const auto normalizer = root.find("normalizer");
  if (normalizer != root.end()) {
    SF_ASSIGN_OR_RETURN(config.nfc, ParseNormalizer(*normalizer, name, "normalizer"));
  }

  const auto pre = root.find("pre_tokenizer");
  if (pre == root.end() || pre->is_null()) {
    return Bad(name, "pre_tokenizer", "missing (a ByteLevel pre-tokenizer is required)");
  }
  bool saw_byte_level = false;
  SF_RETURN_IF_ERROR(
      ParsePreTokenizer(*pre, name, "pre_tokenizer", config.pre_tokenizer, saw_byte_level));
  if (!saw_byte_level) {
    return Bad(name, "pre_tokenizer",
               "has no ByteLevel stage (only byte-level BPE vocabularies are supported)");
  }

  SF_RETURN_IF_ERROR(ParseAddedTokens(root, name, config.added_tokens));

  const auto model = root.find("model");
  if (model == root.end() || model->is_null()) return Bad(name, "model", "missing");
  SF_ASSIGN_OR_RETURN(BpeModel bpe,
                      BpeModel::FromJson(*model, absl::StrCat(AsAbsl(name), ": model"), alphabet));
  config.model = std::make_unique<BpeModel>(std::move(bpe));
  return config;
}

}  // namespace sparsefill::engine::tokenizer_internal
