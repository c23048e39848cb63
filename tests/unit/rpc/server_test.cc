// A real in-process gRPC server on 127.0.0.1:0: bearer-token auth and tenants, the handler
// helper's logs/metrics/counts, deadlines and cancellation of streams, health and reflection,
// and the client library end to end.
#include <gtest/gtest.h>

#include <atomic>
#include <sstream>
#include <thread>

#include "services/common/auth_channel.h"
#include "services/rpc/server.h"
#include "sparsefill/client/coordinator_client.h"
#include "tests/testing/compare.h"
#include "tests/unit/rpc/grpc_probe.h"
#include "tests/unit/rpc/test_coordinator.h"

namespace sparsefill::rpc {
namespace {

using test_support::TestCoordinator;

// Counts what the metrics component will export; a real (if small) RpcMetrics implementation.
class CountingMetrics final : public RpcMetrics {
 public:
  void RecordCall(std::string_view method, absl::StatusCode code, double seconds) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_[std::string(method) + "/" + absl::StatusCodeToString(code)]++;
    EXPECT_GE(seconds, 0.0);
  }
  void RecordStreamMessage(std::string_view method, size_t bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    stream_bytes_[std::string(method)] += bytes;
  }
  int64_t calls(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_[key];
  }
  uint64_t stream_bytes(const std::string& method) {
    std::lock_guard<std::mutex> lock(mu_);
    return stream_bytes_[method];
  }

 private:
  std::mutex mu_;
  std::map<std::string, int64_t> calls_;
  std::map<std::string, uint64_t> stream_bytes_;
};

std::string RandomToken(Rng& rng) {
  std::string t;
  for (int i = 0; i < 32; ++i) t += "0123456789abcdefghijklmnopqrstuv"[rng.NextU64() % 32];
  return t;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = sparsefill::testing::FreshSeed();
    Rng rng(seed_);
    token_a_ = RandomToken(rng);
    token_b_ = RandomToken(rng);
    auto tokens = auth::TokenTable::Parse(
        "# test\n" + token_a_ + " acme\n" + token_b_ + " globex\n", "test tokens");
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    tokens_ = *std::move(tokens);
    CallHandler::Options handler_options;
    handler_options.tokens = &tokens_;
    handler_options.logger = &logger_;
    handler_options.metrics = &metrics_;
    service_ = std::make_unique<TestCoordinator>(handler_options);
    auto server = StartServer(ServerOptions{}, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = "127.0.0.1:" + std::to_string(server_->port());
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& token) {
    auto ch = auth::CreateChannel(address_, auth::ChannelSecurityOptions{}, token);
    EXPECT_TRUE(ch.ok()) << ch.status();
    return *ch;
  }

  std::unique_ptr<client::CoordinatorClient> Client(
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    client::ConnectionOptions o;
    o.address = address_;
    o.token = token_a_;
    o.default_timeout = timeout;
    auto c = client::CoordinatorClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return *std::move(c);
  }

  kvstore::CacheLayout SmallLayout() {
    kvstore::CacheLayout l;
    l.dtype = DType::kBF16;
    l.num_layers = 2;
    l.kv_heads = 2;
    l.head_dim = 16;
    l.block_size = 16;
    l.num_tokens = 16 * 4 + 5;  // 5 blocks, the last partial
    return l;
  }

  // Waits up to 3 s for the server to finish the last stream.
  std::optional<absl::Status> AwaitStreamEnd() {
    for (int i = 0; i < 300; ++i) {
      if (auto s = service_->last_stream_status()) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
  }

  uint64_t seed_ = 0;
  std::string token_a_, token_b_;
  auth::TokenTable tokens_;
  std::ostringstream log_;
  OstreamCallLogger logger_{&log_};
  CountingMetrics metrics_;
  std::unique_ptr<TestCoordinator> service_;
  std::unique_ptr<RunningServer> server_;
  std::string address_;
};

grpc::Status CallListModels(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& per_call_token = "") {
  auto stub = v1::Coordinator::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (!per_call_token.empty()) ctx.AddMetadata("authorization", "Bearer " + per_call_token);
  v1::ListModelsResponse reply;
  return stub->ListModels(&ctx, v1::ListModelsRequest(), &reply);
}

TEST_F(ServerTest, BearerTokenAcceptedAndHandlerSeesItsTenant) {
  SCOPED_TRACE(seed_);
  grpc::Status s = CallListModels(Channel(token_a_));
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(service_->last_tenant(), "acme");
  // Per call, on one channel: the tenant follows each call's own token.
  const auto bare = Channel("");
  ASSERT_TRUE(CallListModels(bare, token_b_).ok());
  EXPECT_EQ(service_->last_tenant(), "globex");
  ASSERT_TRUE(CallListModels(bare, token_a_).ok());
  EXPECT_EQ(service_->last_tenant(), "acme");
  EXPECT_EQ(service_->handler().CallCount("ListModels", absl::StatusCode::kOk), 3);
  EXPECT_EQ(metrics_.calls("ListModels/OK"), 3);
  EXPECT_NE(log_.str().find("rpc ListModels peer=ipv"), std::string::npos) << log_.str();
  EXPECT_NE(log_.str().find("tenant=globex status=OK"), std::string::npos) << log_.str();
}

TEST_F(ServerTest, MissingOrUnknownTokenIsUnauthenticatedAndTheHandlerDoesNotRun) {
  SCOPED_TRACE(seed_);
  grpc::Status missing = CallListModels(Channel(""));
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED) << missing.error_message();
  EXPECT_NE(missing.error_message().find("missing bearer token"), std::string::npos);

  std::string unknown = token_a_;
  unknown.back() = unknown.back() == 'x' ? 'y' : 'x';
  grpc::Status bad = CallListModels(Channel(unknown));
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(bad.error_message().find(unknown), std::string::npos) << "token echoed back";

  auto stub = v1::Coordinator::NewStub(Channel(""));
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Basic " + token_a_);
  v1::ListModelsResponse reply;
  EXPECT_EQ(stub->ListModels(&ctx, v1::ListModelsRequest(), &reply).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  EXPECT_EQ(service_->last_tenant(), "");  // no handler body ran
  EXPECT_EQ(service_->handler().CallCount("ListModels", absl::StatusCode::kUnauthenticated), 3);
  EXPECT_EQ(service_->handler().CallCount("ListModels", absl::StatusCode::kOk), 0);
  EXPECT_NE(log_.str().find("status=UNAUTHENTICATED"), std::string::npos);
  EXPECT_EQ(log_.str().find(unknown), std::string::npos) << "token logged";
}

TEST_F(ServerTest, HealthServesWithoutATokenAndFollowsSetServing) {
  grpc::Status status;
  EXPECT_EQ(test_support::HealthCheck(Channel(""), "", &status), 1) << status.error_message();
  server_->SetServing(false);
  EXPECT_EQ(test_support::HealthCheck(Channel(""), "", &status), 2) << status.error_message();
  server_->SetServing(true);
  EXPECT_EQ(test_support::HealthCheck(Channel(""), "", &status), 1);
}

TEST_F(ServerTest, ReflectionListsTheServices) {
  grpc::Status status;
  const std::vector<std::string> names = test_support::ReflectionServices(Channel(""), &status);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_NE(std::find(names.begin(), names.end(), "sparsefill.v1.Coordinator"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "grpc.health.v1.Health"), names.end());
}

TEST_F(ServerTest, StreamPastItsDeadlineEndsWithDeadlineExceededOnBothSides) {
  SCOPED_TRACE(seed_);
  const kvstore::CacheId id = service_->AddCache(SmallLayout(), seed_);
  service_->SetEndless(id);
  auto client = Client(std::chrono::milliseconds(400));  // default timeout, no CallOptions
  int64_t chunks = 0;
  const auto start = std::chrono::steady_clock::now();
  auto stats = client->StreamCache(id, false, [&](const client::KvChunk&) {
    ++chunks;
    return absl::OkStatus();
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kDeadlineExceeded) << stats.status();
  EXPECT_GE(seconds, 0.35);
  EXPECT_LT(seconds, 1.5);
  EXPECT_GT(chunks, 2);  // it did stream until the deadline
  const auto server_end = AwaitStreamEnd();
  ASSERT_TRUE(server_end.has_value()) << "the server's stream never stopped";
  EXPECT_EQ(server_end->code(), absl::StatusCode::kDeadlineExceeded) << *server_end;
}

TEST_F(ServerTest, ClientCallbackErrorCancelsTheStream) {
  SCOPED_TRACE(seed_);
  const kvstore::CacheId id = service_->AddCache(SmallLayout(), seed_);
  service_->SetEndless(id);
  auto client = Client();
  int chunks = 0;
  auto stats = client->StreamCache(id, false, [&](const client::KvChunk&) -> absl::Status {
    if (++chunks == 3) return absl::AbortedError("decode node is full");
    return absl::OkStatus();
  });
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kAborted) << stats.status();
  EXPECT_NE(std::string(stats.status().message()).find("decode node is full"), std::string::npos);
  const auto server_end = AwaitStreamEnd();
  ASSERT_TRUE(server_end.has_value()) << "the server's stream never stopped";
  EXPECT_EQ(server_end->code(), absl::StatusCode::kCancelled) << *server_end;
}

TEST_F(ServerTest, ClientStreamsAndVerifiesEveryBlock) {
  SCOPED_TRACE(seed_);
  const kvstore::CacheLayout layout = SmallLayout();
  const kvstore::CacheId id = service_->AddCache(layout, seed_);
  auto client = Client();
  std::vector<std::string> got(layout.total_blocks());
  auto stats = client->StreamCache(id, false, [&](const client::KvChunk& c) -> absl::Status {
    EXPECT_EQ(c.cache, id);
    EXPECT_EQ(c.tier, kvstore::Tier::kHost);
    size_t offset = 0;
    for (int32_t i = 0; i < c.num_blocks; ++i) {
      const int64_t b = c.first_block + i;
      const size_t n = LayoutBlockBytes(layout, b);
      got[layout.Index(c.layer, c.kv_head, b)] = std::string(c.data.substr(offset, n));
      offset += n;
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->blocks, layout.total_blocks());
  EXPECT_EQ(stats->chunks, 2 * 2 * 3);
  EXPECT_EQ(metrics_.stream_bytes("StreamCache") > stats->bytes, true);  // + message framing
  for (int64_t i = 0; i < layout.total_blocks(); ++i) {
    ASSERT_EQ(got[i], service_->Block(id, i)) << "block index " << i;
  }
}

TEST_F(ServerTest, CorruptedBlockIsDataLossNamingIt) {
  SCOPED_TRACE(seed_);
  const kvstore::CacheId id = service_->AddCache(SmallLayout(), seed_);
  service_->SetCorrupt(id);
  auto client = Client();
  int delivered = 0;
  auto stats = client->StreamCache(id, false, [&](const client::KvChunk&) {
    ++delivered;
    return absl::OkStatus();
  });
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kDataLoss) << stats.status();
  EXPECT_NE(std::string(stats.status().message()).find("layer 0 head 0 block 1"), std::string::npos)
      << stats.status();
  EXPECT_EQ(delivered, 0);  // the bad chunk is the first; nothing unverified reaches the caller
}

TEST_F(ServerTest, ClientPrefillReportsProgressAndTheResult) {
  SCOPED_TRACE(seed_);
  auto client = Client();
  client::PrefillRequest req;
  req.model = "tiny";
  Rng rng(seed_);
  req.tokens.resize(40 + rng.NextU64() % 100);
  for (int32_t& t : req.tokens) t = static_cast<int32_t>(rng.NextU64() % 1000);
  std::vector<client::PrefillProgress> events;
  auto result =
      client->Prefill(req, [&](const client::PrefillProgress& p) { events.push_back(p); });
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].kind, client::PrefillProgress::Kind::kAdmitted);
  EXPECT_EQ(events[0].num_tokens, static_cast<int64_t>(req.tokens.size()));
  EXPECT_EQ(events[2].kind, client::PrefillProgress::Kind::kLayerDone);
  EXPECT_EQ(events[2].layer, 1);
  EXPECT_EQ(result->cache.id, events[0].cache);
  EXPECT_EQ(result->cache.state, client::CacheState::kReady);
  EXPECT_EQ(result->cache.layout.num_tokens, static_cast<int64_t>(req.tokens.size()));
  EXPECT_EQ(result->stats.policy, "phsa");
  EXPECT_EQ(service_->last_tenant(), "acme");

  // An override that breaks the config comes back INVALID_ARGUMENT naming the field.
  req.selection.topk = 0;
  auto bad = client->Prefill(req);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_NE(std::string(bad.status().message()).find("selection.topk"), std::string::npos);
  // Client-side checks need no round trip.
  client::PrefillRequest both = req;
  both.text = "hello";
  EXPECT_EQ(client->Prefill(both).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ServerTest, ClientGetDeleteListAndBadIds) {
  SCOPED_TRACE(seed_);
  auto client = Client();
  const kvstore::CacheId id = service_->AddCache(SmallLayout(), seed_);
  auto info = client->GetCache(id);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->layout.num_tokens, SmallLayout().num_tokens);
  ASSERT_TRUE(client->DeleteCache(id).ok());
  EXPECT_EQ(client->GetCache(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client->DeleteCache(id).code(), absl::StatusCode::kNotFound);

  auto models = client->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ((*models)[0].name, "tiny");
  EXPECT_EQ((*models)[0].default_policy, engine::Policy::kPhsa);

  // A 15-byte cache id sent by a raw client is INVALID_ARGUMENT naming the field.
  auto stub = v1::Coordinator::NewStub(Channel(token_a_));
  grpc::ClientContext ctx;
  v1::GetCacheRequest req;
  req.set_cache_id(std::string(15, '\x01'));
  v1::CacheInfo reply;
  const grpc::Status s = stub->GetCache(&ctx, req, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("cache_id: must be 16 bytes, got 15"), std::string::npos)
      << s.error_message();
}

TEST(Deadline, ChildDeadlineKeepsAMarginAndAlwaysHasOne) {
  const Deadline now = Now();
  ChildDeadlineOptions o;
  o.margin = std::chrono::milliseconds(100);
  o.max_timeout = std::chrono::seconds(30);
  auto child = ChildDeadline(now + std::chrono::seconds(2), o, now);
  ASSERT_TRUE(child.ok());
  EXPECT_EQ(*child, now + std::chrono::milliseconds(1900));
  auto capped = ChildDeadline(now + std::chrono::hours(2), o, now);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(*capped, now + std::chrono::seconds(30));
  auto unbounded = ChildDeadline(kNoDeadline, o, now);
  ASSERT_TRUE(unbounded.ok());
  EXPECT_EQ(*unbounded, now + std::chrono::seconds(30));
  EXPECT_EQ(ChildDeadline(now + std::chrono::milliseconds(50), o, now).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  o.margin = std::chrono::milliseconds(-1);
  EXPECT_EQ(ChildDeadline(now, o, now).status().code(), absl::StatusCode::kInvalidArgument);

  EXPECT_TRUE(CheckDeadline(kNoDeadline, "x").ok());
  EXPECT_EQ(CheckDeadline(now - std::chrono::seconds(1), "Prefill", now).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(TimeLeft(kNoDeadline), std::nullopt);
  EXPECT_EQ(TimeLeft(now + std::chrono::seconds(3), now), std::chrono::milliseconds(3000));
  grpc::ClientContext ctx;
  EXPECT_EQ(SetTimeout(&ctx, std::chrono::milliseconds(0)).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(SetTimeout(&ctx, std::chrono::milliseconds(500)).ok());
  EXPECT_LE(ctx.deadline(), Now() + std::chrono::milliseconds(500));
}

TEST(Server, HealthAndReflectionCanBeTurnedOff) {
  ServerOptions o;
  o.health = false;
  o.reflection = false;
  TestCoordinator service{CallHandler::Options{}};
  auto server = StartServer(o, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = auth::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     auth::ChannelSecurityOptions{}, "");
  ASSERT_TRUE(channel.ok());
  grpc::Status status;
  EXPECT_EQ(test_support::HealthCheck(*channel, "", &status), -1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_TRUE(test_support::ReflectionServices(*channel, &status).empty());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // The service itself still answers, without authentication when no tokens are configured.
  EXPECT_TRUE(CallListModels(*channel).ok());
}

TEST(Server, BadOptionsAndBusyPortAreReported) {
  ServerOptions o;
  o.address = "nohostport";
  EXPECT_EQ(StartServer(o, {}).status().code(), absl::StatusCode::kInvalidArgument);
  o.address = "127.0.0.1:0";
  o.max_message_bytes = 1024;
  EXPECT_EQ(StartServer(o, {}).status().code(), absl::StatusCode::kInvalidArgument);
  auto first = StartServer(ServerOptions{}, {});
  ASSERT_TRUE(first.ok()) << first.status();
  ServerOptions same;
  same.address = "127.0.0.1:" + std::to_string((*first)->port());
  EXPECT_EQ(StartServer(same, {}).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace sparsefill::rpc
