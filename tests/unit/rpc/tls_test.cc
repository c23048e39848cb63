// TLS and mutual TLS handshakes with certificates generated at test time by openssl (no keys in
// the repository): a CA, a server certificate for 127.0.0.1/localhost, a client certificate,
// and an unrelated CA that must not be trusted.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "services/common/auth_channel.h"
#include "services/rpc/server.h"
#include "sparsefill/client/coordinator_client.h"
#include "tests/testing/compare.h"
#include "tests/unit/rpc/test_coordinator.h"

namespace sparsefill::rpc {
namespace {

namespace fs = std::filesystem;
using test_support::TestCoordinator;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("sf_tls_" + std::to_string(sparsefill::testing::FreshSeed())));
    fs::create_directories(*dir_);
    const std::string d = dir_->string();
    std::ofstream(*dir_ / "server.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    std::ofstream(*dir_ / "client.ext") << "extendedKeyUsage=clientAuth\n";
    // P-256 keys: fast to generate, accepted by gRPC's TLS stack.
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "set -e; cd '" + d + "'; " + "openssl req -x509 " + key +
        " -keyout ca.key -out ca.pem -days 1 -subj /CN=sf-test-ca; " + "openssl req -x509 " + key +
        " -keyout other.key -out other.pem -days 1 -subj /CN=other; " + "openssl req " + key +
        " -keyout server.key -out server.csr -subj /CN=localhost; " +
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 1 -extfile server.ext; " +
        "openssl req " + key + " -keyout client.key -out client.csr -subj /CN=sf-client; " +
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 1 -extfile client.ext; " +
        "openssl req " + key + " -keyout rogue.key -out rogue.csr -subj /CN=rogue; " +
        "openssl x509 -req -in rogue.csr -CA other.pem -CAkey other.key -CAcreateserial "
        "-out rogue.pem -days 1";
    const std::string cmd = "bash -c \"" + script + "\" >'" + d + "/openssl.log' 2>&1";
    ok_ = std::system(cmd.c_str()) == 0;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }
  static std::string File(const std::string& name) { return (*dir_ / name).string(); }

  void SetUp() override {
    ASSERT_TRUE(ok_) << "openssl failed; see " << File("openssl.log");
    const std::string token(24, 'q');
    auto tokens = auth::TokenTable::Parse(token + " acme\n", "tls tokens");
    ASSERT_TRUE(tokens.ok());
    tokens_ = *std::move(tokens);
    CallHandler::Options o;
    o.tokens = &tokens_;
    service_ = std::make_unique<TestCoordinator>(o);
  }

  void Start(bool mutual) {
    ServerOptions o;
    o.security.mode = auth::TransportSecurity::kTls;
    o.security.cert_file = File("server.pem");
    o.security.key_file = File("server.key");
    if (mutual) o.security.client_ca_file = File("ca.pem");
    auto server = StartServer(o, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // ListModels through the public client with these TLS files.
  absl::Status Call(client::Security security, const std::string& ca, const std::string& cert,
                    const std::string& key) {
    client::ConnectionOptions o;
    o.address = "127.0.0.1:" + std::to_string(server_->port());
    o.security = security;
    o.ca_file = ca;
    o.cert_file = cert;
    o.key_file = key;
    o.token = std::string(24, 'q');
    o.default_timeout = std::chrono::seconds(5);
    auto c = client::CoordinatorClient::Connect(o);
    if (!c.ok()) return c.status();
    return (*c)->ListModels().status();
  }

  static fs::path* dir_;
  static bool ok_;
  auth::TokenTable tokens_;
  std::unique_ptr<TestCoordinator> service_;
  std::unique_ptr<RunningServer> server_;
};

fs::path* TlsTest::dir_ = nullptr;
bool TlsTest::ok_ = false;

TEST_F(TlsTest, ServerTlsHandshakeAndTokenOverTls) {
  Start(/*mutual=*/false);
  const absl::Status s = Call(client::Security::kTls, File("ca.pem"), "", "");
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(service_->last_tenant(), "acme");
}

TEST_F(TlsTest, ClientThatDoesNotTrustTheServerFailsUnavailable) {
  Start(/*mutual=*/false);
  EXPECT_EQ(Call(client::Security::kTls, File("other.pem"), "", "").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(Call(client::Security::kInsecure, "", "", "").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_->handler().CallCount("ListModels", absl::StatusCode::kOk), 0);
}

TEST_F(TlsTest, MutualTlsNeedsAClientCertificateFromTheTrustedCa) {
  Start(/*mutual=*/true);
  const absl::Status ok =
      Call(client::Security::kTls, File("ca.pem"), File("client.pem"), File("client.key"));
  EXPECT_TRUE(ok.ok()) << ok;
  EXPECT_EQ(Call(client::Security::kTls, File("ca.pem"), "", "").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(
      Call(client::Security::kTls, File("ca.pem"), File("rogue.pem"), File("rogue.key")).code(),
      absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_->handler().CallCount("ListModels", absl::StatusCode::kOk), 1);
}

TEST_F(TlsTest, TlsServerOptionsAreChecked) {
  ServerOptions o;
  o.security.mode = auth::TransportSecurity::kTls;
  o.security.cert_file = File("server.pem");
  o.security.key_file = File("missing.key");
  const absl::Status s = StartServer(o, {service_.get()}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("key_file"), std::string::npos) << s;
}

}  // namespace
}  // namespace sparsefill::rpc
