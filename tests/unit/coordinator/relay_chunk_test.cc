// The coordinator relays KvChunks without parsing their bytes: ScanKvChunk must read exactly the
// fields a full parse reads, from the worker's two-slice wire form and from protobuf's own
// serialization (any field order, split anywhere across slices), step over the data without
// losing it, and refuse bytes that are not a KvChunk.
#include "services/coordinator/relay_chunk.h"

#include <cstring>

#include <grpcpp/support/slice.h>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "services/worker/wire_chunk.h"
#include "sparsefill/common/rng.h"
#include "tests/testing/compare.h"

namespace sparsefill::coordinator {
namespace {

v1::KvChunk RandomChunk(Rng& rng) {
  v1::KvChunk c;
  std::string id(16, '\0');
  for (char& ch : id) ch = static_cast<char>(rng.NextU64());
  c.set_cache_id(id);
  c.set_layer(static_cast<int32_t>(rng.NextU64() % 64));
  c.set_kv_head(static_cast<int32_t>(rng.NextU64() % 16));
  c.set_first_block(static_cast<int64_t>(rng.NextU64() % (1ull << 40)));
  const int32_t blocks = 1 + static_cast<int32_t>(rng.NextU64() % 40);
  c.set_num_blocks(blocks);
  c.set_tier(rng.NextU64() % 2 ? v1::TIER_HOST : v1::TIER_DISK);
  c.set_hot(rng.NextU64() % 2 == 0);
  for (int32_t i = 0; i < blocks; ++i) c.add_xxh64(rng.NextU64());
  std::string data(static_cast<size_t>(1 + rng.NextU64() % (3 << 20)), '\0');
  for (size_t i = 0; i < data.size(); i += 8) data[i] = static_cast<char>(rng.NextU64());
  c.set_data(std::move(data));
  return c;
}

// The serialization split into slices of `piece` bytes (how a receiver may see it).
grpc::ByteBuffer Sliced(const std::string& bytes, size_t piece) {
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += piece) {
    slices.emplace_back(bytes.data() + at, std::min(piece, bytes.size() - at));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

void ExpectSameAsParse(const RelayChunk& got, const v1::KvChunk& want) {
  v1::KvChunk header = want;
  header.clear_data();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got.header, header))
      << got.header.ShortDebugString();
  EXPECT_EQ(got.data_bytes, want.data().size());
  auto parsed = ParseRelayed(got);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*parsed, want));
}

TEST(RelayChunkTest, ScanReadsWhatAParseReadsInEveryWireForm) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  auto pool = worker::ChunkBufferPool::Create({});
  for (int i = 0; i < 6; ++i) {
    const v1::KvChunk want = RandomChunk(rng);
    {
      SCOPED_TRACE("the worker's wire form (header slice + data slice)");
      v1::KvChunk header = want;
      header.clear_data();
      worker::ChunkBuffer data = pool->Take(want.data().size());
      std::memcpy(data.data(), want.data().data(), data.size());
      auto got = ScanKvChunk(worker::WireKvChunk(header, std::move(data)));
      ASSERT_TRUE(got.ok()) << got.status();
      ExpectSameAsParse(*got, want);
    }
    for (size_t piece : {size_t{1} << 20, size_t{4093}, size_t{7}}) {
      SCOPED_TRACE(::testing::Message()
                   << "protobuf's serialization in " << piece << "-byte slices");
      auto got = ScanKvChunk(Sliced(want.SerializeAsString(), piece));
      ASSERT_TRUE(got.ok()) << got.status();
      ExpectSameAsParse(*got, want);
    }
    const RelayChunk relay = RelayOf(want);
    ExpectSameAsParse(relay, want);
  }
}

TEST(RelayChunkTest, MalformedBytesAreDataLoss) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const std::string whole = RandomChunk(rng).SerializeAsString();
  // Cut inside the data field, inside a header field (after the 18 bytes of cache_id comes the
  // key of layer, not its value), and garbage.
  for (const std::string& bad :
       {whole.substr(0, whole.size() - 1), whole.substr(0, 19), std::string("\xff\xff\xff", 3),
        std::string("\x4a\xff\xff\xff\xff\x0f", 6)}) {
    auto got = ScanKvChunk(Sliced(bad, 1000));
    EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
  }
}

}  // namespace
}  // namespace sparsefill::coordinator
