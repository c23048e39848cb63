// A KvChunk on its way through the coordinator (worker -> decode node). The coordinator checks
// where a chunk belongs (cache, layer, head, blocks, checksum count) and passes it on; the block
// bytes stay in the wire message they arrived in and leave in it, never parsed, copied or
// serialized again. Their xxh64s travel along for the decode node to verify (DESIGN §6).
#pragma once

#include <cstdint>

#include <grpcpp/support/byte_buffer.h>

#include "absl/status/statusor.h"
#include "sparsefill/v1/common.pb.h"

namespace sparsefill::coordinator {

struct RelayChunk {
  v1::KvChunk header;       // every field of the chunk but data (left empty)
  uint64_t data_bytes = 0;  // size of the data field
  grpc::ByteBuffer wire;    // the serialized KvChunk, header and data, as it arrived
};

// Reads the small fields of a serialized KvChunk and steps over its data without copying it.
// DataLoss when the bytes are not a well-formed KvChunk.
absl::StatusOr<RelayChunk> ScanKvChunk(grpc::ByteBuffer wire);
// The relay form of a parsed chunk (serialized once), for workers reached without wire access.
RelayChunk RelayOf(const v1::KvChunk& chunk);
// The whole chunk parsed, data included (for callers that want messages, e.g. tests).
absl::StatusOr<v1::KvChunk> ParseRelayed(const RelayChunk& chunk);

}  // namespace sparsefill::coordinator
