// Plain-old-data arrays <-> the byte payloads of ShardExchange::AllGather (host byte order: the
// ranks of one job run the same build on the same architecture).
#pragma once

#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace sparsefill::engine::cpu {

template <typename T>
std::string ToBytes(std::span<const T> values) {
  static_assert(std::is_trivially_copyable_v<T>);
  return std::string(reinterpret_cast<const char*>(values.data()), values.size_bytes());
}

// The payload as T values; DataLoss naming `what` and the rank when its size is not a multiple
// of sizeof(T) (or not `expect` values when expect >= 0).
template <typename T>
absl::StatusOr<std::vector<T>> FromBytes(std::string_view bytes, std::string_view what,
                                         int32_t rank, int64_t expect = -1) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (bytes.size() % sizeof(T) != 0 ||
      (expect >= 0 && bytes.size() != static_cast<size_t>(expect) * sizeof(T))) {
    return absl::DataLossError(absl::StrCat(
        std::string(what), " from rank ", rank, ": ", bytes.size(), " bytes, expected ",
        expect >= 0 ? absl::StrCat(expect, " values of ") : std::string("whole values of "),
        sizeof(T), " bytes"));
  }
  std::vector<T> out(bytes.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

}  // namespace sparsefill::engine::cpu
