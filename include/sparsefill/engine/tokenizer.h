// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (Qwen2/Qwen3/Llama 3 style).
//
// Supported tokenizer.json contents (anything else is InvalidArgument naming the file and field):
//  * normalizer: null, NFC, or a Sequence of NFC.
//  * pre_tokenizer: Split (Regex or String pattern, behavior Isolated, invert false) stages
//    followed by ByteLevel (add_prefix_space, use_regex: then the GPT-2 pattern), possibly in a
//    Sequence; or a lone ByteLevel.
//  * model: BPE with vocab, merges ("a b" or ["a", "b"]), ignore_merges, unk_token/fuse_unk,
//    byte_fallback false, no dropout, empty continuing_subword_prefix / end_of_word_suffix.
//  * added_tokens: matched before the model, leftmost-longest, with single_word, lstrip, rstrip
//    and normalized (matched in NFC text) as tokenizers does.
//  * post_processor and decoder are not read: ids are those of add_special_tokens=false.
//
// The pre-tokenizer regex runs on PCRE2 and is rewritten so that it matches what tokenizers'
// Oniguruma matches (\s as Unicode White_Space, \p{L}/\p{N} of Unicode 16). Known divergence:
// NFC uses utf8proc's Unicode tables, which are newer than those of tokenizers' normalizer, so
// text holding combining marks that tokenizers does not know (e.g. U+1AC1-U+1ACE, Unicode 14)
// next to other marks can be reordered differently and get different ids.
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
  // InvalidArgument naming the file and the field for anything malformed or unsupported;
  // NotFound when the file cannot be opened.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // `name` (a path or a label) prefixes error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json_text,
                                                             std::string_view name);
  virtual ~Tokenizer() = default;

  // Ids equal to Hugging Face `tokenizers` Encode(text, add_special_tokens=false): added tokens
  // are matched first, the rest is normalised, pre-tokenised and BPE-merged. Invalid UTF-8 is
  // InvalidArgument naming the byte offset. Thread-safe (no shared mutable state).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const = 0;
  // Concatenated bytes of the tokens (added tokens as their content); ids out of range, or ids
  // that no token uses, are InvalidArgument naming the position. Decode(Encode(x)) == NFC(x).
  virtual absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const = 0;
  // One past the largest id (vocabulary and added tokens); 151669 for Qwen3's tokenizer.json
  // (a model's embedding table may have more rows).
  virtual int64_t vocab_size() const = 0;
  // Id of a token string as written in tokenizer.json: added-token content ("<|im_start|>") or a
  // byte-level vocabulary string ("Ġthe" for " the", "Ċ" for "\n"); nullopt when unknown.
  virtual std::optional<int32_t> TokenId(std::string_view token) const = 0;
  // [vocab_size]: 1 when the token counts as punctuation for PHSA (DESIGN §4), else 0. Computed
  // once at load from each id's decoded bytes. A token counts when its bytes contain:
  //  * an ASCII byte that is C-locale ispunct() (!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~) or '\n'/'\r';
  //  * or a code point of general category P* (utf8proc) inside a CJK block: U+2E80-U+9FFF
  //    (radicals, CJK Symbols and Punctuation, kana, Bopomofo, compatibility jamo, Kanbun,
  //    strokes, enclosed/compatibility CJK, ideographs), U+F900-U+FAFF, U+FE10-U+FE1F,
  //    U+FE30-U+FE6F, U+FF00-U+FFEF, U+20000-U+3FFFF. So "。" "、" "「" "！" "・" count;
  //    "　" (U+3000, Zs), "～" (U+FF5E, Sm) and non-CJK punctuation such as "—" or "“" do not.
  // Bytes that are not entirely well-formed UTF-8 (part of a multi-byte character) count only
  // through their ASCII bytes. Added tokens count by their content ("<|im_start|>" is 1); ids no
  // token uses are 0.
  virtual const std::vector<uint8_t>& PunctuationTable() const = 0;
};

}  // namespace sparsefill::engine
