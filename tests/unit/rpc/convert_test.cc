#include "services/rpc/convert.h"

#include <gtest/gtest.h>

#include "services/rpc/kv_chunk.h"
#include "sparsefill/common/rng.h"
#include "tests/testing/compare.h"

namespace sparsefill::rpc {
namespace {

void ExpectInvalid(const absl::Status& s, std::string_view field) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find(std::string(field)), std::string::npos)
      << "message should name " << field << ": " << s;
}

TEST(Convert, DTypeRoundTripAndBadValues) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    auto back = DTypeFromProto(DTypeToProto(t));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, t);
  }
  ExpectInvalid(DTypeFromProto(v1::DTYPE_UNSPECIFIED, "layout.dtype").status(), "layout.dtype");
  ExpectInvalid(DTypeFromProto(77).status(), "dtype");
}

TEST(Convert, SparseConfigRoundTrip) {
  engine::SparseConfig c;
  c.present = true;
  c.kernel_size = 64;
  c.kernel_stride = 32;
  c.init_blocks = 3;
  c.block_size = 128;
  c.window_size = 4096;
  c.topk = 48;
  c.dense_len = 16384;
  const engine::SparseConfig back = SparseConfigFromProto(SparseConfigToProto(c));
  EXPECT_TRUE(back.present);
  EXPECT_EQ(back.kernel_size, 64);
  EXPECT_EQ(back.kernel_stride, 32);
  EXPECT_EQ(back.init_blocks, 3);
  EXPECT_EQ(back.block_size, 128);
  EXPECT_EQ(back.window_size, 4096);
  EXPECT_EQ(back.topk, 48);
  EXPECT_EQ(back.dense_len, 16384);
}

TEST(Convert, PolicyRoundTripUnspecifiedAndOutOfRange) {
  for (engine::Policy p : {engine::Policy::kDense, engine::Policy::kInfLlmV2, engine::Policy::kPhsa,
                           engine::Policy::kNosa}) {
    auto back = PolicyFromProto(PolicyToProto(p));
    ASSERT_TRUE(back.ok());
    ASSERT_TRUE(back->has_value());
    EXPECT_EQ(**back, p);
  }
  auto unspecified = PolicyFromProto(v1::POLICY_UNSPECIFIED);
  ASSERT_TRUE(unspecified.ok());
  EXPECT_FALSE(unspecified->has_value());
  ExpectInvalid(PolicyFromProto(5).status(), "selection.policy");
  ExpectInvalid(PolicyFromProto(-1).status(), "selection.policy");

  // Proto3 enums are open: an out-of-range value survives the wire and must be refused.
  v1::SelectionOverrides o;
  o.set_policy(static_cast<v1::Policy>(9));
  ExpectInvalid(ApplySelectionOverrides(o, engine::SelectionConfig::InfLlmV2()).status(),
                "selection.policy");
}

TEST(Convert, OverridesApplyOntoBaseAndOnlySetFieldsChange) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const engine::SelectionConfig base = engine::SelectionConfig::InfLlmV2();
  v1::SelectionOverrides o;
  // A valid top-k: at least the blocks the config always keeps (init + local window + own).
  const int32_t forced = base.init_blocks + static_cast<int32_t>(base.local_blocks()) + 1;
  const int32_t topk = forced + static_cast<int32_t>(rng.NextU64() % 32);
  o.set_topk(topk);
  o.set_dense_below(1 + static_cast<int64_t>(rng.NextU64() % 100000));
  auto c = ApplySelectionOverrides(o, base);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->topk, topk);
  EXPECT_EQ(c->dense_below, o.dense_below());
  EXPECT_EQ(c->policy, base.policy);
  EXPECT_EQ(c->block_size, base.block_size);
  EXPECT_EQ(c->kernel_size, base.kernel_size);
  EXPECT_EQ(c->local_tokens, base.local_tokens);

  // The fully resolved form round-trips exactly.
  const v1::SelectionOverrides all = SelectionToProto(*c);
  auto again = ApplySelectionOverrides(all, engine::SelectionConfig::Dense());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToString(), c->ToString());
}

TEST(Convert, OverrideThatBreaksTheConfigNamesTheField) {
  v1::SelectionOverrides o;
  o.set_topk(0);
  ExpectInvalid(ApplySelectionOverrides(o, engine::SelectionConfig::InfLlmV2()).status(),
                "selection.topk");
  v1::SelectionOverrides b;
  b.set_block_size(-16);
  ExpectInvalid(ApplySelectionOverrides(b, engine::SelectionConfig::Phsa()).status(),
                "selection.block_size");
  v1::SelectionOverrides l;
  l.set_init_blocks(-1);
  ExpectInvalid(ApplySelectionOverrides(l, engine::SelectionConfig::Phsa()).status(),
                "selection.init_blocks");
}

TEST(Convert, ResolveSelectionUsesTheModelsDefaultPolicy) {
  engine::ModelConfig plain;
  auto phsa = ResolveSelection(v1::SelectionOverrides(), plain);
  ASSERT_TRUE(phsa.ok()) << phsa.status();
  EXPECT_EQ(phsa->policy, engine::Policy::kPhsa);
  EXPECT_EQ(phsa->block_size, engine::SelectionConfig::Phsa().block_size);

  engine::ModelConfig minicpm;
  minicpm.sparse.present = true;
  minicpm.sparse.topk = 48;
  auto infllm = ResolveSelection(v1::SelectionOverrides(), minicpm);
  ASSERT_TRUE(infllm.ok()) << infllm.status();
  EXPECT_EQ(infllm->policy, engine::Policy::kInfLlmV2);
  EXPECT_EQ(infllm->topk, 48);

  v1::SelectionOverrides dense;
  dense.set_policy(v1::POLICY_DENSE);
  auto d = ResolveSelection(dense, minicpm);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->policy, engine::Policy::kDense);
}

TEST(Convert, CacheLayoutRoundTripAndBadFields) {
  kvstore::CacheLayout layout;
  layout.dtype = DType::kF16;
  layout.num_layers = 28;
  layout.kv_heads = 8;
  layout.head_dim = 128;
  layout.block_size = 64;
  layout.num_tokens = 32769;
  auto back = CacheLayoutFromProto(CacheLayoutToProto(layout));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->dtype, layout.dtype);
  EXPECT_EQ(back->num_layers, layout.num_layers);
  EXPECT_EQ(back->kv_heads, layout.kv_heads);
  EXPECT_EQ(back->head_dim, layout.head_dim);
  EXPECT_EQ(back->block_size, layout.block_size);
  EXPECT_EQ(back->num_tokens, layout.num_tokens);

  v1::CacheLayout bad = CacheLayoutToProto(layout);
  bad.set_kv_heads(0);
  ExpectInvalid(CacheLayoutFromProto(bad, "cache.layout").status(), "cache.layout.kv_heads");
  bad = CacheLayoutToProto(layout);
  bad.set_num_tokens(-5);
  ExpectInvalid(CacheLayoutFromProto(bad).status(), "layout.num_tokens");
  bad = CacheLayoutToProto(layout);
  bad.set_dtype(v1::DTYPE_UNSPECIFIED);
  ExpectInvalid(CacheLayoutFromProto(bad).status(), "layout.dtype");
}

TEST(Convert, CacheIdIsSixteenBigEndianBytes) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const kvstore::CacheId id{rng.NextU64(), rng.NextU64()};
  const std::string bytes = CacheIdToBytes(id);
  ASSERT_EQ(bytes.size(), 16u);
  auto back = CacheIdFromBytes(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, id);
  // The bytes in hex are the id's hex form.
  std::string hex;
  for (unsigned char c : bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    hex += kDigits[c >> 4];
    hex += kDigits[c & 15];
  }
  EXPECT_EQ(hex, CacheIdHex(id));

  ExpectInvalid(CacheIdFromBytes(bytes.substr(0, 15)).status(), "cache_id");
  ExpectInvalid(CacheIdFromBytes(bytes + "x", "admitted.cache_id").status(), "admitted.cache_id");
  ExpectInvalid(CacheIdFromBytes("").status(), "cache_id");
}

TEST(Convert, TierRoundTrip) {
  for (kvstore::Tier t : {kvstore::Tier::kDevice, kvstore::Tier::kHost, kvstore::Tier::kDisk}) {
    auto back = TierFromProto(TierToProto(t));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, t);
  }
  ExpectInvalid(TierFromProto(v1::TIER_UNSPECIFIED).status(), "tier");
  ExpectInvalid(TierFromProto(12).status(), "tier");
}

class KvChunkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testing::FreshSeed();
    Rng rng(seed_);
    layout_.dtype = DType::kBF16;
    layout_.num_layers = 2;
    layout_.kv_heads = 2;
    layout_.head_dim = 16;
    layout_.block_size = 16;
    layout_.num_tokens = 40;  // blocks of 16, 16, 8 tokens
    id_ = kvstore::CacheId{rng.NextU64(), rng.NextU64()};
    chunk_.set_cache_id(CacheIdToBytes(id_));
    chunk_.set_layer(1);
    chunk_.set_kv_head(1);
    chunk_.set_first_block(1);
    for (int64_t b = 1; b < 3; ++b) {
      std::string bytes(LayoutBlockBytes(layout_, b), '\0');
      for (char& c : bytes) c = static_cast<char>(rng.NextU64());
      AppendBlock(&chunk_, bytes);
    }
  }
  uint64_t seed_ = 0;
  kvstore::CacheLayout layout_;
  kvstore::CacheId id_;
  v1::KvChunk chunk_;
};

TEST_F(KvChunkTest, WellFormedChunkVerifies) {
  SCOPED_TRACE(seed_);
  EXPECT_EQ(chunk_.num_blocks(), 2);
  EXPECT_EQ(chunk_.data().size(), 2u * 16 * 16 * 2 + 2u * 8 * 16 * 2);  // last block partial
  EXPECT_TRUE(VerifyKvChunk(chunk_, id_, layout_).ok());
}

TEST_F(KvChunkTest, FlippedByteIsDataLossNamingTheBlock) {
  SCOPED_TRACE(seed_);
  (*chunk_.mutable_data())[chunk_.data().size() - 1] ^= 1;
  const absl::Status s = VerifyKvChunk(chunk_, id_, layout_);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(std::string(s.message()).find("layer 1 head 1 block 2"), std::string::npos) << s;
}

TEST_F(KvChunkTest, MalformedChunksAreDataLoss) {
  SCOPED_TRACE(seed_);
  auto expect_loss = [&](v1::KvChunk c, std::string_view what) {
    const absl::Status s = VerifyKvChunk(c, id_, layout_);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << what << ": " << s;
  };
  v1::KvChunk c = chunk_;
  c.set_layer(2);
  expect_loss(c, "layer out of range");
  c = chunk_;
  c.set_kv_head(-1);
  expect_loss(c, "negative head");
  c = chunk_;
  c.set_first_block(2);
  expect_loss(c, "range past the end");
  c = chunk_;
  c.mutable_xxh64()->RemoveLast();
  expect_loss(c, "missing checksum");
  c = chunk_;
  c.mutable_data()->pop_back();
  expect_loss(c, "short data");
  c = chunk_;
  c.set_cache_id(c.cache_id().substr(0, 15));
  expect_loss(c, "15-byte id");
  c = chunk_;
  c.set_cache_id(CacheIdToBytes(kvstore::CacheId{id_.hi, id_.lo ^ 1}));
  expect_loss(c, "other cache");
  c = chunk_;
  c.set_num_blocks(std::numeric_limits<int32_t>::max());
  expect_loss(c, "huge block count");
}

}  // namespace
}  // namespace sparsefill::rpc
