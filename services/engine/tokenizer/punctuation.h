// The per-token punctuation flag of DESIGN §4 (PHSA boundary branch). The exact rule is written
// at Tokenizer::PunctuationTable in sparsefill/engine/tokenizer.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sparsefill::engine::tokenizer_internal {

bool IsPunctuationToken(std::string_view bytes);

// [id_bytes.size()]: IsPunctuationToken of each id's decoded bytes.
std::vector<uint8_t> BuildPunctuationTable(const std::vector<std::string>& id_bytes);

}  // namespace sparsefill::engine::tokenizer_internal
