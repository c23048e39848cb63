// Element types of checkpoints and KV caches, and their conversions to fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace sparsefill {

enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

constexpr size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }

// Names as safetensors writes them: "F32", "F16", "BF16".
std::string_view DTypeName(DType t);
// Accepts safetensors names ("F32", "F16", "BF16") and torch names ("float32", "float16",
// "bfloat16"); anything else is InvalidArgument naming the value.
absl::StatusOr<DType> ParseDType(std::string_view name);

inline float Bf16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

// Converts `n` elements of type `src_type` at `src` (any alignment) to fp32 at `dst`.
void ConvertToF32(const void* src, DType src_type, float* dst, size_t n);
// Converts `n` fp32 elements to `dst_type` (rounding to nearest even).
void ConvertFromF32(const float* src, DType dst_type, void* dst, size_t n);

}  // namespace sparsefill
