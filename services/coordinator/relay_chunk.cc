#include "services/coordinator/relay_chunk.h"

#include <string>
#include <vector>

#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/slice.h>

#include "absl/strings/str_cat.h"
#include "services/rpc/kv_chunk_frame.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {
namespace {

absl::Status Malformed(std::string_view what) {
  return absl::DataLossError(
      absl::StrCat("a KvChunk from the worker is malformed: ", AsAbsl(what)));
}

}  // namespace

absl::StatusOr<RelayChunk> ScanKvChunk(grpc::ByteBuffer wire) {
  RelayChunk out;
  out.wire = std::move(wire);
  grpc::ByteBuffer view(out.wire);  // shares the slices; the frame takes this one over
  rpc::KvChunkFrame frame;
  if (absl::Status s = frame.Parse(&view); !s.ok()) {
    return absl::DataLossError(absl::StrCat("from the worker: ", s.message()));
  }
  out.header = std::move(*frame.mutable_header());
  out.data_bytes = frame.data_size();
  return out;
}

RelayChunk RelayOf(const v1::KvChunk& chunk) {
  RelayChunk out;
  out.header = chunk;
  out.header.clear_data();
  out.data_bytes = chunk.data().size();
  grpc::Slice slice(chunk.SerializeAsString());
  out.wire = grpc::ByteBuffer(&slice, 1);
  return out;
}

absl::StatusOr<v1::KvChunk> ParseRelayed(const RelayChunk& chunk) {
  grpc::ByteBuffer view(chunk.wire);
  grpc::ProtoBufferReader reader(&view);
  v1::KvChunk out;
  if (!reader.status().ok() || !out.ParseFromZeroCopyStream(&reader)) {
    return Malformed("it does not parse");
  }
  return out;
}

}  // namespace sparsefill::coordinator
