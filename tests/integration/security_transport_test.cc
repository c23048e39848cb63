// Transport-level attacks on the real coordinator process (issue 9 item 5): plaintext or
// untrusted clients of a mutual-TLS server, oversized requests, malformed and flooding HTTP/2,
// and slow clients (a stalled preface, a stream that is never read). Each runs while another
// tenant's prefill + stream loop goes on, which must complete normally; the server must stay up
// and must not hold a stalled client's connection or call forever.
#include <sys/socket.h>
#include <sys/time.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/rpc/convert.h"
#include "sparsefill/client/coordinator_client.h"
#include "tests/integration/harness.h"
#include "tests/integration/security_support.h"

namespace sparsefill::integration {
namespace {

constexpr uint8_t kData = 0x0, kHeaders = 0x1, kRstStream = 0x3, kSettings = 0x4, kPing = 0x6,
                  kContinuation = 0x9;
constexpr uint8_t kEndStream = 0x1, kEndHeaders = 0x4;

// Resident memory of a process, 0 when it cannot be read.
int64_t RssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;  // kB
  }
  return 0;
}

class SecurityTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto files = tools::TempDir::Create("sparsefill-sec-transport");
    ASSERT_TRUE(files.ok()) << files.status();
    files_ = *std::move(files);
    ASSERT_TRUE(WriteFile(
        File("tokens"),
        absl::StrCat(kTokenA, " tenant-a\n", kTokenB, " tenant-b\n", kTokenMallory, " mallory\n")));
    auto prompt = NovelTokens(300);
    ASSERT_TRUE(prompt.ok()) << prompt.status();
    prompt_ = *std::move(prompt);
  }
  std::string File(const std::string& name) const { return files_->path() + "/" + name; }

  void Start(std::vector<std::string> coordinator_flags, int32_t layers = 2) {
    coordinator_flags.push_back("--tokens");
    coordinator_flags.push_back(File("tokens"));
    auto cluster = StartCluster(Spec(1, layers, coordinator_flags));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    address_ = (*cluster_)->coordinator_address();
  }
  client::ConnectionOptions Tenant(const std::string& token) const {
    client::ConnectionOptions o;
    o.address = address_;
    o.token = token;
    o.default_timeout = std::chrono::seconds(60);
    if (tls_) {
      o.security = client::Security::kTls;
      o.ca_file = File("ca.pem");
      o.cert_file = File("client.pem");
      o.key_file = File("client.key");
    }
    return o;
  }
  std::unique_ptr<TenantTraffic> StartTraffic() {
    auto t = std::make_unique<TenantTraffic>(Tenant(kTokenB), prompt_);
    t->Start();
    return t;
  }
  // The server still runs and answers a fresh client.
  void ExpectServing() {
    EXPECT_TRUE((*cluster_)->coordinator().Running()) << (*cluster_)->LogTail("coordinator");
    auto c = client::CoordinatorClient::Connect(Tenant(kTokenA));
    ASSERT_TRUE(c.ok());
    auto models = (*c)->ListModels();
    EXPECT_TRUE(models.ok()) << models.status();
  }
  // Lines of the coordinator's call log for `method` of `tenant`.
  std::vector<std::string> CallLog(const std::string& method, const std::string& tenant) {
    std::vector<std::string> out;
    const std::string log = (*cluster_)->LogTail("coordinator", 1 << 24);
    for (absl::string_view line : absl::StrSplit(log, '\n')) {
      if (absl::StartsWith(line, absl::StrCat("rpc ", method, " ")) &&
          absl::StrContains(line, absl::StrCat(" tenant=", tenant, " "))) {
        out.emplace_back(line);
      }
    }
    return out;
  }
  // A raw HTTP/2 connection that sent the preface and an empty SETTINGS frame, with a send
  // timeout so that a server that stops reading cannot hang the test.
  std::unique_ptr<RawSocket> RawHttp2(const std::string& settings_payload = "") {
    auto s = RawSocket::Connect(address_);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return nullptr;
    timeval tv{5, 0};
    setsockopt((*s)->fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    EXPECT_TRUE(
        (*s)->SendAll(std::string(kHttp2Preface) + Http2Frame(kSettings, 0, 0, settings_payload)));
    return *std::move(s);
  }

  std::unique_ptr<tools::TempDir> files_;
  std::unique_ptr<TestCluster> cluster_;
  std::vector<int32_t> prompt_;
  std::string address_;
  bool tls_ = false;
};

absl::Status ListModelsWith(client::ConnectionOptions o) {
  o.default_timeout = std::chrono::seconds(5);
  auto c = client::CoordinatorClient::Connect(o);
  if (!c.ok()) return c.status();
  return (*c)->ListModels().status();
}

TEST_F(SecurityTransportTest, MutualTlsRefusesPlaintextUntrustedAndCertificatelessClients) {
  ASSERT_TRUE(MakeTestCertificates(files_->path()).ok());
  tls_ = true;
  Start({"--tls-cert", File("server.pem"), "--tls-key", File("server.key"), "--tls-client-ca",
         File("ca.pem")});
  auto traffic = StartTraffic();
  const client::ConnectionOptions good = Tenant(kTokenA);
  {
    SCOPED_TRACE("plaintext");
    client::ConnectionOptions o = good;
    o.security = client::Security::kInsecure;
    o.ca_file = o.cert_file = o.key_file = "";
    EXPECT_EQ(ListModelsWith(o).code(), absl::StatusCode::kUnavailable);
  }
  {
    SCOPED_TRACE("server certificate from a CA the client does not trust");
    client::ConnectionOptions o = good;
    o.ca_file = File("other.pem");
    EXPECT_EQ(ListModelsWith(o).code(), absl::StatusCode::kUnavailable);
  }
  {
    SCOPED_TRACE("no client certificate");
    client::ConnectionOptions o = good;
    o.cert_file = o.key_file = "";
    EXPECT_EQ(ListModelsWith(o).code(), absl::StatusCode::kUnavailable);
  }
  {
    SCOPED_TRACE("client certificate from an untrusted CA");
    client::ConnectionOptions o = good;
    o.cert_file = File("rogue.pem");
    o.key_file = File("rogue.key");
    EXPECT_EQ(ListModelsWith(o).code(), absl::StatusCode::kUnavailable);
  }
  {
    SCOPED_TRACE("raw plaintext HTTP/2 on the TLS port");
    auto s = RawSocket::Connect(address_);
    ASSERT_TRUE(s.ok());
    (*s)->SendAll(std::string(kHttp2Preface) + Http2Frame(kSettings, 0, 0, ""));
    EXPECT_TRUE((*s)->WaitForClose(std::chrono::seconds(10)));
  }
  // None of those reached a handler.
  EXPECT_TRUE(CallLog("ListModels", "tenant-a").empty());
  EXPECT_TRUE(ListModelsWith(good).ok());
  EXPECT_EQ(CallLog("ListModels", "tenant-a").size(), 1u);
  const absl::Status other = traffic->Stop();
  EXPECT_TRUE(other.ok()) << other;
}

// Above the server's 64 MiB receive limit: RESOURCE_EXHAUSTED before the request is parsed, and
// the same connection goes on serving.
TEST_F(SecurityTransportTest, OversizedRequestIsRefusedAndTheConnectionGoesOn) {
  Start({});
  auto traffic = StartTraffic();
  auto channel = RawChannel(address_);
  auto stub = v1::Coordinator::NewStub(channel);
  {
    v1::PrefillRequest req;
    req.set_model("tiny");
    req.set_text(std::string((64 << 20) + 4096, 'a'));
    auto ctx = RawContext(Bearer(kTokenA), std::chrono::seconds(30));
    auto reader = stub->Prefill(ctx.get(), req);
    const grpc::Status s = Drain(reader.get());
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  }
  for (int i = 0; i < 3; ++i) {
    auto ctx = RawContext(Bearer(kTokenA), std::chrono::seconds(10));
    v1::ListModelsResponse r;
    const grpc::Status s = stub->ListModels(ctx.get(), v1::ListModelsRequest(), &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(r.models_size(), 1);
  }
  const absl::Status other = traffic->Stop();
  EXPECT_TRUE(other.ok()) << other;
  ExpectServing();
}

TEST_F(SecurityTransportTest, HugeHeadersAndFrameFloodsDoNotTakeTheServerDown) {
  Start({});
  auto traffic = StartTraffic();
  {
    SCOPED_TRACE("1 MiB of metadata through a gRPC client that allows it");
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_MAX_METADATA_SIZE, 64 << 20);
    auto stub =
        v1::Coordinator::NewStub(RawChannel(address_, grpc::InsecureChannelCredentials(), args));
    auto ctx = RawContext(Bearer(kTokenA), std::chrono::seconds(10));
    ctx->AddMetadata("x-pad", std::string(1 << 20, 'p'));
    v1::ListModelsResponse r;
    const grpc::Status s = stub->ListModels(ctx.get(), v1::ListModelsRequest(), &r);
    EXPECT_FALSE(s.ok());
  }
  const std::string path = "/sparsefill.v1.Coordinator/ListModels";
  {
    SCOPED_TRACE("HEADERS frame above the 16 KiB maximum frame size");
    auto s = RawHttp2();
    ASSERT_NE(s, nullptr);
    const std::string block =
        GrpcRequestHeaders(path, address_) + HpackLiteral("x-pad", std::string(40000, 'p'));
    s->SendAll(Http2Frame(kHeaders, kEndHeaders | kEndStream, 1, block));
    EXPECT_TRUE(s->WaitForClose(std::chrono::seconds(10)));
  }
  {
    SCOPED_TRACE("CONTINUATION frames: a header block far over the metadata limit");
    auto s = RawHttp2();
    ASSERT_NE(s, nullptr);
    bool sent = s->SendAll(Http2Frame(kHeaders, 0, 1, GrpcRequestHeaders(path, address_)));
    const std::string junk = HpackLiteral("x-junk", std::string(16000, 'j'));
    for (int i = 0; sent && i < 256; ++i) sent = s->SendAll(Http2Frame(kContinuation, 0, 1, junk));
    s->SendAll(Http2Frame(kContinuation, kEndHeaders, 1, ""));
  }
  {
    SCOPED_TRACE("PING flood, never reading the acks");
    auto s = RawHttp2();
    ASSERT_NE(s, nullptr);
    std::string pings;
    for (int i = 0; i < 4096; ++i) pings += Http2Frame(kPing, 0, 0, std::string(8, 'x'));
    for (int i = 0; i < 64 && s->SendAll(pings); ++i) {
    }
  }
  {
    SCOPED_TRACE("rapid reset: streams opened and cancelled at once");
    auto s = RawHttp2();
    ASSERT_NE(s, nullptr);
    const std::string block =
        GrpcRequestHeaders(path, address_) + HpackLiteral("authorization", Bearer(kTokenMallory));
    std::string burst;
    for (uint32_t id = 1; id < 2 * 3000; id += 2) {
      burst += Http2Frame(kHeaders, kEndHeaders, id, block);
      burst += Http2Frame(kRstStream, 0, id, std::string("\0\0\0\x08", 4));  // CANCEL
    }
    s->SendAll(burst);
  }
  const absl::Status other = traffic->Stop();
  EXPECT_TRUE(other.ok()) << other;
  ExpectServing();
}

// KNOWN FAILURE with Debian's gRPC 1.51 (hence DISABLED_; run it with
// --gtest_also_run_disabled_tests after a gRPC upgrade). A header block that never ends
// (HEADERS without END_HEADERS, then CONTINUATION frames) is buffered whole: 64 MiB of
// CONTINUATION on one connection grows the coordinator's RSS by ~60 MiB, and the memory stays
// after the connection closes; enough such connections exhaust the host (the "CONTINUATION
// flood" class fixed upstream in later gRPC releases). Nothing in the server's channel
// arguments bounds it (max metadata size, resource quota: tried). Until then, put an HTTP/2
// proxy with header-size limits in front of public endpoints.
TEST_F(SecurityTransportTest, DISABLED_ContinuationFloodMemoryIsBounded) {
  Start({});
  const std::string path = "/sparsefill.v1.Coordinator/ListModels";
  const int64_t rss_before = RssBytes((*cluster_)->coordinator().pid());
  auto s = RawHttp2();
  ASSERT_NE(s, nullptr);
  bool sent = s->SendAll(Http2Frame(kHeaders, 0, 1, GrpcRequestHeaders(path, address_)));
  const std::string junk = HpackLiteral("x-junk", std::string(16000, 'j'));
  for (int i = 0; sent && i < 4096; ++i) sent = s->SendAll(Http2Frame(kContinuation, 0, 1, junk));
  const int64_t rss_after = RssBytes((*cluster_)->coordinator().pid());
  EXPECT_GT(rss_before, 0);
  EXPECT_LT(rss_after - rss_before, int64_t{32} << 20) << "the server buffered the header block";
  ExpectServing();
}

// The serialized StreamCache request as one gRPC length-prefixed message.
std::string GrpcMessage(const google::protobuf::Message& m) {
  const std::string body = m.SerializeAsString();
  std::string out(5, '\0');
  const uint32_t n = static_cast<uint32_t>(body.size());
  out[1] = static_cast<char>(n >> 24);
  out[2] = static_cast<char>(n >> 16);
  out[3] = static_cast<char>(n >> 8);
  out[4] = static_cast<char>(n);
  return out + body;
}

// A client stalling mid-preface is closed by the handshake timeout; one that opens StreamCache
// with a zero flow-control window and then goes silent (answers no ping) is closed by
// keepalive, and its call ends. Other tenants are served throughout.
TEST_F(SecurityTransportTest, StalledClientsAreClosedAndOthersServed) {
  Start({"--handshake-timeout-ms", "2000", "--keepalive-ms", "1000", "--keepalive-timeout-ms",
         "1000"});
  auto a = client::CoordinatorClient::Connect(Tenant(kTokenA));
  ASSERT_TRUE(a.ok());
  client::PrefillRequest r;
  r.model = "tiny";
  r.tokens = prompt_;
  auto made = (*a)->Prefill(r);
  ASSERT_TRUE(made.ok()) << made.status();
  auto traffic = StartTraffic();

  std::vector<std::unique_ptr<RawSocket>> partial;
  for (int i = 0; i < 32; ++i) {
    auto s = RawSocket::Connect(address_);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE((*s)->SendAll(std::string(kHttp2Preface).substr(0, 10)));
    partial.push_back(*std::move(s));
  }
  auto loris = RawHttp2(std::string("\0\x04\0\0\0\0", 6));  // SETTINGS_INITIAL_WINDOW_SIZE = 0
  ASSERT_NE(loris, nullptr);
  v1::StreamCacheRequest req;
  req.set_cache_id(rpc::CacheIdToBytes(made->cache.id));
  ASSERT_TRUE(loris->SendAll(
      Http2Frame(kHeaders, kEndHeaders, 1,
                 GrpcRequestHeaders("/sparsefill.v1.Coordinator/StreamCache", address_) +
                     HpackLiteral("authorization", Bearer(kTokenA))) +
      Http2Frame(kData, kEndStream, 1, GrpcMessage(req))));
  const auto start = std::chrono::steady_clock::now();
  for (auto& s : partial) {
    EXPECT_TRUE(s->WaitForClose(std::chrono::seconds(15))) << "a half-sent preface was kept open";
  }
  EXPECT_TRUE(loris->WaitForClose(std::chrono::seconds(20))) << "a silent reader was kept open";
  const double closed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RecordProperty("stalled_connections_closed_after_s", std::to_string(closed_s));
  // The stalled call ended (not OK: nothing could be delivered) once its connection was gone.
  std::vector<std::string> ended;
  for (int i = 0; i < 100 && ended.empty(); ++i) {
    ended = CallLog("StreamCache", "tenant-a");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(ended.size(), 1u) << (*cluster_)->LogTail("coordinator");
  EXPECT_THAT(ended[0], ::testing::Not(::testing::HasSubstr("status=OK"))) << ended[0];
  const absl::Status other = traffic->Stop();
  EXPECT_TRUE(other.ok()) << other;
  ExpectServing();
}

// A well-behaved transport (it answers pings) under a client that never reads a StreamCache and
// set no deadline: keepalive cannot tell, so --max-connection-age-ms (GOAWAY, then
// --max-connection-age-grace-ms for running calls) is what ends the call.
TEST_F(SecurityTransportTest, ReaderThatNeverReadsIsCutOffByConnectionAge) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Sanitized servers take longer than age + grace (6 s) for the set-up prefill, whose own
  // connection would then be cut first.
  const std::string age_ms = "15000";
#else
  const std::string age_ms = "3000";
#endif
  Start({"--max-connection-age-ms", age_ms, "--max-connection-age-grace-ms", age_ms});
  auto a = client::CoordinatorClient::Connect(Tenant(kTokenA));
  ASSERT_TRUE(a.ok());
  auto prompt = NovelTokens(4096);
  ASSERT_TRUE(prompt.ok());
  client::PrefillRequest r;
  r.model = "tiny";
  r.tokens = *prompt;
  auto made = (*a)->Prefill(r);
  ASSERT_TRUE(made.ok()) << made.status();
  auto traffic = StartTraffic();
  auto stub = v1::Coordinator::NewStub(RawChannel(address_));
  grpc::ClientContext ctx;  // no deadline
  ctx.AddMetadata("authorization", Bearer(kTokenA));
  v1::StreamCacheRequest req;
  req.set_cache_id(rpc::CacheIdToBytes(made->cache.id));
  auto reader = stub->StreamCache(&ctx, req);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> ended;
  const auto limit = std::chrono::milliseconds(2 * std::stoi(age_ms) + 14000);
  while (ended.empty() && std::chrono::steady_clock::now() - start < limit) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ended = CallLog("StreamCache", "tenant-a");
  }
  const double ended_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RecordProperty("stalled_stream_ended_after_s", std::to_string(ended_s));
  ASSERT_EQ(ended.size(), 1u) << "the stalled StreamCache still runs after " << ended_s << " s";
  // Not OK: the cache is larger than what flow control lets through unread, so the handler was
  // blocked until the connection was cut.
  EXPECT_THAT(ended[0], ::testing::Not(::testing::HasSubstr("status=OK"))) << ended[0];
  ctx.TryCancel();
  const absl::Status other = traffic->Stop();
  EXPECT_TRUE(other.ok()) << other;
  ExpectServing();
}

}  // namespace
}  // namespace sparsefill::integration
