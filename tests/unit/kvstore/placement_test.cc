#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "services/kvstore/placement.h"
#include "sparsefill/common/rng.h"
#include "tests/testing/compare.h"

namespace sparsefill::kvstore {
namespace {

std::vector<int64_t> HotList(const HeadPlacement& p) {
  std::vector<int64_t> out;
  for (size_t b = 0; b < p.hot.size(); ++b) {
    if (p.hot[b]) out.push_back(static_cast<int64_t>(b));
  }
  return out;
}

TEST(Placement, InitLocalThenTopImportance) {
  const PlacementOptions o{.init_blocks = 2, .local_blocks = 3, .hot_blocks = 8};
  std::vector<float> imp(20, 0.0f);
  for (int b = 0; b < 20; ++b) imp[b] = 0.01f * b;  // rising, but the top ones are local
  imp[7] = 5.0f;
  imp[11] = 4.0f;
  imp[3] = 3.0f;
  const HeadPlacement p = PlaceHead(20, o, imp.data());
  // init {0,1}, local {17,18,19}, then top importance outside them: 7, 11, 3.
  EXPECT_EQ(HotList(p), (std::vector<int64_t>{0, 1, 3, 7, 11, 17, 18, 19}));
  EXPECT_TRUE(std::isinf(p.priority[0]) && std::isinf(p.priority[19]));
  EXPECT_EQ(p.priority[7], 5.0f);
  EXPECT_EQ(p.priority[3], 3.0f);
}

TEST(Placement, RandomImportanceMatchesBruteForce) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng.NextU64() % 80);
    PlacementOptions o;
    o.init_blocks = static_cast<int32_t>(rng.NextU64() % 4);
    o.local_blocks = static_cast<int32_t>(rng.NextU64() % 8);
    o.hot_blocks = o.init_blocks + o.local_blocks + static_cast<int32_t>(rng.NextU64() % 20);
    ASSERT_TRUE(o.Validate().ok());
    std::vector<float> imp(n);
    for (float& x : imp) x = rng.Uniform();
    const HeadPlacement p = PlaceHead(n, o, imp.data());
    std::vector<uint8_t> want(n, 0);
    for (int64_t b = 0; b < std::min<int64_t>(o.init_blocks, n); ++b) want[b] = 1;
    for (int64_t b = std::max<int64_t>(0, n - o.local_blocks); b < n; ++b) want[b] = 1;
    int64_t count = 0;
    for (uint8_t w : want) count += w;
    while (count < std::min<int64_t>(o.hot_blocks, n)) {
      int64_t best = -1;
      for (int64_t b = 0; b < n; ++b) {
        if (!want[b] && (best < 0 || imp[b] > imp[best])) best = b;
      }
      want[best] = 1;
      ++count;
    }
    ASSERT_EQ(p.hot, want) << "trial " << trial << " n " << n;
  }
}

TEST(Placement, EdgeCases) {
  const PlacementOptions o{.init_blocks = 1, .local_blocks = 2, .hot_blocks = 4};
  // No importance: init + local only.
  EXPECT_EQ(HotList(PlaceHead(10, o, nullptr)), (std::vector<int64_t>{0, 8, 9}));
  // Fewer blocks than init + local: all of them, no double counting.
  EXPECT_EQ(HotList(PlaceHead(2, o, nullptr)), (std::vector<int64_t>{0, 1}));
  // NaN importance ranks last; ties go to the lower block.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> imp = {0, nan, 0.5f, 0.5f, nan, 0, 0, 0, 0, 0};
  EXPECT_EQ(HotList(PlaceHead(10, o, imp.data())), (std::vector<int64_t>{0, 2, 8, 9}));
  // hot_blocks = 0 keeps nothing hot.
  const PlacementOptions none{.init_blocks = 1, .local_blocks = 2, .hot_blocks = 0};
  EXPECT_TRUE(HotList(PlaceHead(10, none, imp.data())).empty());
}

TEST(Placement, ValidateNamesTheProblem) {
  absl::Status s =
      PlacementOptions{.init_blocks = 4, .local_blocks = 8, .hot_blocks = 10}.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("exceeds hot_blocks"), std::string::npos) << s;
  s = PlacementOptions{.init_blocks = -1, .local_blocks = 8, .hot_blocks = 10}.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(PlacementOptions{}.Validate().ok());
}

}  // namespace
}  // namespace sparsefill::kvstore
