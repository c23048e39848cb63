// Building and checking KvChunk messages (DESIGN §6/§7): each block carries an xxh64 (seed 0,
// the same as kvstore::BlockChecksum) that the receiver verifies before using a byte.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "sparsefill/kvstore/layout.h"
#include "sparsefill/v1/common.pb.h"

namespace sparsefill::rpc {

// xxh64 with seed 0.
uint64_t Xxh64(std::string_view bytes);

// Bytes of block `block` of `layout` (K then V; the last block may be partial), computed here
// so that clients need not link the KV store.
uint64_t LayoutBlockBytes(const kvstore::CacheLayout& layout, int64_t block);

// Appends one block (K then V bytes) to `chunk`: data, its xxh64, num_blocks + 1.
void AppendBlock(::sparsefill::v1::KvChunk* chunk, std::string_view block_bytes);

// Checks a received chunk against the cache it should belong to: cache id, layer and head in
// range, blocks [first_block, first_block + num_blocks) inside the cache, one checksum per block,
// data exactly the blocks' bytes, and every block's xxh64. DATA_LOSS naming cache, layer, head
// and block when a checksum does not match or the chunk is malformed.
absl::Status VerifyKvChunk(const ::sparsefill::v1::KvChunk& chunk, const kvstore::CacheId& cache,
                           const kvstore::CacheLayout& layout);

// VerifyKvChunk for a chunk whose data is not in `header` (its data field is ignored) but in
// `data`: pieces that, one after the other, hold the data field's bytes (blocks may span pieces),
// e.g. the slices gRPC received it in (KvChunkFrame). The same checks and errors.
absl::Status VerifyKvChunkPieces(const ::sparsefill::v1::KvChunk& header,
                                 std::span<const std::string_view> data,
                                 const kvstore::CacheId& cache, const kvstore::CacheLayout& layout);

}  // namespace sparsefill::rpc
