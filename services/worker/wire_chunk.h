// A KvChunk serialized for the wire without copying its block bytes: the small fields are
// serialized into one slice, and the data field's bytes become a second slice that owns the
// buffer the store read them into (given back to its pool when gRPC releases the slice). gRPC
// sends both slices as they are, so the block bytes are copied once on their way out of the
// worker (tier -> that buffer), not three times (into the chunk, into the message, into the
// serialized message).
#pragma once

#include <string>

#include <grpcpp/support/byte_buffer.h>

#include "services/worker/chunk_buffer.h"
#include "sparsefill/v1/common.pb.h"

namespace sparsefill::worker {

// `header` must have no data; `data` becomes its data field (moved into the returned buffer).
// The bytes parse as one KvChunk (fields may come in any order on the wire).
grpc::ByteBuffer WireKvChunk(const v1::KvChunk& header, ChunkBuffer&& data);

}  // namespace sparsefill::worker
