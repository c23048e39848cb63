#include "services/engine/tokenizer/split_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "services/engine/tokenizer/utf8.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::tokenizer_internal {
namespace {

// Unicode White_Space as the body of a PCRE2 character class.
constexpr std::string_view kWhiteSpaceClassBody =
    "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}"
    "\\x{205f}\\x{3000}";

// Letters and numbers of Unicode 15.0-16.0 that PCRE2 10.42 (Unicode 14) lacks and tokenizers'
// Oniguruma (Unicode 16.0, tokenizers 0.23.2) has: the differences of \p{L} and \p{N} over every
// code point, measured with tokenizers itself. Both sets only grew, so appending is enough; with a
// newer PCRE2 the ranges are redundant.
constexpr std::string_view kLetterAdditions =
    "\\x{1c89}-\\x{1c8a}\\x{a7cb}-\\x{a7cd}\\x{a7da}-\\x{a7dc}\\x{105c0}-\\x{105f3}"
    "\\x{10d4a}-\\x{10d65}\\x{10d6f}-\\x{10d85}\\x{10ec2}-\\x{10ec4}"
    "\\x{1123f}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138b}\\x{1138e}"
    "\\x{11390}-\\x{113b5}\\x{113b7}\\x{113d1}\\x{113d3}\\x{11bc0}-\\x{11be0}"
    "\\x{11f02}\\x{11f04}-\\x{11f10}\\x{11f12}-\\x{11f33}\\x{1342f}"
    "\\x{13441}-\\x{13446}\\x{13460}-\\x{143fa}\\x{16100}-\\x{1611d}"
    "\\x{16d40}-\\x{16d6c}\\x{18cff}\\x{1b132}\\x{1b155}\\x{1df25}-\\x{1df2a}"
    "\\x{1e030}-\\x{1e06d}\\x{1e4d0}-\\x{1e4eb}\\x{1e5d0}-\\x{1e5ed}\\x{1e5f0}"
    "\\x{2b739}\\x{2ebf0}-\\x{2ee5d}\\x{31350}-\\x{323af}";
constexpr std::string_view kNumberAdditions =
    "\\x{10d40}-\\x{10d49}\\x{116d0}-\\x{116e3}\\x{11bf0}-\\x{11bf9}"
    "\\x{11f50}-\\x{11f59}\\x{16130}-\\x{16139}\\x{16d70}-\\x{16d79}"
    "\\x{1ccf0}-\\x{1ccf9}\\x{1d2c0}-\\x{1d2d3}\\x{1e4f0}-\\x{1e4f9}"
    "\\x{1e5f1}-\\x{1e5fa}";

std::string Pcre2Error(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return absl::StrCat("code ", code);
  return std::string(reinterpret_cast<const char*>(buf));
}

}  // namespace

absl::StatusOr<std::string> OnigurumaToPcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  size_t class_start = 0;  // index just after '[' or '[^' of the open class
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\') {
      if (i + 1 >= pattern.size()) {
        return absl::InvalidArgumentError("regex ends with a lone backslash");
      }
      const char e = pattern[++i];
      if (e == 's') {
        if (in_class) {
          out.append(kWhiteSpaceClassBody);
        } else {
          out.append("[").append(kWhiteSpaceClassBody).append("]");
        }
      } else if (e == 'S') {
        if (in_class) {
          return absl::InvalidArgumentError(absl::StrCat(
              "regex uses \\S inside a character class at offset ", i - 1, " (unsupported)"));
        }
        out.append("[^").append(kWhiteSpaceClassBody).append("]");
      } else if ((e == 'p' || e == 'P') &&
                 (pattern.substr(i + 1, 3) == "{L}" || pattern.substr(i + 1, 3) == "{N}")) {
        const bool letter = pattern[i + 2] == 'L';
        const std::string_view prop = letter ? "\\p{L}" : "\\p{N}";
        const std::string_view additions = letter ? kLetterAdditions : kNumberAdditions;
        i += 3;
        if (e == 'p') {
          if (in_class) {
            out.append(prop).append(additions);
          } else {
            out.append("[").append(prop).append(additions).append("]");
          }
        } else {
          if (in_class) {
            return absl::InvalidArgumentError(
                absl::StrCat("regex uses \\P{...} inside a character class at offset ", i - 4,
                             " (unsupported)"));
          }
          out.append("[^").append(prop).append(additions).append("]");
        }
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      class_start = i + 1;
      continue;
    }
    // A ']' right after '[' or '[^' is a literal in both dialects.
    if (in_class && c == ']' && i != class_start) in_class = false;
    out.push_back(c);
  }
  if (in_class) return absl::InvalidArgumentError("regex has an unterminated character class");
  return out;
}

std::string QuotePcre2(std::string_view literal) {
  std::string out;
  for (const char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    const bool alnum = (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z');
    if (u < 0x80 && !alnum) {
      out.append(absl::StrCat("\\x{", absl::Hex(u), "}"));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

struct SplitRegex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Impl() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

SplitRegex::~SplitRegex() = default;

absl::StatusOr<std::unique_ptr<SplitRegex>> SplitRegex::Compile(const std::string& pcre2_pattern,
                                                                std::string_view what) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre2_pattern.data()), pcre2_pattern.size(),
                    PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        AsAbsl(what), ": regex does not compile at offset ", err_offset, ": ", Pcre2Error(err)));
  }
  std::unique_ptr<SplitRegex> re(new SplitRegex());
  re->impl_ = std::make_unique<Impl>();
  re->impl_->code = code;
  // Without JIT (e.g. an unsupported CPU) the interpreter gives the same matches, slower.
  re->impl_->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

absl::Status SplitRegex::SplitIsolated(std::string_view text,
                                       std::vector<std::pair<size_t, size_t>>& pieces) const {
  if (text.empty()) return absl::OkStatus();
  pcre2_code* code = impl_->code;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  if (md == nullptr) return absl::ResourceExhaustedError("pre-tokenizer regex: out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();

  // Mirrors the rust-onig find_iter that tokenizers uses: search from the end of the previous
  // match; an empty match right where the previous one ended is skipped by one character.
  size_t prev = 0;  // end of the last emitted piece
  size_t search_from = 0;
  bool have_last_end = false;
  size_t last_match_end = 0;
  while (search_from <= n) {
    uint32_t options = PCRE2_NO_UTF_CHECK;
    int rc = pcre2_match(code, subject, n, search_from, options, md.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // Long runs can exhaust JIT's small machine stack; the interpreter keeps its frames on the
      // heap.
      options |= PCRE2_NO_JIT;
      rc = pcre2_match(code, subject, n, search_from, options, md.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat("pre-tokenizer regex failed at byte ", search_from, ": ", Pcre2Error(rc)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t s = ov[0];
    const size_t e = ov[1];
    if (s == e && have_last_end && last_match_end == e) {
      if (search_from >= n) break;
      size_t next = search_from;
      NextCodepoint(text, next);
      search_from = next;
      continue;
    }
    search_from = e;
    have_last_end = true;
    last_match_end = e;
    if (prev < s) pieces.emplace_back(prev, s);
    if (s < e) pieces.emplace_back(s, e);
    prev = e;
  }
  if (prev < n) pieces.emplace_back(prev, n);
  return absl::OkStatus();
}

}  // namespace sparsefill::engine::tokenizer_internal
