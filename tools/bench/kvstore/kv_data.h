// Synthetic KV of one prompt as the engine hands it to the store: fp32 K and V per layer,
// [tokens, kv_heads, head_dim]. One random draw serves every layer; each layer is stamped with
// its index (K of the first token of every block, dim 0 = layer + 1) so no two layers have the
// same bytes and a read of the wrong layer cannot pass a check.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/kvstore/layout.h"

namespace sparsefill::bench {

class SyntheticKv {
 public:
  // bf16 layouts only (the model dtype of the shapes benchmarked); InvalidArgument otherwise.
  static absl::StatusOr<SyntheticKv> Make(const kvstore::CacheLayout& layout, uint64_t seed);

  const kvstore::CacheLayout& layout() const { return layout_; }
  // Stamps `layer` into K (cheap: one element per block and head).
  void SetLayer(int32_t layer);
  int32_t layer() const { return layer_; }
  const float* k() const { return k_.data(); }  // [tokens, kv_heads, head_dim]
  const float* v() const { return v_.data(); }  // [tokens, kv_heads, head_dim]

  // The current layer's blocks as the store holds them, in key order (head, block), each block
  // K [block_tokens, head_dim] then V, bf16: the gather + conversion a store write must do.
  size_t layer_bytes() const { return layer_bytes_; }
  void ConvertLayer(std::span<uint8_t> out) const;  // out.size() == layer_bytes()
  // Byte offset of block (head, block) in a converted layer.
  size_t BlockOffset(int32_t head, int64_t block) const;
  // Rewrites the layer stamp of a converted layer in place (what ConvertLayer would give after
  // SetLayer(layer), without converting again).
  void StampConverted(std::span<uint8_t> image, int32_t layer) const;

 private:
  explicit SyntheticKv(const kvstore::CacheLayout& layout);
  kvstore::CacheLayout layout_;
  int32_t layer_ = 0;
  size_t layer_bytes_ = 0;
  std::vector<size_t> head_offsets_;  // [kv_heads]: first byte of each head's blocks
  std::vector<float> k_, v_;
};

}  // namespace sparsefill::bench
