#include "services/worker/wire_chunk.h"

#include <cstdint>
#include <memory>

#include <grpcpp/support/slice.h>

namespace sparsefill::worker {
namespace {

// The data field's key: field 9 (KvChunk.data), wire type 2 (length-delimited).
constexpr uint8_t kDataKey = (9 << 3) | 2;

void AppendVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

}  // namespace

grpc::ByteBuffer WireKvChunk(const v1::KvChunk& header, ChunkBuffer&& data) {
  std::string head = header.SerializeAsString();
  head.push_back(static_cast<char>(kDataKey));
  AppendVarint(&head, data.size());
  if (data.empty()) {
    grpc::Slice only(head);
    return grpc::ByteBuffer(&only, 1);
  }
  auto* owned = new ChunkBuffer(std::move(data));
  grpc::Slice slices[2] = {grpc::Slice(head),
                           grpc::Slice(
                               owned->data(), owned->size(),
                               [](void* p) { delete static_cast<ChunkBuffer*>(p); }, owned)};
  return grpc::ByteBuffer(slices, 2);
}

}  // namespace sparsefill::worker
