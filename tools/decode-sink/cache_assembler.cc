#include "tools/decode-sink/cache_assembler.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/status.h"

namespace sparsefill::tools {

absl::StatusOr<CacheAssembler> CacheAssembler::Create(const kvstore::CacheId& id,
                                                      const kvstore::CacheLayout& layout) {
  SF_RETURN_IF_ERROR(layout.Validate());
  return CacheAssembler(id, layout);
}

CacheAssembler::CacheAssembler(const kvstore::CacheId& id, const kvstore::CacheLayout& layout)
    : id_(id), layout_(layout), start_(std::chrono::steady_clock::now()) {
  const size_t per_layer =
      static_cast<size_t>(layout.num_tokens) * layout.kv_heads * layout.head_dim;
  cache_.resize(static_cast<size_t>(layout.num_layers));
  for (engine::LayerKvBuffer& l : cache_) {
    l.k.assign(per_layer, 0.0f);
    l.v.assign(per_layer, 0.0f);
  }
  received_.assign(static_cast<size_t>(layout.total_blocks()), 0);
  scratch_.resize(2 * static_cast<size_t>(layout.block_size) * layout.head_dim);
  stats_.layer_first_chunk_s.assign(static_cast<size_t>(layout.num_layers), -1.0);
}

double CacheAssembler::Elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

absl::Status CacheAssembler::Add(const client::KvChunk& chunk) {
  const kvstore::CacheLayout& l = layout_;
  auto where = [&](int64_t block) {
    return kvstore::BlockKey{chunk.cache, chunk.layer, chunk.kv_head, block}.ToString();
  };
  // first_block > num_blocks() - num_blocks, not first_block + num_blocks > num_blocks(): the sum
  // overflows for a first_block near 2^63 and then let the chunk through (found by
  // tests/fuzz/kv_chunk_fuzzer).
  if (chunk.layer < 0 || chunk.layer >= l.num_layers || chunk.kv_head < 0 ||
      chunk.kv_head >= l.kv_heads || chunk.first_block < 0 || chunk.num_blocks <= 0 ||
      chunk.first_block > l.num_blocks() - chunk.num_blocks) {
    return absl::DataLossError(absl::StrCat("chunk at ", where(chunk.first_block), " with ",
                                            chunk.num_blocks, " blocks is outside the layout (",
                                            l.num_layers, " layers, ", l.kv_heads, " KV heads, ",
                                            l.num_blocks(), " blocks)"));
  }
  if (chunk.cache != id_) {
    return absl::DataLossError(
        absl::StrCat("chunk of cache ", chunk.cache.ToHex(), " in the stream of ", id_.ToHex()));
  }
  if (chunk.xxh64.size() != static_cast<size_t>(chunk.num_blocks)) {
    return absl::DataLossError(absl::StrCat("chunk at ", where(chunk.first_block), " has ",
                                            chunk.xxh64.size(), " checksums for ", chunk.num_blocks,
                                            " blocks"));
  }
  size_t expected = 0;
  for (int64_t b = chunk.first_block; b < chunk.first_block + chunk.num_blocks; ++b) {
    expected += l.BlockBytes(b);
  }
  if (chunk.data.size() != expected) {
    return absl::DataLossError(absl::StrCat("chunk at ", where(chunk.first_block), " holds ",
                                            chunk.data.size(), " bytes, the layout says ",
                                            expected));
  }

  const double now = Elapsed();
  if (stats_.first_chunk_s < 0) stats_.first_chunk_s = now;
  stats_.last_chunk_s = now;
  double& layer_first = stats_.layer_first_chunk_s[static_cast<size_t>(chunk.layer)];
  if (layer_first < 0) {
    layer_first = now;
    stats_.layer_order.push_back(chunk.layer);
  }
  if (chunk.hot) {
    stats_.last_hot_s = now;
  } else {
    if (stats_.first_cold_s < 0) stats_.first_cold_s = now;
    stats_.last_cold_s = now;
  }

  const size_t row = static_cast<size_t>(l.kv_heads) * l.head_dim;  // one token's K of a layer
  engine::LayerKvBuffer& dst = cache_[static_cast<size_t>(chunk.layer)];
  const char* p = chunk.data.data();
  for (int32_t i = 0; i < chunk.num_blocks; ++i) {
    const int64_t b = chunk.first_block + i;
    const size_t bytes = l.BlockBytes(b);
    const uint64_t sum = kvstore::BlockChecksum(p, bytes);
    if (sum != chunk.xxh64[static_cast<size_t>(i)]) {
      ++stats_.checksum_failures;
      return absl::DataLossError(absl::StrCat("checksum mismatch at ", where(b), ": xxh64 ", sum,
                                              ", the chunk says ",
                                              chunk.xxh64[static_cast<size_t>(i)]));
    }
    ++stats_.checksums_verified;
    uint8_t& seen = received_[static_cast<size_t>(l.Index(chunk.layer, chunk.kv_head, b))];
    if (seen != 0) return absl::DataLossError(absl::StrCat(where(b), " arrived twice"));
    seen = 1;

    const int64_t tokens = l.BlockTokens(b);
    const size_t n = static_cast<size_t>(tokens) * l.head_dim;
    ConvertToF32(p, l.dtype, scratch_.data(), 2 * n);  // K rows then V rows
    const int64_t t0 = b * l.block_size;
    for (int64_t t = 0; t < tokens; ++t) {
      const size_t off =
          static_cast<size_t>(t0 + t) * row + static_cast<size_t>(chunk.kv_head) * l.head_dim;
      std::memcpy(dst.k.data() + off, scratch_.data() + t * l.head_dim, sizeof(float) * l.head_dim);
      std::memcpy(dst.v.data() + off, scratch_.data() + n + t * l.head_dim,
                  sizeof(float) * l.head_dim);
    }
    p += bytes;
    ++stats_.blocks;
    if (chunk.hot) {
      ++stats_.hot_blocks;
      stats_.hot_bytes += bytes;
    } else {
      ++stats_.cold_blocks;
      stats_.cold_bytes += bytes;
    }
  }
  ++stats_.chunks;
  stats_.bytes += chunk.data.size();
  return absl::OkStatus();
}

absl::Status CacheAssembler::CheckComplete() const {
  const kvstore::CacheLayout& l = layout_;
  for (int32_t layer = 0; layer < l.num_layers; ++layer) {
    for (int32_t h = 0; h < l.kv_heads; ++h) {
      for (int64_t b = 0; b < l.num_blocks(); ++b) {
        if (received_[static_cast<size_t>(l.Index(layer, h, b))] == 0) {
          int64_t missing = 0;
          for (uint8_t r : received_) missing += r == 0;
          return absl::DataLossError(absl::StrCat(
              "the stream ended without ", missing, " of ", l.total_blocks(),
              " blocks; the first missing is ", kvstore::BlockKey{id_, layer, h, b}.ToString()));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::tools
