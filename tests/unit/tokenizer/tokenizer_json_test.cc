// Small hand-made tokenizer.json files: each supported feature on its own, and malformed or
// unsupported files, which must give InvalidArgument naming the file and the field.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/engine/tokenizer/byte_level.h"
#include "sparsefill/engine/tokenizer.h"

namespace sparsefill::engine {
namespace {

using nlohmann::json;
using tokenizer_internal::ByteLevelAlphabet;

constexpr char kQwenPattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string B(char c) { return std::string(ByteLevelAlphabet::Get().CharFor(c)); }

// Byte b has id b; merged tokens follow from 256 in the order of `merges`.
json TinyTokenizer(bool pair_merges = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[B(static_cast<char>(b))] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {B(' '), "w"}, {"a", "a"}};
  json merge_list = json::array();
  int next_id = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = next_id++;
    if (pair_merges) {
      merge_list.push_back(json::array({a, b}));
    } else {
      merge_list.push_back(a + " " + b);
    }
  }
  vocab["abc"] = next_id++;  // reachable only through ignore_merges
  json t;
  t["version"] = "1.0";
  t["normalizer"] = {{"type", "NFC"}};
  t["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", json::array({{{"type", "Split"},
                                                        {"pattern", {{"Regex", kQwenPattern}}},
                                                        {"behavior", "Isolated"},
                                                        {"invert", false}},
                                                       {{"type", "ByteLevel"},
                                                        {"add_prefix_space", false},
                                                        {"trim_offsets", false},
                                                        {"use_regex", false}}})}};
  t["added_tokens"] = json::array();
  t["model"] = {{"type", "BPE"},          {"dropout", nullptr},     {"unk_token", nullptr},
                {"byte_fallback", false}, {"ignore_merges", false}, {"vocab", vocab},
                {"merges", merge_list}};
  return t;
}

std::unique_ptr<Tokenizer> Load(const json& j) {
  auto tok = Tokenizer::FromJson(j.dump(), "tiny.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

std::vector<int32_t> Enc(const Tokenizer& tok, std::string_view text) {
  auto ids = tok.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *std::move(ids) : std::vector<int32_t>();
}

using Ids = std::vector<int32_t>;

TEST(TokenizerJsonTest, MergesByRankInBothMergeForms) {
  for (const bool pair_form : {false, true}) {
    SCOPED_TRACE(pair_form ? "pair merges" : "string merges");
    const auto tok = Load(TinyTokenizer(pair_form));
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->vocab_size(), 256 + 6 + 1);
    EXPECT_EQ(Enc(*tok, "hello"), (Ids{259}));
    EXPECT_EQ(Enc(*tok, "hello world"), (Ids{259, 260, 'o', 'r', 'l', 'd'}));
    // Equal ranks merge leftmost first: "aaa" -> "aa" "a".
    EXPECT_EQ(Enc(*tok, "aaa"), (Ids{261, 'a'}));
    EXPECT_EQ(Enc(*tok, "aaaa"), (Ids{261, 261}));
    EXPECT_EQ(Enc(*tok, "abc"), (Ids{'a', 'b', 'c'}));
    EXPECT_EQ(*tok->Decode(Enc(*tok, "hello world")), "hello world");
    EXPECT_EQ(tok->TokenId("hell"), 258);
  }
}

TEST(TokenizerJsonTest, IgnoreMergesEmitsWholeVocabularyWords) {
  json j = TinyTokenizer();
  j["model"]["ignore_merges"] = true;
  const auto tok = Load(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(Enc(*tok, "abc"), (Ids{262}));
  EXPECT_EQ(Enc(*tok, "abcd"), (Ids{'a', 'b', 'c', 'd'}));
}

TEST(TokenizerJsonTest, LoneByteLevelUsesGpt2PatternAndPrefixSpace) {
  json j = TinyTokenizer();
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  const auto tok = Load(j);
  ASSERT_NE(tok, nullptr);
  // " hello" is one GPT-2 pre-token: Ġ h e l l o, and "he" cannot merge across the Ġ.
  EXPECT_EQ(Enc(*tok, "hello"), (Ids{' ', 259}));
  EXPECT_EQ(Enc(*tok, "hello world"), (Ids{' ', 259, 260, 'o', 'r', 'l', 'd'}));
}

TEST(TokenizerJsonTest, AddedTokensHonourStripAndSingleWord) {
  json j = TinyTokenizer();
  j["added_tokens"] = json::array(
      {{{"id", 300}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
       {{"id", 301},
        {"content", "<sep>"},
        {"lstrip", true},
        {"rstrip", true},
        {"special", true},
        {"normalized", false}},
       {{"id", 302}, {"content", "<w>"}, {"single_word", true}, {"normalized", false}},
       {{"id", 303}, {"content", "<sep>x"}, {"normalized", false}},
       {{"id", 304}, {"content", "\xc3\xa9"}, {"normalized", true}}});  // é, matched after NFC
  const auto tok = Load(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 305);
  EXPECT_EQ(Enc(*tok, "<s>hello"), (Ids{300, 259}));
  EXPECT_EQ(Enc(*tok, "a  <sep>  b"), (Ids{'a', 301, 'b'}));
  EXPECT_EQ(Enc(*tok, "<sep>xy"), (Ids{303, 'y'}));  // longest match wins
  EXPECT_EQ(Enc(*tok, "a <w> b"), (Ids{'a', ' ', 302, ' ', 'b'}));
  const Ids glued = Enc(*tok, "a<w>b");
  EXPECT_EQ(std::count(glued.begin(), glued.end(), 302), 0);
  EXPECT_EQ(Enc(*tok, "e\xcc\x81"), (Ids{304}));  // e + U+0301 is NFC é
  EXPECT_EQ(tok->TokenId("<sep>"), 301);
  EXPECT_EQ(*tok->Decode(Ids{300, 259, 301}), "<s>hello<sep>");
}

void ExpectInvalid(const std::string& text, const std::vector<std::string>& needles) {
  const auto tok = Tokenizer::FromJson(text, "bad.json");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
  const std::string msg(tok.status().message());
  EXPECT_NE(msg.find("bad.json"), std::string::npos) << msg;
  for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << msg;
}

TEST(TokenizerJsonTest, MalformedFilesNameTheProblem) {
  ExpectInvalid("{\"model\": {", {"not valid JSON"});
  ExpectInvalid("[1, 2]", {"JSON object"});
  {
    json j = TinyTokenizer();
    j.erase("model");
    ExpectInvalid(j.dump(), {"model", "missing"});
  }
  {
    json j = TinyTokenizer();
    j["model"]["type"] = "WordPiece";
    ExpectInvalid(j.dump(), {"model.type", "WordPiece"});
  }
  {
    json j = TinyTokenizer();
    j["model"]["merges"].push_back("h nosuchtoken");
    ExpectInvalid(j.dump(), {"model.merges[6]", "nosuchtoken", "not in the vocab"});
  }
  {
    json j = TinyTokenizer();
    j["model"]["merges"].push_back("x y");  // both known, "xy" is not
    ExpectInvalid(j.dump(), {"model.merges[6]", "'xy'"});
  }
  {
    json j = TinyTokenizer();
    j["model"]["merges"].push_back("h e l");
    ExpectInvalid(j.dump(), {"model.merges[6]"});
  }
  {
    json j = TinyTokenizer();
    j["model"].erase("vocab");
    ExpectInvalid(j.dump(), {"model.vocab", "missing"});
  }
  {
    json j = TinyTokenizer();
    j["model"]["vocab"]["h"] = -3;
    ExpectInvalid(j.dump(), {"model.vocab", "'h'"});
  }
  {
    json j = TinyTokenizer();
    j["model"]["vocab"]["zz"] = 5;
    ExpectInvalid(j.dump(), {"model.vocab", "id 5"});
  }
  {
    json j = TinyTokenizer();
    j["model"]["byte_fallback"] = true;
    ExpectInvalid(j.dump(), {"model.byte_fallback"});
  }
  {
    json j = TinyTokenizer();
    j["model"]["continuing_subword_prefix"] = "##";
    ExpectInvalid(j.dump(), {"model.continuing_subword_prefix"});
  }
  {
    json j = TinyTokenizer();
    j["normalizer"] = {{"type", "Lowercase"}};
    ExpectInvalid(j.dump(), {"normalizer.type", "Lowercase"});
  }
  {
    json j = TinyTokenizer();
    j["pre_tokenizer"] = {{"type", "Whitespace"}};
    ExpectInvalid(j.dump(), {"pre_tokenizer.type", "Whitespace"});
  }
  {
    json j = TinyTokenizer();
    j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
    ExpectInvalid(j.dump(), {"pre_tokenizer.pretokenizers[0].behavior", "Removed"});
  }
  {
    json j = TinyTokenizer();
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}";
    ExpectInvalid(j.dump(), {"pre_tokenizer.pretokenizers[0].pattern"});
  }
  {
    json j = TinyTokenizer();
    j["pre_tokenizer"] = j["pre_tokenizer"]["pretokenizers"][0];
    ExpectInvalid(j.dump(), {"pre_tokenizer", "ByteLevel"});
  }
  {
    json j = TinyTokenizer();
    j["added_tokens"] = json::array({{{"content", "<s>"}}});
    ExpectInvalid(j.dump(), {"added_tokens[0].id"});
  }
}

// Found by tests/fuzz/tokenizer_json_fuzzer: ids size dense tables, so an id near 2^31 used to
// allocate ~64 GiB and abort instead of being refused.
TEST(TokenizerJsonTest, HugeTokenIdsAreRefusedNotAllocated) {
  {
    json j = TinyTokenizer();
    j["model"]["vocab"]["zz"] = 2000000000;
    ExpectInvalid(j.dump(), {"model.vocab", "'zz'", "2000000000", "2^22"});
  }
  {
    json j = TinyTokenizer();
    j["added_tokens"] = json::array({{{"id", 2147483647}, {"content", "<s>"}}});
    ExpectInvalid(j.dump(), {"added_tokens[0].id", "2^22"});
  }
  {
    // The largest id allowed still loads.
    json j = TinyTokenizer();
    j["added_tokens"] = json::array({{{"id", (1 << 22) - 1}, {"content", "<s>"}}});
    const auto tok = Load(j);
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->vocab_size(), 1 << 22);
  }
}

// Found by tests/fuzz/tokenizer_json_fuzzer (Decode(Encode(x)) != x): two added tokens sharing an
// id loaded, and the first then decoded as the second's content.
TEST(TokenizerJsonTest, AddedTokensSharingAnIdAreRefused) {
  json j = TinyTokenizer();
  j["added_tokens"] = json::array({{{"id", 263}, {"content", "<|endoftext|>"}},
                                   {{"id", 264}, {"content", "<tool>"}},
                                   {{"id", 263}, {"content", "<think>"}}});
  ExpectInvalid(j.dump(), {"added_tokens[2].id", "263", "added_tokens[0]", "<|endoftext|>"});
  // Distinct ids still load, and each decodes to its own content.
  j["added_tokens"][2]["id"] = 265;
  const auto tok = Load(j);
  ASSERT_NE(tok, nullptr);
  for (const auto& [id, content] :
       std::vector<std::pair<int32_t, std::string>>{{263, "<|endoftext|>"}, {265, "<think>"}}) {
    const auto d = tok->Decode(std::vector<int32_t>{id});
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(*d, content);
  }
}

TEST(TokenizerJsonTest, MissingFileIsNotFound) {
  const auto tok = Tokenizer::FromFile("/nonexistent/sparsefill/tokenizer.json");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(tok.status().message()).find("/nonexistent/sparsefill/tokenizer.json"),
            std::string::npos);
}

}  // namespace
}  // namespace sparsefill::engine
