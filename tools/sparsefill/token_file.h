// Reading prompts for the CLI: token-id files and raw text files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sparsefill::tools {

// A token file is either binary little-endian uint32 (name ending in ".u32") or text: integers
// separated by whitespace, commas or brackets (so a JSON array works). Anything else is
// InvalidArgument naming the file and the byte offset.
absl::StatusOr<std::vector<int32_t>> ReadTokenFile(const std::string& path);

// The file's bytes exactly (BOM and CRLF kept: the tokenizer sees what is on disk).
absl::StatusOr<std::string> ReadFileBytes(const std::string& path);

}  // namespace sparsefill::tools
