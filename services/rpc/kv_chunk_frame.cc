#include "services/rpc/kv_chunk_frame.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "services/rpc/kv_chunk.h"
#include "sparsefill/common/status.h"

namespace sparsefill::rpc {
namespace {

// KvChunk.data: field 9, length-delimited.
constexpr uint32_t kDataField = 9;

enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

absl::Status Malformed(uint64_t at, std::string_view why) {
  return absl::DataLossError(
      absl::StrCat("malformed KvChunk message at byte ", at, ": ", AsAbsl(why)));
}

// Reads a message that lies in several pieces, front to back.
class Cursor {
 public:
  explicit Cursor(std::span<const std::string_view> pieces) : pieces_(pieces) { Settle(); }

  bool done() const { return piece_ == pieces_.size(); }
  uint64_t position() const { return position_; }

  // A varint of at most 10 bytes; its bytes are appended to `copy` when not null.
  absl::Status Varint(uint64_t* value, std::string* copy) {
    *value = 0;
    for (int i = 0; i < 10; ++i) {
      if (done()) return Malformed(position_, "the message ends inside a varint");
      const uint8_t b = static_cast<uint8_t>(pieces_[piece_][offset_]);
      if (copy != nullptr) copy->push_back(static_cast<char>(b));
      Advance(1);
      *value |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) return absl::OkStatus();
    }
    return Malformed(position_, "a varint longer than 10 bytes");
  }

  // Moves past `n` bytes: appended to `copy` when not null, else recorded as views in `views`
  // when not null.
  absl::Status Take(uint64_t n, std::string* copy, std::vector<std::string_view>* views) {
    const uint64_t start = position_;
    while (n > 0) {
      if (done()) {
        return Malformed(start, absl::StrCat("a field of ", n, " more bytes than the message has"));
      }
      const std::string_view here = pieces_[piece_].substr(offset_);
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n, here.size()));
      if (copy != nullptr) copy->append(here.data(), take);
      if (views != nullptr) views->push_back(here.substr(0, take));
      Advance(take);
      n -= take;
    }
    return absl::OkStatus();
  }

 private:
  void Advance(size_t n) {
    offset_ += n;
    position_ += n;
    Settle();
  }
  // Steps over finished and empty pieces.
  void Settle() {
    while (piece_ < pieces_.size() && offset_ == pieces_[piece_].size()) {
      ++piece_;
      offset_ = 0;
    }
  }

  std::span<const std::string_view> pieces_;
  size_t piece_ = 0;
  size_t offset_ = 0;
  uint64_t position_ = 0;
};

}  // namespace

void KvChunkFrame::Clear() {
  slices_.clear();
  message_.clear();
  header_.Clear();
  header_bytes_.clear();
  pieces_.clear();
  data_size_ = 0;
}

absl::Status KvChunkFrame::Parse(grpc::ByteBuffer* buffer) {
  Clear();
  const grpc::Status dumped = buffer->Dump(&slices_);
  buffer->Clear();
  if (!dumped.ok()) {
    Clear();
    return absl::DataLossError(
        absl::StrCat("reading a KvChunk message's slices: ", dumped.error_message()));
  }
  message_.reserve(slices_.size());
  for (const grpc::Slice& s : slices_) {
    message_.emplace_back(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return ParsePieces();
}

absl::Status KvChunkFrame::ParseBytes(std::string_view bytes) {
  Clear();
  message_.push_back(bytes);
  return ParsePieces();
}

absl::Status KvChunkFrame::ParsePieces() {
  Cursor in(message_);
  while (!in.done()) {
    const uint64_t at = in.position();
    const size_t header_mark = header_bytes_.size();
    uint64_t tag = 0;
    absl::Status s = in.Varint(&tag, &header_bytes_);
    const uint64_t field = tag >> 3;
    const uint32_t type = static_cast<uint32_t>(tag & 7);
    if (s.ok() && tag > 0xffffffffu) {
      // Protobuf's parser keeps the low 32 bits of such a tag; a writer never makes one.
      s = Malformed(at, absl::StrCat("a tag wider than 32 bits (", tag, ")"));
    } else if (s.ok() && field == 0) {
      s = Malformed(at, "field number 0");
    }
    if (s.ok() && field == kDataField && type == kLengthDelimited) {
      // The data stays where it is; a later data field replaces an earlier one.
      header_bytes_.resize(header_mark);
      pieces_.clear();
      uint64_t n = 0;
      s = in.Varint(&n, nullptr);
      if (s.ok()) s = in.Take(n, nullptr, &pieces_);
      if (s.ok()) data_size_ = static_cast<size_t>(n);
    } else if (s.ok()) {
      switch (type) {
        case kVarint: {
          uint64_t v = 0;
          s = in.Varint(&v, &header_bytes_);
          break;
        }
        case kFixed64:
          s = in.Take(8, &header_bytes_, nullptr);
          break;
        case kFixed32:
          s = in.Take(4, &header_bytes_, nullptr);
          break;
        case kLengthDelimited: {
          uint64_t n = 0;
          s = in.Varint(&n, &header_bytes_);
          if (s.ok()) s = in.Take(n, &header_bytes_, nullptr);
          break;
        }
        case kStartGroup:
        case kEndGroup:
          s = Malformed(at, absl::StrCat("field ", field, " is a group (KvChunk has none)"));
          break;
        default:
          s = Malformed(at, absl::StrCat("field ", field, " has wire type ", type));
      }
    }
    if (!s.ok()) {
      Clear();
      return s;
    }
  }
  if (!header_.ParseFromString(header_bytes_)) {
    Clear();
    return absl::DataLossError(
        "malformed KvChunk message: its fields other than data do not parse as a KvChunk");
  }
  return absl::OkStatus();
}

std::string_view KvChunkFrame::ContiguousData() {
  if (pieces_.empty()) return std::string_view();
  if (pieces_.size() == 1) return pieces_[0];
  // Grown, never shrunk: chunks have about the same size, so this allocates once per stream.
  if (scratch_.size() < data_size_) scratch_.resize(data_size_);
  size_t at = 0;
  for (std::string_view p : pieces_) {
    std::memcpy(scratch_.data() + at, p.data(), p.size());
    at += p.size();
  }
  return std::string_view(scratch_.data(), data_size_);
}

absl::Status VerifyKvChunkFrame(const KvChunkFrame& frame, const kvstore::CacheId& cache,
                                const kvstore::CacheLayout& layout) {
  return VerifyKvChunkPieces(frame.header(), frame.data_pieces(), cache, layout);
}

}  // namespace sparsefill::rpc
