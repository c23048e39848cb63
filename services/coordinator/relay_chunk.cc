#include "services/coordinator/relay_chunk.h"

#include <string>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/slice.h>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {
namespace {

using google::protobuf::internal::WireFormatLite;
using WireType = WireFormatLite::WireType;

absl::Status Malformed(std::string_view what) {
  return absl::DataLossError(
      absl::StrCat("a KvChunk from the worker is malformed: ", AsAbsl(what)));
}

}  // namespace

absl::StatusOr<RelayChunk> ScanKvChunk(grpc::ByteBuffer wire) {
  RelayChunk out;
  out.wire = std::move(wire);
  grpc::ByteBuffer view(out.wire);  // shares the slices; the reader walks this one
  grpc::ProtoBufferReader reader(&view);
  if (!reader.status().ok()) return Malformed(reader.status().error_message());
  google::protobuf::io::CodedInputStream in(&reader);
  v1::KvChunk& h = out.header;
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) break;
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const WireType type = WireFormatLite::GetTagWireType(tag);
    uint64_t v = 0;
    auto varint = [&]() -> bool {
      return type == WireFormatLite::WIRETYPE_VARINT && in.ReadVarint64(&v);
    };
    bool ok = true;
    switch (field) {
      case 1: {  // cache_id
        uint32_t len = 0;
        std::string id;
        ok = type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED && in.ReadVarint32(&len) &&
             len <= 64 && in.ReadString(&id, static_cast<int>(len));
        h.set_cache_id(std::move(id));
        break;
      }
      case 2:
        ok = varint();
        h.set_layer(static_cast<int32_t>(v));
        break;
      case 3:
        ok = varint();
        h.set_kv_head(static_cast<int32_t>(v));
        break;
      case 4:
        ok = varint();
        h.set_first_block(static_cast<int64_t>(v));
        break;
      case 5:
        ok = varint();
        h.set_num_blocks(static_cast<int32_t>(v));
        break;
      case 6:
        ok = varint();
        h.set_tier(static_cast<v1::Tier>(static_cast<int32_t>(v)));
        break;
      case 7:
        ok = varint();
        h.set_hot(v != 0);
        break;
      case 8:  // xxh64: packed (the proto3 default) or one fixed64 per key
        if (type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
          uint32_t len = 0;
          ok = in.ReadVarint32(&len) && len % 8 == 0;
          for (uint32_t i = 0; ok && i < len / 8; ++i) {
            uint64_t x = 0;
            ok = in.ReadLittleEndian64(&x);
            h.add_xxh64(x);
          }
        } else {
          uint64_t x = 0;
          ok = type == WireFormatLite::WIRETYPE_FIXED64 && in.ReadLittleEndian64(&x);
          h.add_xxh64(x);
        }
        break;
      case 9: {  // data: stepped over, it stays in `wire`
        uint32_t len = 0;
        ok = type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED && in.ReadVarint32(&len) &&
             in.Skip(static_cast<int>(len));
        out.data_bytes = len;  // the last occurrence wins, as in a parse
        break;
      }
      default:
        ok = WireFormatLite::SkipField(&in, tag);
        break;
    }
    if (!ok) return Malformed(absl::StrCat("field ", field, " does not parse"));
  }
  if (!in.ConsumedEntireMessage()) return Malformed("it does not end where its fields do");
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
