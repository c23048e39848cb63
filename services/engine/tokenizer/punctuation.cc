#include "services/engine/tokenizer/punctuation.h"

#include <utf8proc.h>

#include "services/engine/tokenizer/utf8.h"

namespace sparsefill::engine::tokenizer_internal {
namespace {

bool IsAsciiPunctuationOrNewline(uint8_t b) {
  return b == '\n' || b == '\r' || (b >= 0x21 && b <= 0x2F) || (b >= 0x3A && b <= 0x40) ||
         (b >= 0x5B && b <= 0x60) || (b >= 0x7B && b <= 0x7E);
}

bool InCjkBlock(char32_t cp) {
  return (cp >= 0x2E80 && cp <= 0x9FFF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
         (cp >= 0xFE10 && cp <= 0xFE1F) || (cp >= 0xFE30 && cp <= 0xFE6F) ||
         (cp >= 0xFF00 && cp <= 0xFFEF) || (cp >= 0x20000 && cp <= 0x3FFFF);
}

bool IsCjkPunctuation(char32_t cp) {
  if (!InCjkBlock(cp)) return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

}  // namespace

bool IsPunctuationToken(std::string_view bytes) {
  for (const char c : bytes) {
    if (IsAsciiPunctuationOrNewline(static_cast<uint8_t>(c))) return true;
  }
  if (FindInvalidUtf8(bytes).has_value()) return false;
  size_t i = 0;
  while (i < bytes.size()) {
    if (IsCjkPunctuation(NextCodepoint(bytes, i))) return true;
  }
  return false;
}

std::vector<uint8_t> BuildPunctuationTable(const std::vector<std::string>& id_bytes) {
  std::vector<uint8_t> table(id_bytes.size(), 0);
  for (size_t id = 0; id < id_bytes.size(); ++id) {
    table[id] = IsPunctuationToken(id_bytes[id]) ? 1 : 0;
  }
  return table;
}

}  // namespace sparsefill::engine::tokenizer_internal
