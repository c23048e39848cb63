#include "tools/bench/kvstore/kv_data.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/common/status.h"

namespace sparsefill::bench {
namespace {

// Layer stamps must survive bf16 exactly: small integers do (up to 256).
float Stamp(int32_t layer) { return static_cast<float>(layer + 1); }

}  // namespace

SyntheticKv::SyntheticKv(const kvstore::CacheLayout& layout) : layout_(layout) {}

absl::StatusOr<SyntheticKv> SyntheticKv::Make(const kvstore::CacheLayout& layout, uint64_t seed) {
  SF_RETURN_IF_ERROR(layout.Validate());
  if (layout.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("SyntheticKv: bf16 layouts only, got ", AsAbsl(DTypeName(layout.dtype))));
  }
  if (layout.num_layers > 255) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SyntheticKv: at most 255 layers (bf16 layer stamps), got ", layout.num_layers));
  }
  SyntheticKv kv(layout);
  const size_t n = static_cast<size_t>(layout.num_tokens) * layout.kv_heads * layout.head_dim;
  kv.k_.resize(n);
  kv.v_.resize(n);
  // Uniform in [-2, 2): as incompressible in bf16 as real activations, and far cheaper to draw
  // than normals for a few hundred million values.
  Rng rng(seed);
  for (size_t i = 0; i < n; ++i) kv.k_[i] = 4.0f * rng.Uniform() - 2.0f;
  for (size_t i = 0; i < n; ++i) kv.v_[i] = 4.0f * rng.Uniform() - 2.0f;
  kv.head_offsets_.resize(layout.kv_heads);
  size_t off = 0;
  for (int32_t h = 0; h < layout.kv_heads; ++h) {
    kv.head_offsets_[h] = off;
    for (int64_t b = 0; b < layout.num_blocks(); ++b) off += layout.BlockBytes(b);
  }
  kv.layer_bytes_ = off;
  kv.SetLayer(0);
  return kv;
}

void SyntheticKv::SetLayer(int32_t layer) {
  layer_ = layer;
  const size_t row = static_cast<size_t>(layout_.kv_heads) * layout_.head_dim;
  for (int64_t b = 0; b < layout_.num_blocks(); ++b) {
    const size_t t = static_cast<size_t>(b) * layout_.block_size;
    for (int32_t h = 0; h < layout_.kv_heads; ++h) {
      k_[t * row + static_cast<size_t>(h) * layout_.head_dim] = Stamp(layer);
    }
  }
}

size_t SyntheticKv::BlockOffset(int32_t head, int64_t block) const {
  // Every block but the last is full, so the offset inside a head is a product.
  return head_offsets_[head] + static_cast<size_t>(block) * layout_.BlockBytes(0);
}

void SyntheticKv::ConvertLayer(std::span<uint8_t> out) const {
  const size_t dim = static_cast<size_t>(layout_.head_dim);
  const size_t row = static_cast<size_t>(layout_.kv_heads) * dim;
  const size_t esize = DTypeSize(layout_.dtype);
  for (int32_t h = 0; h < layout_.kv_heads; ++h) {
    for (int64_t b = 0; b < layout_.num_blocks(); ++b) {
      const size_t tokens = static_cast<size_t>(layout_.BlockTokens(b));
      const size_t t0 = static_cast<size_t>(b) * layout_.block_size;
      uint8_t* dst = out.data() + BlockOffset(h, b);
      for (size_t t = 0; t < tokens; ++t) {
        ConvertFromF32(k_.data() + (t0 + t) * row + h * dim, layout_.dtype, dst + t * dim * esize,
                       dim);
      }
      dst += tokens * dim * esize;
      for (size_t t = 0; t < tokens; ++t) {
        ConvertFromF32(v_.data() + (t0 + t) * row + h * dim, layout_.dtype, dst + t * dim * esize,
                       dim);
      }
    }
  }
}

void SyntheticKv::StampConverted(std::span<uint8_t> image, int32_t layer) const {
  const uint16_t stamp = F32ToBf16(Stamp(layer));
  for (int32_t h = 0; h < layout_.kv_heads; ++h) {
    for (int64_t b = 0; b < layout_.num_blocks(); ++b) {
      std::memcpy(image.data() + BlockOffset(h, b), &stamp, sizeof(stamp));
    }
  }
}

}  // namespace sparsefill::bench
