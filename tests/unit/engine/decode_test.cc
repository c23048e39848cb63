// Engine::Decode: one token after a prefill equals the prefill of one more token (dense), and
// decoding over the KV of a sharded prefill gives the same bits as over the single-process KV.
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "sparsefill/engine/engine.h"
#include "sparsefill/engine/shard.h"
#include "tests/testing/compare.h"

namespace sparsefill::engine {
namespace {

constexpr char kFixture[] = "tests/fixtures/hf/qwen3";

std::vector<int32_t> RandomTokens(size_t n, int64_t vocab, Rng& rng) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(vocab));
  return t;
}

// Puts every layer's K/V back together from the shards a sink receives (any order of ranks).
class CacheSink : public LayerSink {
 public:
  explicit CacheSink(std::vector<LayerKvBuffer>* cache, int64_t total_tokens)
      : cache_(cache), total_(total_tokens) {}
  absl::Status OnLayer(const LayerKv& kv) override {
    const int64_t row = int64_t{kv.kv_heads} * kv.head_dim;
    LayerKvBuffer& l = (*cache_)[static_cast<size_t>(kv.layer)];
    if (l.k.empty()) {
      l.k.assign(static_cast<size_t>(total_ * row), 0.0f);
      l.v.assign(l.k.size(), 0.0f);
    }
    std::copy_n(kv.k, kv.num_tokens * row, l.k.begin() + kv.token_begin * row);
    std::copy_n(kv.v, kv.num_tokens * row, l.v.begin() + kv.token_begin * row);
    return absl::OkStatus();
  }

 private:
  std::vector<LayerKvBuffer>* cache_;
  int64_t total_;
};

SelectionConfig SmallNosa() {
  SelectionConfig s = SelectionConfig::Nosa();
  s.block_size = 16;
  s.kernel_size = 32;
  s.kernel_stride = 16;
  s.local_tokens = 64;
  s.topk = 9;
  s.nosa_query_aware = 7;
  s.nosa_observe = 40;
  s.dense_below = 0;
  return s;
}

class DecodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = Engine::Create(kFixture, {});
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = std::move(*e);
    seed_ = testing::FreshSeed();
  }
  std::unique_ptr<Engine> engine_;
  uint64_t seed_ = 0;
};

TEST_F(DecodeTest, OneStepEqualsThePrefillOfOneMoreToken) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  for (int64_t n : {1, 37, 413}) {
    SCOPED_TRACE(n);
    const auto tokens = RandomTokens(static_cast<size_t>(n + 1), engine_->config().vocab_size, rng);
    auto plan_long = engine_->Plan(n + 1, SelectionConfig::Dense());
    ASSERT_TRUE(plan_long.ok());
    auto full = engine_->Prefill(*plan_long, tokens, {}, nullptr);
    ASSERT_TRUE(full.ok()) << full.status();

    auto plan = engine_->Plan(n, SelectionConfig::Dense());
    ASSERT_TRUE(plan.ok());
    std::vector<LayerKvBuffer> cache(static_cast<size_t>(engine_->config().num_layers));
    CacheSink sink(&cache, n);
    auto prefix = engine_->Prefill(*plan, std::span<const int32_t>(tokens).first(n), {}, &sink);
    ASSERT_TRUE(prefix.ok()) << prefix.status();
    auto logits = engine_->Decode(cache, tokens[static_cast<size_t>(n)]);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_TRUE(testing::RelativeL2Near(*logits, full->logits, 1e-5));
    // And a different next token gives different logits (the step reads its token).
    auto other = engine_->Decode(cache, (tokens[static_cast<size_t>(n)] + 1) % 512);
    ASSERT_TRUE(other.ok());
    EXPECT_NE(std::memcmp(other->data(), logits->data(), logits->size() * sizeof(float)), 0);
  }
}

TEST_F(DecodeTest, ShardedKvDecodesToTheSameBits) {
  SCOPED_TRACE(seed_);
  Rng rng(seed_);
  const int64_t n = 389;
  const auto tokens = RandomTokens(static_cast<size_t>(n + 1), engine_->config().vocab_size, rng);
  auto plan = engine_->Plan(n, SmallNosa());
  ASSERT_TRUE(plan.ok());
  const size_t layers = static_cast<size_t>(engine_->config().num_layers);
  const std::span<const int32_t> prompt = std::span<const int32_t>(tokens).first(n);

  std::vector<LayerKvBuffer> single(layers);
  CacheSink single_sink(&single, n);
  ASSERT_TRUE(engine_->Prefill(*plan, prompt, {}, &single_sink).ok());

  auto layout = ShardLayout::Even(n, 4, 16);
  ASSERT_TRUE(layout.ok());
  auto x = InProcessExchange::Create(*layout, {});
  ASSERT_TRUE(x.ok());
  std::vector<LayerKvBuffer> sharded(layers);
  std::vector<absl::Status> status(4);
  std::mutex mu;
  // One sink per rank writing disjoint rows of one cache; allocation happens under a lock.
  class LockedSink : public LayerSink {
   public:
    LockedSink(CacheSink* s, std::mutex* mu) : s_(s), mu_(mu) {}
    absl::Status OnLayer(const LayerKv& kv) override {
      std::lock_guard<std::mutex> lock(*mu_);
      return s_->OnLayer(kv);
    }

   private:
    CacheSink* s_;
    std::mutex* mu_;
  };
  CacheSink shared(&sharded, n);
  std::vector<std::thread> threads;
  for (int32_t r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] {
      LockedSink sink(&shared, &mu);
      const TokenRange range = layout->range(r);
      auto res = engine_->PrefillShard(*plan, prompt.subspan(range.begin, range.size()),
                                       (*x)->endpoint(r), {}, &sink);
      status[r] = res.status();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : status) ASSERT_TRUE(s.ok()) << s;

  auto a = engine_->Decode(single, tokens[static_cast<size_t>(n)]);
  auto b = engine_->Decode(sharded, tokens[static_cast<size_t>(n)]);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->size(), b->size());
  EXPECT_EQ(std::memcmp(a->data(), b->data(), a->size() * sizeof(float)), 0);
}

TEST_F(DecodeTest, RejectsBadCaches) {
  const int64_t row = int64_t{engine_->config().num_kv_heads} * engine_->config().head_dim;
  std::vector<LayerKvBuffer> cache(2);
  for (auto& l : cache) l.k.assign(static_cast<size_t>(5 * row), 0.5f), l.v = l.k;
  EXPECT_TRUE(engine_->Decode(cache, 3).ok());
  EXPECT_EQ(engine_->Decode(cache, 512).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->Decode(cache, -1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->Decode(std::span<const LayerKvBuffer>(cache).first(1), 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  cache[1].v.pop_back();
  auto bad = engine_->Decode(cache, 3);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("layer 1"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace sparsefill::engine
