#include "services/engine/tokenizer/byte_level.h"

#include "services/engine/tokenizer/utf8.h"

namespace sparsefill::engine::tokenizer_internal {

ByteLevelAlphabet::ByteLevelAlphabet() {
  byte_of_cp_.fill(-1);
  // Printable Latin-1 bytes stand for themselves; the other 68 bytes are shifted to U+0100+ in
  // byte order, so that no token string holds a control character or a space.
  char32_t next_shifted = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const char32_t cp = printable ? static_cast<char32_t>(b) : next_shifted++;
    AppendUtf8(cp, encoded_[b]);
    byte_of_cp_[cp] = static_cast<int16_t>(b);
  }
}

const ByteLevelAlphabet& ByteLevelAlphabet::Get() {
  static const ByteLevelAlphabet* const alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

void ByteLevelAlphabet::Encode(std::string_view bytes, std::string& out) const {
  for (const char c : bytes) out.append(encoded_[static_cast<uint8_t>(c)]);
}

std::optional<std::string> ByteLevelAlphabet::Decode(std::string_view token) const {
  std::string out;
  out.reserve(token.size());
  size_t i = 0;
  while (i < token.size()) {
    if (ValidSequenceLength(token, i) == 0) return std::nullopt;
    const char32_t cp = NextCodepoint(token, i);
    if (cp >= byte_of_cp_.size() || byte_of_cp_[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(byte_of_cp_[cp]));
  }
  return out;
}

}  // namespace sparsefill::engine::tokenizer_internal
