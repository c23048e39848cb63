#include "services/rpc/kv_chunk.h"

#include <algorithm>

// XXH64_state_t as a complete type, for the streamed hash of a block that spans pieces.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "absl/strings/str_cat.h"
#include "services/rpc/convert.h"
#include "sparsefill/common/status.h"

namespace sparsefill::rpc {
namespace {

absl::Status Malformed(const kvstore::CacheId& cache, std::string_view why) {
  return absl::DataLossError(
      absl::StrCat("malformed KV chunk of cache ", CacheIdHex(cache), ": ", AsAbsl(why)));
}

}  // namespace

uint64_t Xxh64(std::string_view bytes) { return XXH64(bytes.data(), bytes.size(), 0); }

uint64_t LayoutBlockBytes(const kvstore::CacheLayout& layout, int64_t block) {
  const int64_t begin = block * layout.block_size;
  const int64_t tokens =
      std::max<int64_t>(0, std::min<int64_t>(layout.block_size, layout.num_tokens - begin));
  return 2ull * static_cast<uint64_t>(tokens) * static_cast<uint64_t>(layout.head_dim) *
         DTypeSize(layout.dtype);
}

void AppendBlock(v1::KvChunk* chunk, std::string_view block_bytes) {
  chunk->mutable_data()->append(block_bytes.data(), block_bytes.size());
  chunk->add_xxh64(Xxh64(block_bytes));
  chunk->set_num_blocks(chunk->num_blocks() + 1);
}

absl::Status VerifyKvChunk(const v1::KvChunk& chunk, const kvstore::CacheId& cache,
                           const kvstore::CacheLayout& layout) {
  const std::string_view data = chunk.data();
  return VerifyKvChunkPieces(chunk, std::span<const std::string_view>(&data, 1), cache, layout);
}

absl::Status VerifyKvChunkPieces(const v1::KvChunk& chunk, std::span<const std::string_view> data,
                                 const kvstore::CacheId& cache,
                                 const kvstore::CacheLayout& layout) {
  absl::StatusOr<kvstore::CacheId> id = CacheIdFromBytes(chunk.cache_id());
  if (!id.ok()) return Malformed(cache, std::string(id.status().message()));
  if (*id != cache) {
    return Malformed(cache, absl::StrCat("it belongs to cache ", CacheIdHex(*id)));
  }
  if (chunk.layer() < 0 || chunk.layer() >= layout.num_layers) {
    return Malformed(
        cache, absl::StrCat("layer ", chunk.layer(), " is outside [0, ", layout.num_layers, ")"));
  }
  if (chunk.kv_head() < 0 || chunk.kv_head() >= layout.kv_heads) {
    return Malformed(
        cache, absl::StrCat("kv_head ", chunk.kv_head(), " is outside [0, ", layout.kv_heads, ")"));
  }
  const int64_t total = layout.block_size > 0 ? layout.num_blocks() : 0;
  if (chunk.num_blocks() <= 0 || chunk.first_block() < 0 || chunk.first_block() > total ||
      chunk.num_blocks() > total - chunk.first_block()) {
    return Malformed(cache, absl::StrCat("blocks [", chunk.first_block(), ", +", chunk.num_blocks(),
                                         ") are outside the cache's ", total));
  }
  if (chunk.xxh64_size() != chunk.num_blocks()) {
    return Malformed(
        cache, absl::StrCat(chunk.xxh64_size(), " checksums for ", chunk.num_blocks(), " blocks"));
  }
  uint64_t expected_bytes = 0;
  for (int32_t i = 0; i < chunk.num_blocks(); ++i) {
    expected_bytes += LayoutBlockBytes(layout, chunk.first_block() + i);
  }
  uint64_t data_bytes = 0;
  for (std::string_view piece : data) data_bytes += piece.size();
  if (data_bytes != expected_bytes) {
    return Malformed(cache,
                     absl::StrCat(data_bytes, " data bytes, the blocks hold ", expected_bytes));
  }
  // Each block hashed where it lies: in one call when it sits inside one piece (the usual case),
  // else streamed across the pieces it spans.
  size_t piece = 0;
  std::string_view rest = data.empty() ? std::string_view() : data[0];
  XXH64_state_t state;
  for (int32_t i = 0; i < chunk.num_blocks(); ++i) {
    const int64_t block = chunk.first_block() + i;
    uint64_t n = LayoutBlockBytes(layout, block);
    while (rest.empty() && piece + 1 < data.size()) rest = data[++piece];
    uint64_t got;
    if (n <= rest.size()) {
      got = Xxh64(rest.substr(0, n));
      rest.remove_prefix(n);
    } else {
      XXH64_reset(&state, 0);
      while (n > 0) {
        while (rest.empty()) rest = data[++piece];  // the sizes add up: the pieces hold n more
        const size_t take = static_cast<size_t>(std::min<uint64_t>(n, rest.size()));
        XXH64_update(&state, rest.data(), take);
        rest.remove_prefix(take);
        n -= take;
      }
      got = XXH64_digest(&state);
    }
    if (got != chunk.xxh64(i)) {
      return absl::DataLossError(absl::StrCat("checksum mismatch: cache ", CacheIdHex(cache),
                                              " layer ", chunk.layer(), " head ", chunk.kv_head(),
                                              " block ", block, " (xxh64 ", absl::Hex(got),
                                              ", expected ", absl::Hex(chunk.xxh64(i)), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::rpc
