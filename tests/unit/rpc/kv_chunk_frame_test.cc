// rpc::KvChunkFrame against the standard protobuf parser: the same fields from the same bytes,
// however gRPC cut them into slices, and malformed messages refused naming what is wrong.
#include "services/rpc/kv_chunk_frame.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include "services/rpc/convert.h"
#include "services/rpc/kv_chunk.h"
#include "sparsefill/common/rng.h"
#include "tests/testing/compare.h"

namespace sparsefill::rpc {
namespace {

// `bytes` cut at random places into 1..8 slices (some of them empty), as gRPC may hand them over.
grpc::ByteBuffer CutIntoSlices(const std::string& bytes, Rng& rng) {
  const size_t n = 1 + rng.NextU64() % 8;
  std::vector<size_t> cuts = {0, bytes.size()};
  for (size_t i = 1; i < n; ++i) cuts.push_back(rng.NextU64() % (bytes.size() + 1));
  std::sort(cuts.begin(), cuts.end());
  std::vector<grpc::Slice> slices;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    slices.emplace_back(bytes.data() + cuts[i], cuts[i + 1] - cuts[i]);
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

class KvChunkFrameTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testing::FreshSeed();
    rng_ = Rng(seed_);
    layout_.dtype = DType::kBF16;
    layout_.num_layers = 3;
    layout_.kv_heads = 2;
    layout_.head_dim = 16;
    layout_.block_size = 16;
    layout_.num_tokens = 16 * 9 + 5;  // the last block partial
    id_ = kvstore::CacheId{rng_.NextU64(), rng_.NextU64()};
  }

  // A chunk of random blocks at a random place, every optional field drawn at random.
  v1::KvChunk RandomChunk() {
    v1::KvChunk c;
    c.set_cache_id(CacheIdToBytes(id_));
    c.set_layer(static_cast<int32_t>(rng_.NextU64() % layout_.num_layers));
    c.set_kv_head(static_cast<int32_t>(rng_.NextU64() % layout_.kv_heads));
    const int64_t total = layout_.num_blocks();
    const int64_t first = static_cast<int64_t>(rng_.NextU64() % total);
    const int64_t n = 1 + static_cast<int64_t>(rng_.NextU64() % (total - first));
    c.set_first_block(first);
    for (int64_t b = first; b < first + n; ++b) {
      std::string bytes(LayoutBlockBytes(layout_, b), '\0');
      for (char& x : bytes) x = static_cast<char>(rng_.NextU64());
      AppendBlock(&c, bytes);
    }
    if (rng_.NextU64() % 2) c.set_tier(v1::TIER_DISK);
    if (rng_.NextU64() % 2) c.set_hot(true);
    return c;
  }

  // The frame parsed from `bytes` in random slices matches the standard parser's message.
  void ExpectSameAsProtobuf(const std::string& bytes) {
    v1::KvChunk want;
    ASSERT_TRUE(want.ParseFromString(bytes));
    grpc::ByteBuffer buffer = CutIntoSlices(bytes, rng_);
    KvChunkFrame frame;
    ASSERT_TRUE(frame.Parse(&buffer).ok());
    EXPECT_EQ(buffer.Length(), 0u) << "Parse takes the message over";
    EXPECT_EQ(frame.data_size(), want.data().size());
    EXPECT_EQ(std::string(frame.ContiguousData()), want.data());
    v1::KvChunk got = frame.header();
    EXPECT_TRUE(got.data().empty()) << "the header holds no data";
    got.set_data(want.data());
    EXPECT_EQ(got.SerializeAsString(), want.SerializeAsString());
  }

  uint64_t seed_ = 0;
  Rng rng_{0};
  kvstore::CacheLayout layout_;
  kvstore::CacheId id_;
};

TEST_F(KvChunkFrameTest, RoundTripsTheStandardParserInAnySlicing) {
  SCOPED_TRACE(seed_);
  for (int i = 0; i < 50; ++i) {
    ExpectSameAsProtobuf(RandomChunk().SerializeAsString());
  }
}

TEST_F(KvChunkFrameTest, FieldsInAnyOrderRepeatedDataAndUnknownFieldsAsProtobufReadsThem) {
  SCOPED_TRACE(seed_);
  const v1::KvChunk c = RandomChunk();
  v1::KvChunk data_only;
  data_only.set_data(c.data());
  v1::KvChunk header = c;
  header.clear_data();
  // Data first, the rest after it (protobuf merges concatenated messages).
  ExpectSameAsProtobuf(data_only.SerializeAsString() + header.SerializeAsString());
  // A data field that a later one replaces: the last one counts.
  v1::KvChunk stale;
  stale.set_data("replaced by the next data field");
  ExpectSameAsProtobuf(stale.SerializeAsString() + c.SerializeAsString());
  // An unknown field (number 100, varint) and a data field of the wrong wire type (unknown too).
  std::string unknown = {static_cast<char>(0xa0), 0x06, 0x2a, static_cast<char>(9 << 3), 0x07};
  ExpectSameAsProtobuf(unknown + c.SerializeAsString());
  // Checksums unpacked (one tag each), as older writers may send them.
  std::string unpacked;
  for (uint64_t x : c.xxh64()) {
    unpacked.push_back(static_cast<char>((8 << 3) | 1));
    unpacked.append(reinterpret_cast<const char*>(&x), 8);  // little-endian, as on the wire
  }
  v1::KvChunk no_sums = c;
  no_sums.clear_xxh64();
  ExpectSameAsProtobuf(no_sums.SerializeAsString() + unpacked);
  // A direct plan and no data.
  v1::KvChunk plan;
  v1::DirectShard* s = plan.mutable_direct_plan()->add_shards();
  s->set_address("10.0.0.7:7001");
  s->set_ticket(std::string(16, 'x'));
  s->set_end_block(10);
  ExpectSameAsProtobuf(plan.SerializeAsString());
}

TEST_F(KvChunkFrameTest, VerifiesChecksumsAcrossSlicesAndNamesTheDamagedBlock) {
  SCOPED_TRACE(seed_);
  for (int i = 0; i < 20; ++i) {
    const v1::KvChunk c = RandomChunk();
    const std::string bytes = c.SerializeAsString();
    grpc::ByteBuffer buffer = CutIntoSlices(bytes, rng_);
    KvChunkFrame frame;
    ASSERT_TRUE(frame.Parse(&buffer).ok());
    EXPECT_TRUE(VerifyKvChunkFrame(frame, id_, layout_).ok());

    // One byte of one block flipped, wherever the slices were cut.
    const size_t at = rng_.NextU64() % c.data().size();
    int64_t block = c.first_block();
    for (uint64_t end = LayoutBlockBytes(layout_, block); at >= end;
         end += LayoutBlockBytes(layout_, block)) {
      ++block;
    }
    v1::KvChunk bad = c;
    (*bad.mutable_data())[at] ^= static_cast<char>(1 + rng_.NextU64() % 255);
    grpc::ByteBuffer bad_buffer = CutIntoSlices(bad.SerializeAsString(), rng_);
    ASSERT_TRUE(frame.Parse(&bad_buffer).ok());
    const absl::Status s = VerifyKvChunkFrame(frame, id_, layout_);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(std::string(s.message()).find(absl::StrCat(" block ", block, " ")), std::string::npos)
        << "should name block " << block << ": " << s;
    // The same verdict as for the parsed message.
    EXPECT_EQ(VerifyKvChunk(bad, id_, layout_), s);
  }
}

TEST_F(KvChunkFrameTest, WrongSizesAndFieldsAreRefusedLikeVerifyKvChunk) {
  SCOPED_TRACE(seed_);
  const v1::KvChunk c = RandomChunk();
  auto verdicts = [&](const v1::KvChunk& m) {
    std::string bytes = m.SerializeAsString();
    grpc::ByteBuffer buffer = CutIntoSlices(bytes, rng_);
    KvChunkFrame frame;
    EXPECT_TRUE(frame.Parse(&buffer).ok());
    const absl::Status got = VerifyKvChunkFrame(frame, id_, layout_);
    EXPECT_EQ(got.code(), absl::StatusCode::kDataLoss) << got;
    EXPECT_EQ(got, VerifyKvChunk(m, id_, layout_));
  };
  v1::KvChunk m = c;
  m.mutable_data()->pop_back();
  verdicts(m);
  m = c;
  m.mutable_data()->push_back('x');
  verdicts(m);
  m = c;
  m.mutable_xxh64()->RemoveLast();
  verdicts(m);
  m = c;
  m.set_layer(layout_.num_layers);
  verdicts(m);
  m = c;
  m.set_cache_id(CacheIdToBytes(kvstore::CacheId{id_.hi + 1, id_.lo}));
  verdicts(m);
}

TEST_F(KvChunkFrameTest, DataInOneSliceIsAViewOfIt) {
  SCOPED_TRACE(seed_);
  const std::string bytes = RandomChunk().SerializeAsString();
  grpc::Slice slice(bytes.data(), bytes.size());
  const char* begin = reinterpret_cast<const char*>(slice.begin());
  grpc::ByteBuffer buffer(&slice, 1);
  KvChunkFrame frame;
  ASSERT_TRUE(frame.Parse(&buffer).ok());
  const std::string_view data = frame.ContiguousData();
  ASSERT_EQ(frame.data_pieces().size(), 1u);
  EXPECT_GE(data.data(), begin);
  EXPECT_LE(data.data() + data.size(), begin + bytes.size());
}

TEST_F(KvChunkFrameTest, MalformedMessagesAreDataLossSayingWhy) {
  SCOPED_TRACE(seed_);
  const std::string good = RandomChunk().SerializeAsString();
  auto expect_refused = [&](const std::string& bytes, std::string_view why) {
    KvChunkFrame frame;
    grpc::ByteBuffer buffer = CutIntoSlices(bytes, rng_);
    const absl::Status s = frame.Parse(&buffer);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << why << ": " << s;
    EXPECT_NE(std::string(s.message()).find(std::string(why)), std::string::npos)
        << "should say " << why << ": " << s;
    EXPECT_EQ(frame.data_size(), 0u);
    EXPECT_TRUE(frame.data_pieces().empty());
    v1::KvChunk standard;
    EXPECT_FALSE(standard.ParseFromString(bytes)) << "protobuf refuses it too: " << why;
  };
  // Cut inside the data field: it claims more bytes than the message has.
  expect_refused(good.substr(0, good.size() - 1), "more bytes than the message has");
  expect_refused(std::string(1, static_cast<char>(0x80)), "ends inside a varint");
  expect_refused(std::string(11, static_cast<char>(0xff)), "longer than 10 bytes");
  expect_refused(std::string(1, static_cast<char>(0x00)), "field number 0");
  expect_refused(std::string(1, static_cast<char>((5 << 3) | 3)), "is a group");
  expect_refused(std::string(1, static_cast<char>((5 << 3) | 6)), "wire type 6");
  // Fixed-size fields cut short.
  expect_refused(std::string(1, static_cast<char>((8 << 3) | 1)) + "1234", "more bytes");
  // A tag over 32 bits (protobuf's parser would keep its low bits; no writer makes one).
  {
    KvChunkFrame frame;
    const absl::Status s = frame.ParseBytes(std::string("\xff\xff\xff\xff\x7f\x01", 6));
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(std::string(s.message()).find("wider than 32 bits"), std::string::npos) << s;
  }
  // A direct plan whose address is not UTF-8: the small fields do not parse.
  v1::KvChunk plan;
  plan.mutable_direct_plan()->add_shards()->set_address("ok");
  std::string bad_utf8 = plan.SerializeAsString();
  const size_t at = bad_utf8.find("ok");
  ASSERT_NE(at, std::string::npos);
  bad_utf8[at] = static_cast<char>(0xff);
  expect_refused(bad_utf8, "do not parse as a KvChunk");
}

}  // namespace
}  // namespace sparsefill::rpc
