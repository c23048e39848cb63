// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (Qwen2/Qwen3/Llama 3 style).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sparsefill::engine {

class Tokenizer {
 public:
  // InvalidArgument naming the file and the field for anything malformed or unsupported.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json_text,
                                                             std::string_view name);
  virtual ~Tokenizer() = default;

  // Ids equal to Hugging Face `tokenizers` Encode(text, add_special_tokens=false): added tokens
  // are matched first, the rest is normalised, pre-tokenised and BPE-merged. Invalid UTF-8 is
  // InvalidArgument naming the byte offset.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const = 0;
  // Concatenated bytes of the tokens (added tokens as their content); ids out of range are
  // InvalidArgument.
  virtual absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const = 0;
  // One past the largest id (vocabulary and added tokens).
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int32_t> TokenId(std::string_view token) const = 0;
  // [vocab_size]: 1 when the token's decoded text holds an ASCII or CJK punctuation character
  // or a newline (DESIGN §4, PHSA). Computed once at load.
  virtual const std::vector<uint8_t>& PunctuationTable() const = 0;
};

}  // namespace sparsefill::engine
