// A string-keyed hash map searchable by std::string_view. Debian's Abseil hashes its own
// absl::string_view, not std::string_view, so the transparent hash and equality are ours.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"

namespace sparsefill::engine::tokenizer_internal {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct StringViewEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};

template <typename V>
using StringMap = absl::flat_hash_map<std::string, V, StringViewHash, StringViewEq>;

}  // namespace sparsefill::engine::tokenizer_internal
