#include "services/engine/model/safetensors_format.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::model_internal {
namespace {

using Json = nlohmann::json;

absl::Status FileError(std::string_view path, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(AsAbsl(path), ": ", AsAbsl(what)));
}

absl::Status TensorError(std::string_view path, std::string_view tensor, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(AsAbsl(path), ": tensor \"", AsAbsl(tensor), "\": ", AsAbsl(what)));
}

std::string Shown(const Json& v) {
  std::string s = v.dump();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// A JSON number that is a non-negative integer, as uint64.
bool AsU64(const Json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    *out = static_cast<uint64_t>(x);
    return true;
  }
  return false;
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& name, const Json& v,
                                            std::string_view path) {
  if (!v.is_object()) return TensorError(path, name, "header entry is not an object");
  SafetensorsEntry e;
  e.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) {
    return TensorError(path, name, "missing \"dtype\" string");
  }
  auto dtype = ParseSafetensorsDType(dt->get<std::string>());
  if (!dtype.ok()) return TensorError(path, name, std::string(dtype.status().message()));
  e.dtype = *dtype;

  auto shape = v.find("shape");
  if (shape == v.end() || !shape->is_array()) {
    return TensorError(path, name, "missing \"shape\" list");
  }
  uint64_t numel = 1;
  for (const Json& d : *shape) {
    uint64_t x = 0;
    if (!AsU64(d, &x) || x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return TensorError(path, name,
                         absl::StrCat("shape ", Shown(*shape),
                                      " has an entry that is not a non-negative integer"));
    }
    if (__builtin_mul_overflow(numel, x, &numel) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return TensorError(path, name,
                         absl::StrCat("shape ", Shown(*shape), " has more elements than fit"));
    }
    e.shape.push_back(static_cast<int64_t>(x));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(DTypeSize(e.dtype)), &nbytes)) {
    return TensorError(path, name, absl::StrCat("shape ", Shown(*shape), " overflows in bytes"));
  }

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !AsU64((*off)[0], &e.begin) ||
      !AsU64((*off)[1], &e.end)) {
    return TensorError(path, name, "\"data_offsets\" must be [begin, end] (non-negative integers)");
  }
  if (e.end < e.begin) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets ", Shown(*off), " end before they begin"));
  }
  if (e.end - e.begin != nbytes) {
    return TensorError(
        path, name,
        absl::StrCat("data_offsets ", Shown(*off), " span ", e.end - e.begin, " bytes but shape ",
                     Shown(*shape), " of ", dt->get<std::string>(), " needs ", nbytes));
  }
  return e;
}

}  // namespace

absl::StatusOr<DType> ParseSafetensorsDType(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  static constexpr std::string_view kKnown[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "I16",
                                                "U16",  "I32", "U32", "F64",     "I64",     "U64"};
  const bool known = std::find(std::begin(kKnown), std::end(kKnown), name) != std::end(kKnown);
  return absl::InvalidArgumentError(absl::StrCat(known ? "unsupported" : "unknown", " dtype \"",
                                                 AsAbsl(name), "\" (supported: F32, F16, BF16)"));
}

absl::StatusOr<SafetensorsLayout> ParseSafetensors(const uint8_t* file, uint64_t size,
                                                   std::string_view path) {
  if (size < 8) {
    return FileError(
        path, absl::StrCat("truncated: ", size, " bytes, shorter than the 8-byte header length"));
  }
  SafetensorsLayout layout;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[i];  // little-endian on any host
  if (n > kMaxSafetensorsHeaderBytes) {
    return FileError(path, absl::StrCat("header length ", n, " is absurd (limit ",
                                        kMaxSafetensorsHeaderBytes, " bytes)"));
  }
  if (n > size - 8) {
    return FileError(path, absl::StrCat("truncated: header length says ", n, " bytes but only ",
                                        size - 8, " follow"));
  }
  layout.header_bytes = n;
  layout.data_offset = 8 + n;
  layout.data_bytes = size - layout.data_offset;

  const char* text = reinterpret_cast<const char*>(file + 8);
  const Json header = Json::parse(text, text + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return FileError(path, "header is not valid JSON");
  if (!header.is_object()) return FileError(path, "header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return FileError(path, "\"__metadata__\" is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return FileError(
              path, absl::StrCat("\"__metadata__\" entry \"", m.key(), "\" is not a string"));
        }
        layout.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    SF_ASSIGN_OR_RETURN(SafetensorsEntry e, ParseEntry(it.key(), *it, path));
    if (e.end > layout.data_bytes) {
      return TensorError(
          path, e.name,
          absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] reach beyond the data section (",
                       layout.data_bytes, " bytes; file truncated?)"));
    }
    layout.tensors.push_back(std::move(e));
  }

  // Overlaps: sorted by begin, every non-empty tensor must start at or after the previous end.
  std::vector<const SafetensorsEntry*> by_begin;
  for (const SafetensorsEntry& e : layout.tensors) {
    if (e.end > e.begin) by_begin.push_back(&e);
  }
  std::sort(by_begin.begin(), by_begin.end(), [](const auto* a, const auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    const SafetensorsEntry& prev = *by_begin[i - 1];
    const SafetensorsEntry& cur = *by_begin[i];
    if (cur.begin < prev.end) {
      return TensorError(
          path, cur.name,
          absl::StrCat("data_offsets [", cur.begin, ", ", cur.end, "] overlap tensor \"", prev.name,
                       "\" [", prev.begin, ", ", prev.end, "]"));
    }
  }
  return layout;
}

}  // namespace sparsefill::engine::model_internal
