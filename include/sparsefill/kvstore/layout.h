// What a KV cache is made of (DESIGN §6): block = block_size tokens x one KV head x (K and V) x
// one layer, in the model's dtype. A cache is every block of every layer and head of one prompt.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/common/dtype.h"

namespace sparsefill::kvstore {

// 128-bit random cache id; printed as 32 lowercase hex digits.
struct CacheId {
  uint64_t hi = 0;
  uint64_t lo = 0;
  static CacheId Random();                                       // from the OS's entropy source
  static absl::StatusOr<CacheId> FromHex(std::string_view hex);  // InvalidArgument names it
  std::string ToHex() const;
  friend bool operator==(const CacheId&, const CacheId&) = default;
  friend auto operator<=>(const CacheId&, const CacheId&) = default;
};

struct CacheLayout {
  DType dtype = DType::kBF16;
  int32_t num_layers = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 0;  // tokens per block (the selection block size)
  int64_t num_tokens = 0;

  int64_t num_blocks() const { return (num_tokens + block_size - 1) / block_size; }
  // Tokens in block b (the last one may be partial).
  int64_t BlockTokens(int64_t b) const;
  // Bytes of block b: K [tokens, head_dim] then V [tokens, head_dim], dtype.
  size_t BlockBytes(int64_t b) const;
  // Index of (layer, head, block) in manifests: [num_layers, kv_heads, num_blocks].
  int64_t Index(int32_t layer, int32_t head, int64_t block) const {
    return (int64_t{layer} * kv_heads + head) * num_blocks() + block;
  }
  int64_t total_blocks() const { return int64_t{num_layers} * kv_heads * num_blocks(); }
  uint64_t total_bytes() const;
  // InvalidArgument naming the field for non-positive sizes.
  absl::Status Validate() const;
};

struct BlockKey {
  CacheId cache;
  int32_t layer = 0;
  int32_t head = 0;
  int64_t block = 0;
  std::string ToString() const;  // "cache <hex> layer L head H block B" (used in every error)
  friend bool operator==(const BlockKey&, const BlockKey&) = default;
};

// Where a block is served from. Lower is hotter.
enum class Tier : uint8_t { kDevice = 0, kHost = 1, kDisk = 2 };
std::string_view TierName(Tier t);  // "device", "host", "disk"

// xxh64 of a block's bytes (seed 0): the checksum carried in manifests and stream chunks.
uint64_t BlockChecksum(const void* data, size_t n);

}  // namespace sparsefill::kvstore
