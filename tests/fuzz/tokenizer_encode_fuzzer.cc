// Fuzzes text encoding with the real Qwen3 tokenizer (loaded once): the path every text prompt
// takes. The tokenizer.json comes from $SPARSEFILL_QWEN3_TOKENIZER, else
// <shared data>/qwen3-tokenizer/tokenizer.json with the shared data folder found as
// $SPARSEFILL_SHARED_DATA, ../shared/data from the working directory or from the source root.
//
// Invariants: invalid UTF-8 is InvalidArgument naming the byte offset of the first bad byte;
// valid text encodes to ids inside the vocabulary, Decode(Encode(x)) is canonically equivalent
// to x (== NFC(x) but at the edges of added tokens), and encoding
// the same text twice gives the same ids.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/engine/tokenizer/utf8.h"
#include "sparsefill/engine/tokenizer.h"
#include "tests/fuzz/fuzz_check.h"

namespace ti = sparsefill::engine::tokenizer_internal;
using sparsefill::engine::Tokenizer;

namespace {

std::string FindTokenizerJson() {
  if (const char* p = std::getenv("SPARSEFILL_QWEN3_TOKENIZER"); p != nullptr && *p != '\0') {
    return p;
  }
  std::vector<std::string> dirs;
  if (const char* d = std::getenv("SPARSEFILL_SHARED_DATA"); d != nullptr && *d != '\0') {
    dirs.push_back(d);
  }
  dirs.push_back("../shared/data");
  dirs.push_back(std::string(SPARSEFILL_SOURCE_DIR) + "/../shared/data");
  for (const std::string& d : dirs) {
    const std::string p = d + "/qwen3-tokenizer/tokenizer.json";
    std::error_code ec;
    if (std::filesystem::exists(p, ec)) return p;
  }
  return "";
}

const Tokenizer& Qwen3() {
  static const Tokenizer* tok = [] {
    const std::string path = FindTokenizerJson();
    if (path.empty()) {
      std::fprintf(stderr,
                   "tokenizer_encode_fuzzer: no Qwen3 tokenizer.json; set "
                   "SPARSEFILL_QWEN3_TOKENIZER or SPARSEFILL_SHARED_DATA\n");
      std::exit(2);
    }
    auto t = Tokenizer::FromFile(path);
    if (!t.ok()) {
      std::fprintf(stderr, "tokenizer_encode_fuzzer: %s\n",
                   std::string(t.status().message()).c_str());
      std::exit(2);
    }
    std::fprintf(stderr, "tokenizer_encode_fuzzer: loaded %s (vocab %lld)\n", path.c_str(),
                 static_cast<long long>((*t)->vocab_size()));
    return t->release();
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Qwen3();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& t = Qwen3();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto ids = t.Encode(text);
  if (const auto bad = ti::FindInvalidUtf8(text); bad.has_value()) {
    SF_FUZZ_CHECK(!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument,
                  "invalid UTF-8 at %zu was not refused", *bad);
    SF_FUZZ_CHECK(
        ids.status().message().find(absl::StrCat("offset ", *bad)) != std::string_view::npos,
        "error does not name offset %zu: %s", *bad, std::string(ids.status().message()).c_str());
    return 0;
  }
  SF_FUZZ_CHECK(ids.ok(), "Encode failed: %s", std::string(ids.status().message()).c_str());
  for (int32_t id : *ids) {
    SF_FUZZ_CHECK(id >= 0 && id < t.vocab_size(), "id %d outside the vocabulary", id);
  }
  auto decoded = t.Decode(*ids);
  SF_FUZZ_CHECK(decoded.ok(), "Decode failed: %s", std::string(decoded.status().message()).c_str());
  auto nfc = ti::NfcNormalize(text);
  SF_FUZZ_CHECK(nfc.ok(), "NFC failed: %s", std::string(nfc.status().message()).c_str());
  if (*decoded != *nfc) {
    // Added tokens are matched before normalizing, so NFC applies to the text between them: a
    // combining mark right after one ("<|im_end|>" U+0338) is not composed with it. The result
    // must still be canonically equivalent.
    auto renormalized = ti::NfcNormalize(*decoded);
    SF_FUZZ_CHECK(renormalized.ok() && *renormalized == *nfc,
                  "Decode(Encode(x)) is not canonically equivalent to x: %zu vs %zu bytes",
                  decoded->size(), nfc->size());
  }
  auto again = t.Encode(text);
  SF_FUZZ_CHECK(again.ok() && *again == *ids, "Encode is not deterministic");
  return 0;
}
