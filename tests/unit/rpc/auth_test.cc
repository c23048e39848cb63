#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "services/common/auth_channel.h"
#include "services/common/auth_tls.h"
#include "services/common/auth_tokens.h"
#include "sparsefill/common/rng.h"
#include "tests/testing/compare.h"

namespace sparsefill::auth {
namespace {

std::string RandomToken(Rng& rng) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string t;
  for (int i = 0; i < 32; ++i) t += kAlphabet[rng.NextU64() % 64];
  return t;
}

void ExpectInvalid(const absl::Status& s, std::string_view needle) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find(std::string(needle)), std::string::npos)
      << "expected \"" << needle << "\" in: " << s;
}

TEST(TokenTable, ParsesCommentsBlanksTabsAndLooksUpEveryToken) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const std::string a = RandomToken(rng), b = RandomToken(rng), c = RandomToken(rng);
  const std::string text = "# tenants of the test cluster\n\n" + a + " acme\r\n  " + b +
                           "\tglobex.eu-1   \n# " + c + " commented-out\n";
  auto table = TokenTable::Parse(text, "tokens.txt");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->size(), 2u);
  EXPECT_EQ(table->Lookup(a), "acme");
  EXPECT_EQ(table->Lookup(b), "globex.eu-1");
  EXPECT_EQ(table->Lookup(c), std::nullopt);
  EXPECT_EQ(table->Lookup(a.substr(0, a.size() - 1)), std::nullopt);  // prefix
  EXPECT_EQ(table->Lookup(a + "x"), std::nullopt);                    // extension
  std::string flipped = a;
  flipped[flipped.size() / 2] ^= 1;
  EXPECT_EQ(table->Lookup(flipped), std::nullopt);
  EXPECT_EQ(table->Lookup(""), std::nullopt);
}

TEST(TokenTable, BadFilesNameTheLine) {
  const std::string good(24, 'k');
  ExpectInvalid(TokenTable::Parse(good + " acme extra\n", "t").status(), "t:1");
  ExpectInvalid(TokenTable::Parse("# c\n" + good + "\n", "t").status(), "t:2");
  ExpectInvalid(TokenTable::Parse("short acme\n", "t").status(), "token must be");
  ExpectInvalid(TokenTable::Parse(good + " acme\n" + good + " other\n", "t").status(),
                "t:2: duplicate token");
  ExpectInvalid(TokenTable::Parse(good + " ac/me\n", "t").status(), "tenant");
  ExpectInvalid(TokenTable::Parse(good + " " + std::string(65, 'x') + "\n", "t").status(),
                "tenant");
  ExpectInvalid(TokenTable::Parse(std::string(20, 'a') + "\x01" + " acme\n", "t").status(),
                "non-printable");
  ExpectInvalid(TokenTable::Parse("# only comments\n\n", "t").status(), "no tokens");
  ExpectInvalid(TokenTable::LoadFile("/nonexistent/tokens.txt").status(), "cannot open");
}

TEST(TokenTable, LoadsAFile) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() /
      ("sf_tokens_" + std::to_string(sparsefill::testing::FreshSeed()) + ".txt");
  { std::ofstream(path) << "0123456789abcdef0123 tenant-a\n"; }
  auto table = TokenTable::LoadFile(path.string());
  std::filesystem::remove(path);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->Lookup("0123456789abcdef0123"), "tenant-a");
}

TEST(Bearer, ParsesTheSchemeCaseInsensitively) {
  EXPECT_EQ(ParseBearer("Bearer abc"), "abc");
  EXPECT_EQ(ParseBearer("bearer  abc "), "abc");
  EXPECT_EQ(ParseBearer("BEARER abc"), "abc");
  EXPECT_EQ(ParseBearer("Basic abc"), std::nullopt);
  EXPECT_EQ(ParseBearer("Bearer"), std::nullopt);
  EXPECT_EQ(ParseBearer("Bearer    "), std::nullopt);
  EXPECT_EQ(ParseBearer("Bearerabc"), std::nullopt);
  EXPECT_EQ(ParseBearer(""), std::nullopt);
}

TEST(SecurityOptions, ValidateNamesTheField) {
  ServerSecurityOptions server;
  EXPECT_TRUE(server.Validate().ok());
  server.cert_file = "/x.pem";
  ExpectInvalid(server.Validate(), "cert_file");  // set while insecure
  server.mode = TransportSecurity::kTls;
  ExpectInvalid(server.Validate(), "cert_file: cannot open");
  server.cert_file = "";
  ExpectInvalid(server.Validate(), "cert_file: no file given");

  ChannelSecurityOptions channel;
  EXPECT_TRUE(channel.Validate().ok());
  channel.mode = TransportSecurity::kTls;
  EXPECT_TRUE(channel.Validate().ok());  // system roots
  channel.cert_file = "/x.pem";
  ExpectInvalid(channel.Validate(), "both");
  // A file that exists but is not PEM.
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() /
      ("sf_notpem_" + std::to_string(sparsefill::testing::FreshSeed()));
  { std::ofstream(path) << "hello"; }
  channel.cert_file = "";
  channel.ca_file = path.string();
  ExpectInvalid(channel.Validate(), "ca_file");
  std::filesystem::remove(path);
}

TEST(Channel, LoopbackAndTokenPolicy) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1:50051"));
  EXPECT_TRUE(IsLoopbackAddress("localhost:1"));
  EXPECT_TRUE(IsLoopbackAddress("[::1]:9"));
  EXPECT_TRUE(IsLoopbackAddress("unix:/tmp/sock"));
  EXPECT_TRUE(IsLoopbackAddress("ipv4:127.0.0.2:80"));
  EXPECT_FALSE(IsLoopbackAddress("10.0.0.1:50051"));
  EXPECT_FALSE(IsLoopbackAddress("coordinator.svc:50051"));
  EXPECT_FALSE(IsLoopbackAddress("localhost.evil.com:1"));

  ChannelSecurityOptions insecure;
  const std::string token(20, 't');
  EXPECT_TRUE(CreateChannel("127.0.0.1:1", insecure, token).ok());
  ExpectInvalid(CreateChannel("10.1.2.3:1", insecure, token).status(), "plaintext");
  insecure.allow_token_over_insecure = true;
  EXPECT_TRUE(CreateChannel("10.1.2.3:1", insecure, token).ok());
  ExpectInvalid(CreateChannel("127.0.0.1:1", insecure, "has space").status(), "token");
  ExpectInvalid(CreateChannel("", insecure, "").status(), "address");
}

}  // namespace
}  // namespace sparsefill::auth
