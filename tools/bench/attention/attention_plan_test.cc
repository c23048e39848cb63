// TileUnion, the pair counts and the default configurations of `bench attention`, on handmade
// lists and on random lists checked against a brute-force count.
#include "tools/bench/attention/attention_plan.h"

#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "tests/testing/compare.h"

namespace sparsefill::bench {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(TileUnion, UnionPerHeadAndTileSortedAndCoarsened) {
  // 2 KV heads, 4 queries at positions 60..63 (block 16: own block 3), 3 entries each.
  const std::vector<int32_t> lists = {
      0, 3, -1, /**/ 1, 3, -1, /**/ 0, 2,  3,  /**/ 3, -1, -1,  // head 0
      2, 3, -1, /**/ 0, 3, -1, /**/ 3, -1, -1, /**/ 1, 3,  -1,  // head 1
  };
  absl::StatusOr<TileBlocks> t = TileUnion(lists.data(), 2, 4, 60, 3, 16, 2, 16);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->num_tiles, 2);
  EXPECT_THAT(t->offsets, ElementsAre(0, 3, 6, 9, 11));
  EXPECT_THAT(t->blocks, ElementsAre(0, 1, 3, 0, 2, 3, 0, 2, 3, 1, 3));
  // TilePairs puts the queries at positions 0..3: only block 0 is (partly) visible, in three of
  // the four (head, tile) lists: 1 + 2, 3 + 4 and 1 + 2 keys.
  EXPECT_EQ(TilePairs(*t, 4), 3 + 7 + 3);

  // 32-token blocks: 0,1 -> 0 and 2,3 -> 1.
  absl::StatusOr<TileBlocks> c = TileUnion(lists.data(), 2, 4, 60, 3, 16, 4, 32);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->offsets, ElementsAre(0, 2, 4));
  EXPECT_THAT(c->blocks, ElementsAre(0, 1, 0, 1));
}

TEST(TileUnion, RejectsBadInput) {
  const std::vector<int32_t> lists = {0, 5};  // position 20, block 16: block 5 is in the future
  absl::StatusOr<TileBlocks> t = TileUnion(lists.data(), 1, 1, 20, 2, 16, 128, 16);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("entry 1 = 5"));
  t = TileUnion(lists.data(), 1, 1, 100, 2, 16, 128, 24);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("out_block 24"));
  const std::vector<int32_t> neg = {-3, 0};
  EXPECT_FALSE(TileUnion(neg.data(), 1, 1, 100, 2, 16, 128, 16).ok());
  EXPECT_FALSE(SelectedPairs(lists.data(), 1, 1, 20, 2, 16).ok());
}

TEST(Pairs, DiagonalBlocksCountUpToThePosition) {
  // Position 37, block 16: blocks 0 (16 keys), 2 (keys 32..37 = 6).
  const std::vector<int32_t> lists = {0, 2, -1};
  absl::StatusOr<int64_t> p = SelectedPairs(lists.data(), 1, 1, 37, 3, 16);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, 22);
  EXPECT_EQ(CausalPairs(3, 10), 11 + 12 + 13);
  EXPECT_EQ(VisibleChunkPairs(3, 46, 32, 16), 1 + 2 + 2);  // positions 46, 47, 48
  EXPECT_DOUBLE_EQ(AttentionFlops(10, 2, 8), 4.0 * 10 * 2 * 8);
}

TEST(Pairs, TilePairsMatchBruteForceOnRandomLists) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const int32_t kv = 2, max_blocks = 5, block = 16;
  const int64_t num_q = 300;
  std::vector<int32_t> lists(kv * num_q * max_blocks, -1);
  for (int64_t r = 0; r < kv * num_q; ++r) {
    const int64_t own = (r % num_q) / block;
    std::set<int32_t> s = {static_cast<int32_t>(own)};
    for (int j = 0; j < 3; ++j) s.insert(static_cast<int32_t>(rng.NextU64() % (own + 1)));
    int j = 0;
    for (int32_t b : s) lists[r * max_blocks + j++] = b;
  }
  for (int32_t out_block : {16, 64}) {
    absl::StatusOr<TileBlocks> t =
        TileUnion(lists.data(), kv, num_q, 0, max_blocks, block, 128, out_block);
    ASSERT_TRUE(t.ok()) << t.status();
    int64_t want = 0;
    for (int32_t g = 0; g < kv; ++g) {
      for (int64_t i = 0; i < num_q; ++i) {
        std::set<int64_t> keys;  // every key some query of the tile selected, at or before i
        const int64_t tile = i / 128;
        for (int64_t o = tile * 128; o < std::min(num_q, tile * 128 + 128); ++o) {
          for (int j = 0; j < max_blocks; ++j) {
            const int32_t b = lists[(g * num_q + o) * max_blocks + j];
            if (b < 0) continue;
            const int64_t ob = b * block / out_block;
            for (int64_t k = ob * out_block; k < (ob + 1) * out_block && k <= i; ++k) {
              keys.insert(k);
            }
          }
        }
        want += static_cast<int64_t>(keys.size());
      }
    }
    EXPECT_EQ(TilePairs(*t, num_q), want) << "out_block " << out_block;
    absl::StatusOr<int64_t> own = SelectedPairs(lists.data(), kv, num_q, 0, max_blocks, block);
    ASSERT_TRUE(own.ok());
    EXPECT_LE(*own, TilePairs(*t, num_q));
  }
}

TEST(Configs, ForcedBlocksFitTheBudget) {
  for (const SelectionConfig& c : DefaultSelectionConfigs()) {
    SCOPED_TRACE(c.name);
    EXPECT_GE(c.topk, c.init_blocks + c.local_blocks + 1);
    EXPECT_EQ(c.block_size % c.kernel_stride, 0);
    EXPECT_EQ(c.kernel_size % c.kernel_stride, 0);
  }
  const auto cfgs = DefaultSelectionConfigs();
  ASSERT_EQ(cfgs.size(), 3u);
  EXPECT_EQ(cfgs[0].topk, 64);
  EXPECT_EQ(cfgs[1].topk - cfgs[1].init_blocks - cfgs[1].local_blocks - 1, 16);
}

}  // namespace
}  // namespace sparsefill::bench
