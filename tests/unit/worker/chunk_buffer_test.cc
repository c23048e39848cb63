// ChunkBufferPool: buffers come back for reuse when their last owner lets go, the idle bytes stay
// bounded, and a buffer may outlive its pool (gRPC can release a slice after the worker is gone).
#include "services/worker/chunk_buffer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <utility>

namespace sparsefill::worker {
namespace {

TEST(ChunkBufferPool, ABufferGivenBackIsReusedForAnyRequestItCanHold) {
  auto pool = ChunkBufferPool::Create({});
  const char* first = nullptr;
  {
    ChunkBuffer b = pool->Take(1 << 20);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(b.size(), 1u << 20);
    std::memset(b.data(), 0x5a, b.size());  // every byte writable
    first = b.data();
    EXPECT_EQ(pool->idle_buffers(), 0u);
  }
  EXPECT_EQ(pool->idle_buffers(), 1u);
  EXPECT_EQ(pool->idle_bytes(), 1u << 20);
  {
    ChunkBuffer smaller = pool->Take(1000);
    EXPECT_EQ(smaller.data(), first) << "an idle buffer large enough is reused";
    EXPECT_EQ(smaller.size(), 1000u);
    EXPECT_EQ(smaller.capacity(), 1u << 20);
    EXPECT_EQ(pool->idle_buffers(), 0u);
    ChunkBuffer other = pool->Take(1000);
    EXPECT_NE(other.data(), first) << "a buffer in use is never handed out twice";
  }
  EXPECT_EQ(pool->idle_buffers(), 2u);
  // Too small for the request: a new one, the idle ones stay.
  ChunkBuffer big = pool->Take(2 << 20);
  EXPECT_EQ(big.capacity(), 2u << 20);
  EXPECT_EQ(pool->idle_buffers(), 2u);
}

TEST(ChunkBufferPool, IdleBytesStayWithinTheBoundOldestFreedFirst) {
  ChunkBufferPool::Options o;
  o.max_idle_bytes = 3 << 20;
  ASSERT_TRUE(o.Validate().ok());
  auto pool = ChunkBufferPool::Create(o);
  {
    std::vector<ChunkBuffer> held;
    for (int i = 0; i < 5; ++i) held.push_back(pool->Take(1 << 20));
  }
  EXPECT_EQ(pool->idle_buffers(), 3u);
  EXPECT_EQ(pool->idle_bytes(), 3u << 20);
  { ChunkBuffer too_big = pool->Take(4 << 20); }
  EXPECT_EQ(pool->idle_bytes(), 3u << 20) << "a buffer over the bound alone is freed";
  ChunkBufferPool::Options bad;
  bad.max_idle_bytes = 1ull << 41;
  const absl::Status s = bad.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("max_idle_bytes"), std::string::npos) << s;
}

TEST(ChunkBufferPool, MovesKeepOneOwnerAndBuffersMayOutliveThePool) {
  auto pool = ChunkBufferPool::Create({});
  ChunkBuffer a = pool->Take(4096);
  const char* p = a.data();
  ChunkBuffer b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  ChunkBuffer c = pool->Take(4096);
  c = std::move(b);  // c's own buffer goes back, c now holds b's
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(pool->idle_buffers(), 1u);
  pool.reset();
  c = ChunkBuffer();  // freed, no pool to return to
  EXPECT_EQ(c.data(), nullptr);
  EXPECT_EQ(c.size(), 0u);
  EXPECT_TRUE(ChunkBufferPool::Create({})->Take(0).empty());
}

}  // namespace
}  // namespace sparsefill::worker
