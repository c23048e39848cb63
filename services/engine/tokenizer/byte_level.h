// GPT-2's reversible byte <-> printable-character mapping (bytes_to_unicode), used by byte-level
// BPE vocabularies: every byte is one character in the vocabulary's token strings.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sparsefill::engine::tokenizer_internal {

class ByteLevelAlphabet {
 public:
  ByteLevelAlphabet();
  // The one immutable table (built on first use; thread-safe).
  static const ByteLevelAlphabet& Get();

  // UTF-8 of the character that stands for byte `b` (e.g. 0x20 -> "Ġ", 0x0A -> "Ċ").
  std::string_view CharFor(uint8_t b) const { return encoded_[b]; }
  // Appends the byte-level form of raw bytes.
  void Encode(std::string_view bytes, std::string& out) const;
  // Raw bytes of a byte-level token string, or nullopt when one of its characters is not in the
  // alphabet (Hugging Face's ByteLevel decoder then keeps the token's own UTF-8 bytes).
  std::optional<std::string> Decode(std::string_view token) const;

 private:
  std::array<std::string, 256> encoded_;
  // Code point (all below U+0144) -> byte, or -1.
  std::array<int16_t, 0x144> byte_of_cp_;
};

}  // namespace sparsefill::engine::tokenizer_internal
