// The safetensors layout: an 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/common/dtype.h"

namespace sparsefill::engine::model_internal {

// The safetensors reference implementation refuses larger headers too.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = uint64_t{100} << 20;

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

struct SafetensorsLayout {
  uint64_t header_bytes = 0;              // N
  uint64_t data_offset = 0;               // 8 + N: where the data section starts in the file
  uint64_t data_bytes = 0;                // file size - data_offset
  std::vector<SafetensorsEntry> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;
};

// Validates the whole layout against a file of `size` bytes starting at `file`: header length,
// JSON, dtypes (F32, F16, BF16 only), shapes, offsets inside the data section, sizes matching
// the shapes, no two tensors overlapping. Errors are InvalidArgument naming `path` and the
// tensor.
absl::StatusOr<SafetensorsLayout> ParseSafetensors(const uint8_t* file, uint64_t size,
                                                   std::string_view path);

// Safetensors' own dtype names; anything but F32 / F16 / BF16 is InvalidArgument.
absl::StatusOr<DType> ParseSafetensorsDType(std::string_view name);

}  // namespace sparsefill::engine::model_internal
