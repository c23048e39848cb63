// Token expiry ("token tenant expires=<RFC 3339>", judged on the server's clock at every call)
// and the server's connection limits (keepalive, idle, age, handshake).
#include <gtest/gtest.h>

#include "absl/time/time.h"
#include "services/common/auth_tokens.h"
#include "services/rpc/server.h"
#include "sparsefill/client/coordinator_client.h"
#include "sparsefill/common/rng.h"
#include "tests/testing/compare.h"
#include "tests/unit/rpc/test_coordinator.h"

namespace sparsefill::auth {
namespace {

std::string RandomToken(Rng& rng) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string t;
  for (int i = 0; i < 32; ++i) t += kAlphabet[rng.NextU64() % 64];
  return t;
}

int64_t UnixMillis(const char* rfc3339) {
  absl::Time t;
  std::string err;
  EXPECT_TRUE(absl::ParseTime(absl::RFC3339_full, rfc3339, &t, &err)) << err;
  return absl::ToUnixMillis(t);
}

void ExpectInvalid(const absl::Status& s, std::string_view needle) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find(std::string(needle)), std::string::npos)
      << "expected \"" << needle << "\" in: " << s;
}

TEST(TokenExpiry, ParsesZonesAndJudgesAtTheGivenInstant) {
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const std::string a = RandomToken(rng), b = RandomToken(rng), c = RandomToken(rng);
  // The same instant written in two zones, one token without expiry (the old format).
  auto table =
      TokenTable::Parse(a + " acme expires=2030-06-01T12:00:00Z\n" + b +
                            "\tglobex\texpires=2030-06-01T21:00:00.5+09:00\n" + c + " initech\n",
                        "tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  const int64_t end = UnixMillis("2030-06-01T12:00:00Z");
  EXPECT_EQ(table->Check(a, end - 1).state, TokenState::kValid);
  EXPECT_EQ(table->Check(a, end).state, TokenState::kExpired);  // the instant itself is past
  EXPECT_EQ(table->Check(a, end).tenant, "acme");
  EXPECT_EQ(table->Check(a, end).expires_unix_ms, end);
  EXPECT_EQ(table->Check(b, end + 499).state, TokenState::kValid);
  EXPECT_EQ(table->Check(b, end + 500).state, TokenState::kExpired);
  EXPECT_EQ(table->Check(c, int64_t{1} << 62).state, TokenState::kValid);
  EXPECT_EQ(table->Check(c, 0).expires_unix_ms, kNeverExpires);
  EXPECT_EQ(table->Check(RandomToken(rng), 0).state, TokenState::kUnknown);
  EXPECT_EQ(table->Lookup(a, end - 1), "acme");
  EXPECT_EQ(table->Lookup(a, end), std::nullopt);
  // The real clock: 2030 is ahead for a good while yet.
  EXPECT_EQ(table->Lookup(a), "acme");
}

TEST(TokenExpiry, BadExpiriesNameTheLineAndTheValue) {
  Rng rng(testing::FreshSeed());
  const std::string t = RandomToken(rng);
  ExpectInvalid(TokenTable::Parse(t + " acme 2030-01-01T00:00:00Z\n", "f").status(),
                "f:1: third field");
  ExpectInvalid(TokenTable::Parse("# c\n" + t + " acme expires=tomorrow\n", "f").status(),
                "f:2: expires \"tomorrow\"");
  // A zone is required: servers in different zones must end a token at one instant.
  ExpectInvalid(TokenTable::Parse(t + " acme expires=2030-01-01T00:00:00\n", "f").status(),
                "RFC 3339");
  ExpectInvalid(TokenTable::Parse(t + " acme expires=2030-13-01T00:00:00Z\n", "f").status(),
                "expires");
  ExpectInvalid(TokenTable::Parse(t + " acme expires=\n", "f").status(), "expires");
  ExpectInvalid(TokenTable::Parse(t + " acme expires=2030-01-01T00:00:00Z x\n", "f").status(),
                "got 4 fields");
}

// Through a real server: the handler reads its injected clock on every call, so a token that
// was accepted is refused once the clock passes its expiry, without reloading anything.
TEST(TokenExpiry, ServerRefusesATokenOnceItsExpiryPasses) {
  Rng rng(testing::FreshSeed());
  const std::string token = RandomToken(rng);
  auto tokens = TokenTable::Parse(token + " acme expires=2030-01-01T00:00:00Z\n", "t");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  FakeClock clock(UnixMillis("2029-12-31T23:59:59Z"));
  rpc::CallHandler::Options ho;
  ho.tokens = &*tokens;
  ho.clock = &clock;
  rpc::test_support::TestCoordinator service(ho);
  auto server = rpc::StartServer(rpc::ServerOptions{}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  client::ConnectionOptions o;
  o.address = "127.0.0.1:" + std::to_string((*server)->port());
  o.token = token;
  o.default_timeout = std::chrono::seconds(10);
  auto c = client::CoordinatorClient::Connect(o);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE((*c)->ListModels().ok());
  clock.Advance(1000);
  const absl::Status s = (*c)->ListModels().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_NE(std::string(s.message()).find("expired at 2030-01-01T00:00:00"), std::string::npos)
      << s;
  EXPECT_EQ(std::string(s.message()).find(token), std::string::npos) << "the token was echoed";
}

TEST(ServerLimits, ValidateNamesTheField) {
  const auto invalid = [](auto set, std::string_view field) {
    rpc::ServerOptions o;
    set(o);
    ExpectInvalid(o.Validate(), field);
  };
  invalid([](rpc::ServerOptions& o) { o.keepalive_time_ms = -1; }, "keepalive_time_ms");
  invalid([](rpc::ServerOptions& o) { o.keepalive_timeout_ms = 0; }, "keepalive_timeout_ms");
  invalid([](rpc::ServerOptions& o) { o.max_connection_idle_ms = int64_t{1} << 40; },
          "max_connection_idle_ms");
  invalid(
      [](rpc::ServerOptions& o) {
        o.max_connection_age_ms = 0;
        o.max_connection_age_grace_ms = 100;
      },
      "max_connection_age_grace_ms");
  invalid([](rpc::ServerOptions& o) { o.handshake_timeout_ms = -5; }, "handshake_timeout_ms");
  rpc::ServerOptions off;
  off.keepalive_time_ms = 0;
  off.keepalive_timeout_ms = 0;
  off.max_connection_idle_ms = 0;
  off.handshake_timeout_ms = 0;
  EXPECT_TRUE(off.Validate().ok());
  EXPECT_TRUE(rpc::ServerOptions{}.Validate().ok());
}

}  // namespace
}  // namespace sparsefill::auth
