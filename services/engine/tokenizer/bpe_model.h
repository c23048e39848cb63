// The BPE model of a byte-level tokenizer.json: vocabulary, ranked merges, and the merge loop of
// Hugging Face `tokenizers` (models/bpe/word.rs), reproduced step for step so ties and stale
// queue entries resolve identically.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "services/engine/tokenizer/byte_level.h"
#include "services/engine/tokenizer/string_map.h"

namespace sparsefill::engine::tokenizer_internal {

// Token ids index dense tables (one entry per id up to the largest), so a tokenizer.json naming
// a huge id must be refused, not allocated: 2^22 is far above any released vocabulary (Qwen3:
// 151669, Gemma: 262144).
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 22) - 1;

class BpeModel {
 public:
  // `model` is the tokenizer.json "model" object; `where` ("<file>: model") prefixes errors.
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& model, std::string_view where,
                                           const ByteLevelAlphabet& alphabet);

  // Appends the ids of one pre-token given as raw bytes (before the byte-level mapping).
  void EncodeWord(std::string_view bytes, std::vector<int32_t>& out) const;

  std::optional<int32_t> TokenId(std::string_view token) const;
  // Vocabulary token strings indexed by id ("" for ids the vocabulary does not use).
  const std::vector<std::string>& tokens() const { return tokens_; }
  // Whether `id` has a vocabulary entry.
  bool HasId(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < has_id_.size() && has_id_[id];
  }

 private:
  struct MergeTarget {
    uint32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const MergeTarget* FindMerge(int32_t a, int32_t b) const {
    const auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void MergeAll(std::vector<int32_t>& symbols) const;

  const ByteLevelAlphabet* alphabet_ = nullptr;
  StringMap<int32_t> vocab_;
  std::vector<std::string> tokens_;
  std::vector<bool> has_id_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;
  // Id of each byte's single-character token, or -1 (then dropped, or unk_id_).
  int32_t byte_id_[256];
  bool ignore_merges_ = false;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
};

}  // namespace sparsefill::engine::tokenizer_internal
