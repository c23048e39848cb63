// A KvChunk read from the message gRPC received without protobuf's copy of its data (DESIGN §7:
// bulk bytes of >= 1 MiB per message). Parsing a KvChunk copies its data field (up to MiBs)
// out of the received slices into a freshly allocated string before a byte is checked; a frame
// instead parses only the small fields (with the standard protobuf parser, from a copy of their
// own bytes) and leaves the data where gRPC received it. The checksums are verified on those
// slices (VerifyKvChunkFrame), and the data is handed on as a view into its slice when it lies
// in one, or copied once into a buffer the frame reuses when it spans several.
//
// The wire format is KvChunk's own (a standard protobuf parser reads the same bytes), so frames
// read what any server sends: fields in any order, repeated fields packed or not, unknown fields,
// and a repeated data field (the last one counts, as in protobuf).
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include "absl/status/status.h"
#include "sparsefill/kvstore/layout.h"
#include "sparsefill/v1/common.pb.h"

namespace sparsefill::rpc {

class KvChunkFrame {
 public:
  // Takes over the message in `buffer` (left empty) and parses it. DATA_LOSS naming what is wrong
  // when the bytes are not a KvChunk (a truncated field, a bad tag or wire type, a varint longer
  // than 10 bytes, or small fields the protobuf parser refuses); the frame is then empty.
  absl::Status Parse(grpc::ByteBuffer* buffer);
  // The same for bytes already in memory (they must outlive the frame's use of them).
  absl::Status ParseBytes(std::string_view bytes);

  // Every field but data.
  const v1::KvChunk& header() const { return header_; }
  v1::KvChunk* mutable_header() { return &header_; }

  size_t data_size() const { return data_size_; }
  // The data field's bytes, in order, as they lie in the received slices.
  std::span<const std::string_view> data_pieces() const { return pieces_; }
  // The data as one contiguous view, valid until the next Parse or the frame's end: the received
  // slice itself when the data lies in one, else a copy in a buffer this frame keeps for reuse.
  std::string_view ContiguousData();

 private:
  absl::Status ParsePieces();
  void Clear();

  std::vector<grpc::Slice> slices_;        // the received message, owned
  std::vector<std::string_view> message_;  // views of slices_ (or of ParseBytes' bytes)
  v1::KvChunk header_;
  std::string header_bytes_;              // the small fields' wire bytes
  std::vector<std::string_view> pieces_;  // the data field, inside message_
  size_t data_size_ = 0;
  std::string scratch_;  // ContiguousData's copy; only grows
};

// VerifyKvChunk (services/rpc/kv_chunk.h) of a frame: the header's fields, and every block's
// xxh64 over the received slices.
absl::Status VerifyKvChunkFrame(const KvChunkFrame& frame, const kvstore::CacheId& cache,
                                const kvstore::CacheLayout& layout);

}  // namespace sparsefill::rpc
