// The pre-tokenizer regex must split like Oniguruma inside Hugging Face tokenizers.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "services/engine/tokenizer/split_regex.h"

namespace sparsefill::engine::tokenizer_internal {
namespace {

std::vector<std::string> Split(std::string_view onig_pattern, std::string_view text) {
  auto pcre2 = OnigurumaToPcre2(onig_pattern);
  EXPECT_TRUE(pcre2.ok()) << pcre2.status();
  if (!pcre2.ok()) return {};
  auto re = SplitRegex::Compile(*pcre2, "test pattern");
  EXPECT_TRUE(re.ok()) << re.status();
  if (!re.ok()) return {};
  std::vector<std::pair<size_t, size_t>> ranges;
  const absl::Status st = (*re)->SplitIsolated(text, ranges);
  EXPECT_TRUE(st.ok()) << st;
  std::vector<std::string> out;
  for (const auto& [b, e] : ranges) out.emplace_back(text.substr(b, e - b));
  return out;
}

using Pieces = std::vector<std::string>;

TEST(SplitRegexTest, WhiteSpaceIsOnigurumasNotPcre2s) {
  // U+0085 (NEL) is \s in Oniguruma; U+180E and the BOM U+FEFF are not.
  EXPECT_EQ(Split(R"(\s+)", "a\xc2\x85 b"), (Pieces{"a", "\xc2\x85 ", "b"}));
  EXPECT_EQ(Split(R"(\s+)",
                  "a\xe1\xa0\x8e"
                  "b"),
            (Pieces{"a\xe1\xa0\x8e"
                    "b"}));
  EXPECT_EQ(Split(R"(\s+)", "\xef\xbb\xbfThe"), (Pieces{"\xef\xbb\xbfThe"}));
  EXPECT_EQ(Split(R"(\S+)", "x\xc2\xa0y\xe3\x80\x80z"),
            (Pieces{"x", "\xc2\xa0", "y", "\xe3\x80\x80", "z"}));
  EXPECT_EQ(Split(R"([^\s\p{L}]+)", "ab,\xc2\x85.!c"), (Pieces{"ab", ",", "\xc2\x85", ".!", "c"}));
}

TEST(SplitRegexTest, QwenPatternOnBomAndCrlf) {
  constexpr char kQwen[] =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  EXPECT_EQ(Split(kQwen, "\xef\xbb\xbfThe end.\r\n\r\nIt'S  12"),
            (Pieces{"\xef\xbb\xbfThe", " end", ".\r\n\r\n", "It", "'S", " ", " ", "1", "2"}));
}

TEST(SplitRegexTest, LettersAndNumbersFollowUnicode16) {
  // U+141E4 (Egyptian hieroglyph, Unicode 16.0) is a letter for tokenizers' Oniguruma, so ".m"
  // after it starts a new word (tokenizers gives "v\U000141E4" ".m"); U+1E4F0 (Nag Mundari
  // digit zero, 15.0) is a number.
  constexpr char kQwen[] =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  EXPECT_EQ(Split(kQwen, "v\xf0\x94\x87\xa4.m"), (Pieces{"v\xf0\x94\x87\xa4", ".m"}));
  EXPECT_EQ(Split(R"(\p{N})",
                  "a\xf0\x9e\x93\xb0"
                  "b"),
            (Pieces{"a", "\xf0\x9e\x93\xb0", "b"}));
  EXPECT_EQ(Split(R"(\P{L}+)", "x\xf0\x94\x87\xa4 y"), (Pieces{"x\xf0\x94\x87\xa4", " ", "y"}));
  EXPECT_FALSE(OnigurumaToPcre2(R"([\P{L}])").ok());
  // Llama 3 groups digits by three; the quantifier applies to the whole rewritten class.
  EXPECT_EQ(Split(R"(\p{N}{1,3})", "12345x"), (Pieces{"123", "45", "x"}));
}

TEST(SplitRegexTest, EmptyMatchesFollowOnigFindIter) {
  // An empty match right after a match is skipped; elsewhere it still ends the gap before it.
  EXPECT_EQ(Split("a*", "baab"), (Pieces{"b", "aa", "b"}));
  EXPECT_EQ(Split("x?", "yy"), (Pieces{"y", "y"}));
}

TEST(SplitRegexTest, TranslationKeepsOtherEscapes) {
  EXPECT_EQ(*OnigurumaToPcre2(R"(\\s\p{Lu}\pL)"), R"(\\s\p{Lu}\pL)");
  EXPECT_EQ(*OnigurumaToPcre2(R"([]\s])"),
            "[]\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}"
            "\\x{202f}\\x{205f}\\x{3000}]");
  const auto bad = OnigurumaToPcre2(R"([^\S])");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(OnigurumaToPcre2("[abc").ok());
}

TEST(SplitRegexTest, StringPatternsAreLiteral) {
  auto re = SplitRegex::Compile(QuotePcre2("a.b"), "literal");
  ASSERT_TRUE(re.ok()) << re.status();
  std::vector<std::pair<size_t, size_t>> ranges;
  ASSERT_TRUE((*re)->SplitIsolated("xa.bya_b", ranges).ok());
  EXPECT_EQ(ranges, (std::vector<std::pair<size_t, size_t>>{{0, 1}, {1, 4}, {4, 8}}));
}

}  // namespace
}  // namespace sparsefill::engine::tokenizer_internal
