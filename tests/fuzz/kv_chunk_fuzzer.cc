// Fuzzes what a decode node does with the KV chunks a stream hands it: rpc::VerifyKvChunk (the
// client library's check, services/rpc/kv_chunk.*) and the reference decode node's reassembly,
// tools/decode-sink/cache_assembler.* (which trusts nothing and checks again).
//
// Input: a small layout, then a stream of chunks.
//   byte 0: dtype (% 3: bf16, fp16, fp32); bytes 1-5: layers 1+%3, KV heads 1+%3, head_dim 1+%8,
//   block size 1+%16, tokens 1+byte (1..256); byte 6 bit 0: recompute every block's xxh64 from
//   the data (so mutations reach reassembly), bit 1: give each chunk the stream's cache id.
//   Then records: 2-byte little-endian length + a serialized sparsefill.v1.KvChunk.
// Invariants: the client library's reader (rpc::KvChunkFrame, which leaves the data where it was
// received) accepts a record exactly when protobuf parses it (but for groups, which no KvChunk
// has, and tags over 32 bits), reads the same fields and gets the same verdict; VerifyKvChunk
// accepts exactly the chunks a plain re-statement of the rules accepts (errors are DATA_LOSS); the
// assembler takes every verified chunk whose blocks are new, refuses repeats, never accepts a chunk
// VerifyKvChunk refuses, and places each block's K and V rows where the layout says; CheckComplete
// is OK exactly when every block came.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "google/protobuf/stubs/logging.h"
#include "services/rpc/convert.h"
#include "services/rpc/kv_chunk.h"
#include "services/rpc/kv_chunk_frame.h"
#include "sparsefill/client/types.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/kvstore/layout.h"
#include "tests/fuzz/fuzz_check.h"
#include "tools/decode-sink/cache_assembler.h"

namespace v1 = ::sparsefill::v1;
using sparsefill::DType;
using sparsefill::kvstore::CacheId;
using sparsefill::kvstore::CacheLayout;
using sparsefill::tools::CacheAssembler;

namespace {

constexpr CacheId kCache{0x0123456789abcdefull, 0xfedcba9876543210ull};

// The rules of VerifyKvChunk, written out again from DESIGN §6/§7.
bool ShouldVerify(const v1::KvChunk& c, const CacheLayout& l) {
  if (c.cache_id() != sparsefill::rpc::CacheIdToBytes(kCache)) return false;
  if (c.layer() < 0 || c.layer() >= l.num_layers || c.kv_head() < 0 || c.kv_head() >= l.kv_heads) {
    return false;
  }
  const int64_t total = l.num_blocks();
  if (c.num_blocks() <= 0 || c.first_block() < 0 || c.first_block() >= total ||
      c.num_blocks() > total - c.first_block()) {
    return false;
  }
  if (c.xxh64_size() != c.num_blocks()) return false;
  uint64_t bytes = 0;
  for (int64_t b = c.first_block(); b < c.first_block() + c.num_blocks(); ++b) {
    bytes += l.BlockBytes(b);
  }
  if (c.data().size() != bytes) return false;
  uint64_t off = 0;
  for (int i = 0; i < c.num_blocks(); ++i) {
    const uint64_t n = l.BlockBytes(c.first_block() + i);
    if (sparsefill::rpc::Xxh64(std::string_view(c.data()).substr(off, n)) != c.xxh64(i)) {
      return false;
    }
    off += n;
  }
  return true;
}

// The same conversion as the client library's stream reader.
sparsefill::client::KvChunk ToClient(const v1::KvChunk& p, const CacheId& id) {
  sparsefill::client::KvChunk c;
  c.cache = id;
  c.layer = p.layer();
  c.kv_head = p.kv_head();
  c.first_block = p.first_block();
  c.num_blocks = p.num_blocks();
  c.hot = p.hot();
  c.xxh64.assign(p.xxh64().begin(), p.xxh64().end());
  c.data = p.data();
  return c;
}

float Element(const char* p, DType t, size_t i) {
  switch (t) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      const uint32_t bits = uint32_t{h} << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return sparsefill::F16ToF32(h);
    }
  }
  return 0;
}

bool SameFloat(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// One record as the client's stream reader parses it, against protobuf's parse of it.
void CheckFrame(std::string_view bytes, bool parsed, const v1::KvChunk& chunk,
                const CacheLayout& l) {
  sparsefill::rpc::KvChunkFrame frame;
  const absl::Status s = frame.ParseBytes(bytes);
  if (!s.ok()) {
    SF_FUZZ_CHECK(s.code() == absl::StatusCode::kDataLoss, "frame code %d",
                  static_cast<int>(s.code()));
    // The frame is stricter in two ways only: groups, and tags over 32 bits (protobuf keeps
    // their low bits).
    SF_FUZZ_CHECK(!parsed || s.message().find("group") != std::string_view::npos ||
                      s.message().find("wider than 32 bits") != std::string_view::npos,
                  "protobuf parses what the frame refuses: %s", std::string(s.message()).c_str());
    return;
  }
  SF_FUZZ_CHECK(parsed, "the frame parses what protobuf refuses");
  v1::KvChunk got = frame.header();
  SF_FUZZ_CHECK(got.data().empty(), "the frame's header holds data");
  SF_FUZZ_CHECK(frame.data_size() == chunk.data().size(), "data of %zu bytes, protobuf %zu",
                frame.data_size(), chunk.data().size());
  got.set_data(std::string(frame.ContiguousData()));
  SF_FUZZ_CHECK(got.SerializeAsString() == chunk.SerializeAsString(),
                "the frame reads other fields than protobuf");
  const absl::Status mine = sparsefill::rpc::VerifyKvChunkFrame(frame, kCache, l);
  const absl::Status theirs = sparsefill::rpc::VerifyKvChunk(chunk, kCache, l);
  SF_FUZZ_CHECK(mine == theirs, "VerifyKvChunkFrame: %s, VerifyKvChunk: %s",
                std::string(mine.message()).c_str(), std::string(theirs.message()).c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Malformed UTF-8 in string fields is an expected parse failure, not worth a log line each.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 7) return 0;
  CacheLayout l;
  l.dtype = data[0] % 3 == 0 ? DType::kBF16 : data[0] % 3 == 1 ? DType::kF16 : DType::kF32;
  l.num_layers = 1 + data[1] % 3;
  l.kv_heads = 1 + data[2] % 3;
  l.head_dim = 1 + data[3] % 8;
  l.block_size = 1 + data[4] % 16;
  l.num_tokens = 1 + data[5];
  const bool fix_checksums = (data[6] & 1) != 0;
  const bool fix_cache_id = (data[6] & 2) != 0;
  auto created = CacheAssembler::Create(kCache, l);
  SF_FUZZ_CHECK(created.ok(), "valid layout refused: %s",
                std::string(created.status().message()).c_str());
  CacheAssembler assembler = *std::move(created);
  CacheAssembler raw = *CacheAssembler::Create(kCache, l);  // fed chunks nobody verified
  const int64_t blocks = l.num_blocks();
  std::vector<uint8_t> seen(static_cast<size_t>(l.total_blocks()), 0);
  std::vector<uint8_t> raw_seen(seen.size(), 0);

  size_t pos = 7;
  while (pos + 2 <= size) {
    const size_t n = data[pos] | (size_t{data[pos + 1]} << 8);
    pos += 2;
    if (n > size - pos) break;
    v1::KvChunk chunk;
    const bool parsed = chunk.ParseFromArray(data + pos, static_cast<int>(n));
    CheckFrame(std::string_view(reinterpret_cast<const char*>(data + pos), n), parsed, chunk, l);
    pos += n;
    if (!parsed) continue;
    if (fix_cache_id) chunk.set_cache_id(sparsefill::rpc::CacheIdToBytes(kCache));
    if (fix_checksums && chunk.first_block() >= 0 && chunk.first_block() < blocks &&
        chunk.num_blocks() > 0) {
      chunk.clear_xxh64();
      const std::string_view bytes = chunk.data();
      uint64_t off = 0;
      for (int64_t b = chunk.first_block();
           b < blocks && b - chunk.first_block() < chunk.num_blocks(); ++b) {
        const uint64_t len = l.BlockBytes(b);
        if (off + len > bytes.size()) break;
        chunk.add_xxh64(sparsefill::rpc::Xxh64(bytes.substr(off, len)));
        off += len;
      }
    }

    const absl::Status verified = sparsefill::rpc::VerifyKvChunk(chunk, kCache, l);
    const bool should = ShouldVerify(chunk, l);
    SF_FUZZ_CHECK(verified.ok() == should, "VerifyKvChunk says %s, the rules say %s",
                  verified.ok() ? "OK" : std::string(verified.message()).c_str(),
                  should ? "OK" : "refuse");
    if (!verified.ok()) {
      SF_FUZZ_CHECK(verified.code() == absl::StatusCode::kDataLoss, "code %d",
                    static_cast<int>(verified.code()));
    }

    // The assembler alone must never take what VerifyKvChunk refuses.
    auto id = sparsefill::rpc::CacheIdFromBytes(chunk.cache_id());
    if (id.ok()) {
      const absl::Status added_raw = raw.Add(ToClient(chunk, *id));
      if (added_raw.ok()) {
        SF_FUZZ_CHECK(should, "the assembler took a chunk VerifyKvChunk refuses");
        for (int32_t i = 0; i < chunk.num_blocks(); ++i) {
          uint8_t& s = raw_seen[l.Index(chunk.layer(), chunk.kv_head(), chunk.first_block() + i)];
          SF_FUZZ_CHECK(s == 0, "the assembler took a block twice");
          s = 1;
        }
      } else {
        SF_FUZZ_CHECK(added_raw.code() == absl::StatusCode::kDataLoss, "code %d",
                      static_cast<int>(added_raw.code()));
        // A repeat fails part way: the blocks before it were taken.
        if (should) {
          for (int32_t i = 0; i < chunk.num_blocks(); ++i) {
            uint8_t& s = raw_seen[l.Index(chunk.layer(), chunk.kv_head(), chunk.first_block() + i)];
            if (s != 0) break;
            s = 1;
          }
        }
      }
    }
    if (!verified.ok()) continue;

    bool repeat = false;
    for (int32_t i = 0; i < chunk.num_blocks(); ++i) {
      repeat = repeat || seen[l.Index(chunk.layer(), chunk.kv_head(), chunk.first_block() + i)];
    }
    const absl::Status added = assembler.Add(ToClient(chunk, kCache));
    SF_FUZZ_CHECK(added.ok() == !repeat, "Add: %s for a chunk %s repeats",
                  added.ok() ? "OK" : std::string(added.message()).c_str(),
                  repeat ? "that" : "that never");
    const size_t row = static_cast<size_t>(l.kv_heads) * l.head_dim;
    const char* p = chunk.data().data();
    for (int32_t i = 0; i < chunk.num_blocks(); ++i) {
      const int64_t b = chunk.first_block() + i;
      uint8_t& s = seen[l.Index(chunk.layer(), chunk.kv_head(), b)];
      if (s != 0) break;
      s = 1;
      const int64_t tokens = l.BlockTokens(b);
      const auto& dst = assembler.cache()[static_cast<size_t>(chunk.layer())];
      for (int64_t t = 0; t < tokens; ++t) {
        for (int32_t d = 0; d < l.head_dim; ++d) {
          const size_t at = static_cast<size_t>(b * l.block_size + t) * row +
                            static_cast<size_t>(chunk.kv_head()) * l.head_dim + d;
          const size_t k = static_cast<size_t>(t) * l.head_dim + d;
          const size_t v = static_cast<size_t>(tokens + t) * l.head_dim + d;
          SF_FUZZ_CHECK(SameFloat(dst.k[at], Element(p, l.dtype, k)) &&
                            SameFloat(dst.v[at], Element(p, l.dtype, v)),
                        "block %lld token %lld dim %d misplaced", (long long)b, (long long)t, d);
        }
      }
      p += l.BlockBytes(b);
    }
  }
  bool all = true;
  for (uint8_t s : seen) all = all && s != 0;
  const absl::Status complete = assembler.CheckComplete();
  SF_FUZZ_CHECK(complete.ok() == all, "CheckComplete %s with %s blocks received",
                complete.ok() ? "OK" : "failed", all ? "all" : "not all");
  return 0;
}
