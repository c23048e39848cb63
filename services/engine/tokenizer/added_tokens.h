// Added tokens (special or not) of a tokenizer.json, matched in the text before the model sees
// it, as tokenizers' AddedVocabulary does: leftmost-longest, non-overlapping, then the
// single_word / lstrip / rstrip rules.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sparsefill::engine::tokenizer_internal {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A run of text [begin, end) that is either plain text (id < 0) or one added token.
struct Segment {
  size_t begin;
  size_t end;
  int32_t id;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // Tokens with empty content never match (tokenizers skips them too).
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  bool empty() const { return tokens_.empty(); }
  // Splits valid UTF-8 `text` into segments covering it in order (no empty text segments).
  void Split(std::string_view text, std::vector<Segment>& out) const;

 private:
  std::vector<AddedToken> tokens_;
  // Token indices by first byte, longest content first.
  std::array<std::vector<uint32_t>, 256> by_first_byte_;
};

}  // namespace sparsefill::engine::tokenizer_internal
