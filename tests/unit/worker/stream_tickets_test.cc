// StreamTickets: issue, redeem once, expiry on an injected clock, wrong cache, bad input and the
// outstanding limit. Tickets and cache ids are fresh random bytes every run.
#include "services/worker/stream_tickets.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sparsefill/common/rng.h"
#include "tests/testing/compare.h"

namespace sparsefill::worker {
namespace {

using ::testing::HasSubstr;

std::string RandomBytes(Rng& rng, size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng.NextU64() & 0xff);
  return out;
}

class StreamTicketsTest : public ::testing::Test {
 protected:
  StreamTicketsTest() : seed_(testing::FreshSeed()), rng_(seed_) {}
  void SetUp() override { std::cout << "seed " << seed_ << "\n"; }

  StreamTickets Make(size_t max_outstanding = 4096) {
    StreamTickets::Options o;
    o.clock = &clock_;
    o.max_outstanding = max_outstanding;
    EXPECT_TRUE(o.Validate().ok());
    return StreamTickets(o);
  }
  TicketGrant Grant(const std::string& cache, const std::string& tenant) {
    TicketGrant g;
    g.cache_id = cache;
    g.tenant = tenant;
    g.token_begin = 128;
    g.token_end = 384;
    return g;
  }

  uint64_t seed_;
  Rng rng_;
  FakeClock clock_;
};

TEST_F(StreamTicketsTest, IssuedTicketRedeemsOnceForItsCache) {
  StreamTickets t = Make();
  const std::string ticket = RandomBytes(rng_, 16);
  const std::string cache = RandomBytes(rng_, 16);
  ASSERT_TRUE(t.Issue(ticket, Grant(cache, "tenant-a"), 5000).ok());
  EXPECT_EQ(t.size(), 1u);
  auto g = t.Redeem(ticket, cache);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->cache_id, cache);
  EXPECT_EQ(g->tenant, "tenant-a");
  EXPECT_EQ(g->token_begin, 128);
  EXPECT_EQ(g->token_end, 384);
  EXPECT_EQ(g->expires_unix_ms, clock_.NowUnixMillis() + 5000);
  // Single use.
  auto again = t.Redeem(ticket, cache);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(t.size(), 0u);
}

TEST_F(StreamTicketsTest, AGrantMatchesOnlyItsTenantsShard) {
  StreamTickets t = Make();
  const std::string ticket = RandomBytes(rng_, 16);
  const std::string cache = RandomBytes(rng_, 16);
  ASSERT_TRUE(t.Issue(ticket, Grant(cache, "tenant-a"), 5000).ok());
  auto g = t.Redeem(ticket, cache);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->Matches("tenant-a", 128, 384));
  EXPECT_FALSE(g->Matches("tenant-b", 128, 384));
  EXPECT_FALSE(g->Matches("", 128, 384));
  EXPECT_FALSE(g->Matches("tenant-a", 0, 384));
  EXPECT_FALSE(g->Matches("tenant-a", 128, 256));
}

TEST_F(StreamTicketsTest, ExpiredTicketIsDenied) {
  StreamTickets t = Make();
  const std::string ticket = RandomBytes(rng_, 16);
  const std::string cache = RandomBytes(rng_, 16);
  ASSERT_TRUE(t.Issue(ticket, Grant(cache, "a"), 1000).ok());
  clock_.Advance(999);
  EXPECT_EQ(t.size(), 1u);
  clock_.Advance(1);
  auto g = t.Redeem(ticket, cache);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(g.status(), StreamTickets::Denied());
}

TEST_F(StreamTicketsTest, EveryRefusalLooksTheSame) {
  StreamTickets t = Make();
  const std::string cache = RandomBytes(rng_, 16);
  const std::string other_cache = RandomBytes(rng_, 16);
  const std::string ticket = RandomBytes(rng_, 16);
  ASSERT_TRUE(t.Issue(ticket, Grant(cache, "a"), 1000).ok());
  // Unknown ticket, the right ticket for another cache (it is consumed: it leaked), then the
  // right cache with the now-spent ticket.
  const absl::Status unknown = t.Redeem(RandomBytes(rng_, 16), cache).status();
  const absl::Status wrong_cache = t.Redeem(ticket, other_cache).status();
  const absl::Status spent = t.Redeem(ticket, cache).status();
  const absl::Status short_ticket = t.Redeem(RandomBytes(rng_, 7), cache).status();
  for (const absl::Status& s : {unknown, wrong_cache, spent, short_ticket}) {
    EXPECT_EQ(s, StreamTickets::Denied());
  }
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("stream ticket is not valid"));
}

TEST_F(StreamTicketsTest, MissingTicketIsUnauthenticated) {
  StreamTickets t = Make();
  auto g = t.Redeem("", RandomBytes(rng_, 16));
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(g.status().message()), HasSubstr("no stream ticket"));
}

TEST_F(StreamTicketsTest, IssueRejectsBadInputNamingTheField) {
  StreamTickets t = Make();
  const std::string cache = RandomBytes(rng_, 16);
  absl::Status s = t.Issue(RandomBytes(rng_, 15), Grant(cache, "a"), 1000);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("ticket"));
  s = t.Issue(RandomBytes(rng_, 16), Grant(RandomBytes(rng_, 3), "a"), 1000);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("cache_id"));
  for (int64_t ttl : {int64_t{0}, int64_t{-5}, int64_t{60'001}}) {
    s = t.Issue(RandomBytes(rng_, 16), Grant(cache, "a"), ttl);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << ttl;
    EXPECT_THAT(std::string(s.message()), HasSubstr("ttl_ms")) << ttl;
  }
  const std::string ticket = RandomBytes(rng_, 16);
  ASSERT_TRUE(t.Issue(ticket, Grant(cache, "a"), 1000).ok());
  EXPECT_EQ(t.Issue(ticket, Grant(cache, "b"), 1000).code(), absl::StatusCode::kAlreadyExists);
  // The first grant stands.
  auto g = t.Redeem(ticket, cache);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->tenant, "a");
}

TEST_F(StreamTicketsTest, OutstandingTicketsAreBoundedAndExpiredOnesMakeRoom) {
  StreamTickets t = Make(/*max_outstanding=*/3);
  const std::string cache = RandomBytes(rng_, 16);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(t.Issue(RandomBytes(rng_, 16), Grant(cache, "a"), 100).ok());
  }
  EXPECT_EQ(t.Issue(RandomBytes(rng_, 16), Grant(cache, "a"), 100).code(),
            absl::StatusCode::kResourceExhausted);
  clock_.Advance(100);
  EXPECT_TRUE(t.Issue(RandomBytes(rng_, 16), Grant(cache, "a"), 100).ok());
  EXPECT_EQ(t.size(), 1u);
}

TEST(StreamTicketsOptionsTest, ValidateNamesTheField) {
  StreamTickets::Options o;
  EXPECT_TRUE(o.Validate().ok());
  o.max_ttl_ms = 0;
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("max_ttl_ms"));
  o = StreamTickets::Options();
  o.max_outstanding = 0;
  EXPECT_THAT(std::string(o.Validate().message()), HasSubstr("max_outstanding"));
}

}  // namespace
}  // namespace sparsefill::worker
