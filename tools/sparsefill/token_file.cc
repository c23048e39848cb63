#include "tools/sparsefill/token_file.h"

#include <cctype>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::tools {

absl::StatusOr<std::string> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return bytes;
}

absl::StatusOr<std::vector<int32_t>> ReadTokenFile(const std::string& path) {
  SF_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  std::vector<int32_t> ids;
  if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".u32") == 0) {
    if (bytes.size() % 4 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": binary token file has ", bytes.size(),
                       " bytes, not a multiple of 4 (little-endian uint32 ids)"));
    }
    ids.resize(bytes.size() / 4);
    for (size_t i = 0; i < ids.size(); ++i) {
      uint32_t v;
      std::memcpy(&v, bytes.data() + 4 * i, 4);
      if (v > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": token ", i, " has id ", v, ", over 2^31 - 1"));
      }
      ids[i] = static_cast<int32_t>(v);
    }
    return ids;
  }
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned char ch = static_cast<unsigned char>(bytes[i]);
    if (std::isspace(ch) || ch == ',' || ch == '[' || ch == ']') {
      ++i;
      continue;
    }
    if (!std::isdigit(ch)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": unexpected character '", std::string(1, bytes[i]),
                       "' at byte ", i, " (expected token ids: non-negative integers)"));
    }
    int64_t v = 0;
    const size_t start = i;
    while (i < bytes.size() && std::isdigit(static_cast<unsigned char>(bytes[i]))) {
      v = v * 10 + (bytes[i] - '0');
      if (v > std::numeric_limits<int32_t>::max()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": token id at byte ", start, " is over 2^31 - 1"));
      }
      ++i;
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

}  // namespace sparsefill::tools
