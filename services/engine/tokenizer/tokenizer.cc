// Tokenizer::FromJson and the encode pipeline of tokenizers' TokenizerImpl::encode_single_sequence:
// added tokens on the raw text -> normalizer -> added tokens flagged `normalized` -> pre-tokenizer
// -> BPE per pre-token.
#include "sparsefill/engine/tokenizer.h"

#include <deque>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "services/engine/tokenizer/punctuation.h"
#include "services/engine/tokenizer/string_map.h"
#include "services/engine/tokenizer/tokenizer_config.h"
#include "services/engine/tokenizer/utf8.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine {
namespace {

using tokenizer_internal::AddedToken;
using tokenizer_internal::AddedTokenMatcher;
using tokenizer_internal::BpeModel;
using tokenizer_internal::ByteLevelAlphabet;
using tokenizer_internal::PreTokenizerStep;
using tokenizer_internal::Segment;
using tokenizer_internal::TokenizerConfig;

// Pre-tokens longer than this are not cached: they are rare and would bloat the cache.
constexpr size_t kMaxCachedWordBytes = 128;

// Per-Encode memo of pre-token -> ids; per call so that Encode stays const and thread-safe.
class WordCache {
 public:
  void Encode(const BpeModel& model, std::string_view word, std::vector<int32_t>& out) {
    if (word.size() > kMaxCachedWordBytes) {
      model.EncodeWord(word, out);
      return;
    }
    const auto it = map_.find(word);
    if (it != map_.end()) {
      out.insert(out.end(), ids_.begin() + it->second.first,
                 ids_.begin() + it->second.first + it->second.second);
      return;
    }
    const size_t before = out.size();
    model.EncodeWord(word, out);
    const auto offset = static_cast<uint32_t>(ids_.size());
    ids_.insert(ids_.end(), out.begin() + static_cast<ptrdiff_t>(before), out.end());
    map_.emplace(std::string(word),
                 std::make_pair(offset, static_cast<uint32_t>(out.size() - before)));
  }

 private:
  tokenizer_internal::StringMap<std::pair<uint32_t, uint32_t>> map_;
  std::vector<int32_t> ids_;
};

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(TokenizerConfig config) : config_(std::move(config)) {
    std::vector<AddedToken> raw, normalized;
    for (const AddedToken& t : config_.added_tokens) {
      // A normalized token is looked for in normalized text, so its content is normalized too.
      if (t.normalized && config_.nfc) {
        AddedToken n = t;
        auto nfc = tokenizer_internal::NfcNormalize(t.content);
        if (nfc.ok()) n.content = *std::move(nfc);
        normalized.push_back(std::move(n));
      } else if (t.normalized) {
        normalized.push_back(t);
      } else {
        raw.push_back(t);
      }
      added_by_content_.emplace(t.content, t.id);
    }
    raw_added_ = AddedTokenMatcher(std::move(raw));
    normalized_added_ = AddedTokenMatcher(std::move(normalized));

    const std::vector<std::string>& tokens = config_.model->tokens();
    int64_t size = static_cast<int64_t>(tokens.size());
    for (const AddedToken& t : config_.added_tokens) size = std::max<int64_t>(size, t.id + 1);
    id_bytes_.assign(static_cast<size_t>(size), std::string());
    id_valid_.assign(static_cast<size_t>(size), false);
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
    for (size_t id = 0; id < tokens.size(); ++id) {
      if (!config_.model->HasId(static_cast<int32_t>(id))) continue;
      auto bytes = alphabet.Decode(tokens[id]);
      id_bytes_[id] = bytes.has_value() ? *std::move(bytes) : tokens[id];
      id_valid_[id] = true;
    }
    for (const AddedToken& t : config_.added_tokens) {
      id_bytes_[t.id] = t.content;
      id_valid_[t.id] = true;
    }
    punctuation_ = tokenizer_internal::BuildPunctuationTable(id_bytes_);
  }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override {
    if (const auto bad = tokenizer_internal::FindInvalidUtf8(text); bad.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Encode: input is not valid UTF-8 at byte offset ", *bad, " (byte 0x",
                       absl::Hex(static_cast<uint8_t>(text[*bad]), absl::kZeroPad2), ")"));
    }
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 8);
    WordCache cache;
    std::vector<Segment> segments;
    raw_added_.Split(text, segments);
    for (const Segment& seg : segments) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      const std::string_view piece = text.substr(seg.begin, seg.end - seg.begin);
      if (!config_.nfc) {
        SF_RETURN_IF_ERROR(EncodeNormalized(piece, cache, ids));
        continue;
      }
      SF_ASSIGN_OR_RETURN(const std::string normalized, tokenizer_internal::NfcNormalize(piece));
      SF_RETURN_IF_ERROR(EncodeNormalized(normalized, cache, ids));
    }
    return ids;
  }

  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const override {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      const int32_t id = ids[i];
      if (id < 0 || static_cast<size_t>(id) >= id_bytes_.size() || !id_valid_[id]) {
        return absl::InvalidArgumentError(absl::StrCat("Decode: ids[", i, "] = ", id,
                                                       " is not a token id (vocab_size ",
                                                       id_bytes_.size(), ")"));
      }
      out.append(id_bytes_[id]);
    }
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_bytes_.size()); }

  std::optional<int32_t> TokenId(std::string_view token) const override {
    if (const auto it = added_by_content_.find(token); it != added_by_content_.end()) {
      return it->second;
    }
    return config_.model->TokenId(token);
  }

  const std::vector<uint8_t>& PunctuationTable() const override { return punctuation_; }

 private:
  // `text` is normalized: split off normalized added tokens, then pre-tokenize and merge.
  absl::Status EncodeNormalized(std::string_view text, WordCache& cache,
                                std::vector<int32_t>& ids) const {
    if (normalized_added_.empty()) return PreTokenizeAndMerge(text, cache, ids);
    std::vector<Segment> segments;
    normalized_added_.Split(text, segments);
    for (const Segment& seg : segments) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
      } else {
        SF_RETURN_IF_ERROR(
            PreTokenizeAndMerge(text.substr(seg.begin, seg.end - seg.begin), cache, ids));
      }
    }
    return absl::OkStatus();
  }

  absl::Status PreTokenizeAndMerge(std::string_view text, WordCache& cache,
                                   std::vector<int32_t>& ids) const {
    std::vector<std::string_view> pieces{text};
    std::vector<std::string_view> next;
    std::deque<std::string> prefixed;  // owns pieces that got a prefix space
    std::vector<std::pair<size_t, size_t>> ranges;
    for (const PreTokenizerStep& step : config_.pre_tokenizer) {
      next.clear();
      for (std::string_view p : pieces) {
        if (step.add_prefix_space && !p.starts_with(' ')) {
          prefixed.push_back(absl::StrCat(" ", absl::string_view(p.data(), p.size())));
          p = prefixed.back();
        }
        if (step.regex == nullptr) {
          next.push_back(p);
          continue;
        }
        ranges.clear();
        SF_RETURN_IF_ERROR(step.regex->SplitIsolated(p, ranges));
        for (const auto& [b, e] : ranges) next.push_back(p.substr(b, e - b));
      }
      pieces.swap(next);
    }
    for (const std::string_view p : pieces) cache.Encode(*config_.model, p, ids);
    return absl::OkStatus();
  }

  TokenizerConfig config_;
  AddedTokenMatcher raw_added_;
  AddedTokenMatcher normalized_added_;
  tokenizer_internal::StringMap<int32_t> added_by_content_;
  std::vector<std::string> id_bytes_;  // [vocab_size] decoded bytes of each id
  std::vector<bool> id_valid_;         // [vocab_size]
  std::vector<uint8_t> punctuation_;   // [vocab_size]
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text,
                                                               std::string_view name) {
  SF_ASSIGN_OR_RETURN(TokenizerConfig config, tokenizer_internal::ParseTokenizerJson(
                                                  json_text, name, ByteLevelAlphabet::Get()));
  return std::unique_ptr<Tokenizer>(new BpeTokenizer(std::move(config)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading tokenizer file ", path));
  return FromJson(buf.str(), path);
}

}  // namespace sparsefill::engine
