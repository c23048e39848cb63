// UTF-8 helpers shared by the tokenizer stages: validation, code points, NFC, character classes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sparsefill::engine::tokenizer_internal {

// Byte offset of the first byte that does not start a well-formed UTF-8 sequence (the same rule
// as Rust's str: no overlongs, no surrogates, nothing above U+10FFFF), or nullopt when `s` is
// valid.
std::optional<size_t> FindInvalidUtf8(std::string_view s);

// Decodes the well-formed sequence at s[i] (the caller has validated `s`); advances `i`.
char32_t NextCodepoint(std::string_view s, size_t& i);

// Length in bytes of the well-formed sequence at s[i], or 0 when s[i..] does not start one.
size_t ValidSequenceLength(std::string_view s, size_t i);

void AppendUtf8(char32_t cp, std::string& out);

// Unicode NFC (utf8proc). `s` must be valid UTF-8.
absl::StatusOr<std::string> NfcNormalize(std::string_view s);

// True when every code point is below U+0300: such text is already NFC and no following code
// point can compose with it, so NFC can be skipped.
bool TriviallyNfc(std::string_view s);

// Unicode White_Space: what Oniguruma's \s and Rust's \s match (U+0009-U+000D, U+0020, U+0085,
// U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000).
bool IsWhiteSpace(char32_t cp);

// Rust regex's \w: letters, marks, decimal and letter numbers, connector punctuation and the
// zero-width joiners; what Hugging Face uses for single_word added tokens.
bool IsWordChar(char32_t cp);

}  // namespace sparsefill::engine::tokenizer_internal
