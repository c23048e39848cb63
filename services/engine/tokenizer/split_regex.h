// The pre-tokenizer regex, compiled with PCRE2 so that it splits text exactly as Oniguruma does
// inside Hugging Face `tokenizers` (Split with behavior Isolated).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sparsefill::engine::tokenizer_internal {

// Rewrites an Oniguruma pattern for PCRE2 so that it matches what tokenizers' Oniguruma matches:
//  * \s and \S become explicit Unicode White_Space classes. Oniguruma's \s is White_Space (U+0085
//    included, U+180E and U+FEFF excluded); PCRE2's UCP \s is \p{Z}, \h and \v, which adds U+180E.
//  * \p{L}, \p{N}, \P{L}, \P{N} get the letters and numbers of Unicode 15.0-16.0 that PCRE2 10.42
//    (Unicode 14) does not know.
// Other syntax is shared by the patterns tokenizer.json files use. InvalidArgument for \S or \P{..}
// inside a character class (no simple PCRE2 equivalent).
absl::StatusOr<std::string> OnigurumaToPcre2(std::string_view pattern);

// Escapes `literal` so it matches itself (Split with {"String": ...}).
std::string QuotePcre2(std::string_view literal);

class SplitRegex {
 public:
  // `pcre2_pattern` is already in PCRE2 syntax. `what` names the field for error messages.
  static absl::StatusOr<std::unique_ptr<SplitRegex>> Compile(const std::string& pcre2_pattern,
                                                             std::string_view what);
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  // Splits `text` (valid UTF-8) into matches and the gaps between them, dropping empty pieces
  // (Isolated). Appends [begin, end) byte ranges relative to `text`. Thread-safe.
  absl::Status SplitIsolated(std::string_view text,
                             std::vector<std::pair<size_t, size_t>>& pieces) const;

 private:
  SplitRegex() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparsefill::engine::tokenizer_internal
