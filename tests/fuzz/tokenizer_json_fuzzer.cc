// Fuzzes tokenizer.json parsing (Tokenizer::FromJson and its parts in
// services/engine/tokenizer/tokenizer_config.*) on small tokenizers, then encodes a text with
// what was loaded. The 11 MB Qwen3 file is tokenizer_encode_fuzzer's business.
//
// Input: the tokenizer.json text, optionally followed by a NUL byte and a text to encode.
// Invariants of a tokenizer that loads: the punctuation table covers the vocabulary, every
// added token's content maps back to its id, encoding valid UTF-8 succeeds with ids inside the
// vocabulary that all decode, and when the vocabulary holds every byte (so nothing can be
// dropped), no added token strips whitespace and no pre-tokenizer adds a prefix space,
// Decode(Encode(x)) == x (NFC(x) with an NFC normalizer).
#include <cstdint>
#include <string>
#include <string_view>

#include "services/engine/tokenizer/byte_level.h"
#include "services/engine/tokenizer/tokenizer_config.h"
#include "services/engine/tokenizer/utf8.h"
#include "sparsefill/engine/tokenizer.h"
#include "tests/fuzz/fuzz_check.h"

namespace ti = sparsefill::engine::tokenizer_internal;
using sparsefill::engine::Tokenizer;

namespace {

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);
  const std::string_view text = nul == std::string_view::npos
                                    ? std::string_view("Hello, world! 你好。")
                                    : input.substr(nul + 1);

  auto tok = Tokenizer::FromJson(json, "fuzz/tokenizer.json");
  if (!tok.ok()) {
    SF_FUZZ_CHECK(tok.status().code() == absl::StatusCode::kInvalidArgument, "code %d: %s",
                  static_cast<int>(tok.status().code()), Msg(tok.status()).c_str());
    SF_FUZZ_CHECK(Msg(tok.status()).starts_with("fuzz/tokenizer.json"),
                  "error does not name the file: %s", Msg(tok.status()).c_str());
    return 0;
  }
  const Tokenizer& t = **tok;
  const int64_t vocab = t.vocab_size();
  SF_FUZZ_CHECK(vocab >= 0, "vocab_size %lld", (long long)vocab);
  SF_FUZZ_CHECK(t.PunctuationTable().size() == static_cast<size_t>(vocab),
                "punctuation table %zu for vocab %lld", t.PunctuationTable().size(),
                (long long)vocab);

  // The parts, for the round-trip condition (the public object does not expose them).
  auto config = ti::ParseTokenizerJson(json, "again", ti::ByteLevelAlphabet::Get());
  SF_FUZZ_CHECK(config.ok(), "second parse failed: %s", Msg(config.status()).c_str());
  bool lossless = true;
  for (int b = 0; b < 256; ++b) {
    const auto id = config->model->TokenId(ti::ByteLevelAlphabet::Get().CharFor(b));
    lossless = lossless && id.has_value();
  }
  // ByteLevel's add_prefix_space puts a space before every piece that lacks one, and decoding
  // keeps it (as in tokenizers: " Hello" back for "Hello"), so such a round trip gains spaces.
  for (const ti::PreTokenizerStep& step : config->pre_tokenizer) {
    if (step.add_prefix_space) lossless = false;
  }
  for (const ti::AddedToken& a : config->added_tokens) {
    SF_FUZZ_CHECK(a.id >= 0 && a.id < vocab, "added token id %d outside %lld", a.id,
                  (long long)vocab);
    // An added token that strips whitespace drops it; one that shares an id with the vocabulary
    // decodes as its own content (as in tokenizers); content that NFC changes decodes unchanged.
    if (a.lstrip || a.rstrip || config->model->HasId(a.id) || a.content.empty()) lossless = false;
    if (config->nfc) {
      auto n = ti::NfcNormalize(a.content);
      if (!n.ok() || *n != a.content) lossless = false;
    }
  }

  auto ids = t.Encode(text);
  const bool valid_utf8 = !ti::FindInvalidUtf8(text).has_value();
  if (!valid_utf8) {
    SF_FUZZ_CHECK(!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument,
                  "invalid UTF-8 was not refused");
    return 0;
  }
  SF_FUZZ_CHECK(ids.ok(), "Encode of valid UTF-8 failed: %s", Msg(ids.status()).c_str());
  for (int32_t id : *ids)
    SF_FUZZ_CHECK(id >= 0 && id < vocab, "id %d outside %lld", id, (long long)vocab);
  auto decoded = t.Decode(*ids);
  SF_FUZZ_CHECK(decoded.ok(), "Decode of Encode's ids failed: %s", Msg(decoded.status()).c_str());
  if (lossless) {
    std::string want(text);
    if (config->nfc) {
      auto n = ti::NfcNormalize(text);
      SF_FUZZ_CHECK(n.ok(), "NFC failed: %s", Msg(n.status()).c_str());
      want = *n;
    }
    SF_FUZZ_CHECK(*decoded == want, "Decode(Encode(x)) != x: %zu vs %zu bytes", decoded->size(),
                  want.size());
  }
  return 0;
}
