// Reads the parts of a tokenizer.json that decide the ids: normalizer, pre_tokenizer,
// added_tokens and model. post_processor and decoder are not read: ids are those of
// Encode(add_special_tokens=false), and Decode returns raw bytes.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "services/engine/tokenizer/added_tokens.h"
#include "services/engine/tokenizer/bpe_model.h"
#include "services/engine/tokenizer/byte_level.h"
#include "services/engine/tokenizer/split_regex.h"

namespace sparsefill::engine::tokenizer_internal {

// One pre-tokenizer stage: Split(regex, Isolated), or the ByteLevel stage (which prepends a space
// when add_prefix_space and, with use_regex, splits by the GPT-2 pattern). ByteLevel comes last.
struct PreTokenizerStep {
  std::unique_ptr<SplitRegex> regex;  // null: no splitting in this stage
  bool add_prefix_space = false;
};

struct TokenizerConfig {
  bool nfc = false;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<AddedToken> added_tokens;
  std::unique_ptr<BpeModel> model;
};

// `name` (the file path, or a label) prefixes every error, followed by the JSON field.
absl::StatusOr<TokenizerConfig> ParseTokenizerJson(std::string_view json_text,
                                                   std::string_view name,
                                                   const ByteLevelAlphabet& alphabet);

}  // namespace sparsefill::engine::tokenizer_internal
