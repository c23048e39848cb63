// The Coordinator gRPC service end to end: the public client library against the real adapter,
// bearer tokens mapped to tenants, health, and fake workers behind it.
#include "services/coordinator/coordinator_service.h"

#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/common/auth_channel.h"
#include "services/coordinator/grpc_worker.h"
#include "sparsefill/client/coordinator_client.h"
#include "tests/testing/compare.h"
#include "tests/unit/coordinator/fake_worker.h"
#include "tests/unit/rpc/grpc_probe.h"

namespace sparsefill::coordinator::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kAcmeToken[] = "acme-token-0123456789abcdef";
constexpr char kGlobexToken[] = "globex-token-0123456789abcdef";

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = sparsefill::testing::FreshSeed();
    dir_ = (std::filesystem::temp_directory_path() / ("sf-coord-svc-" + std::to_string(seed_)))
               .string();
    std::vector<std::unique_ptr<WorkerApi>> apis;
    for (int i = 0; i < 2; ++i) {
      fakes_.push_back(std::make_unique<FakeWorkerServer>());
      ASSERT_TRUE(fakes_.back()->Start().ok());
      client::WorkerClient::Options o;
      o.address = fakes_.back()->address;
      apis.push_back(std::move(GrpcWorker::Connect(o).value()));
    }
    store_ = std::move(kvstore::RecordStore::Open(dir_).value());
    coord_ = std::move(
        Coordinator::Create(CoordinatorOptions(),
                            std::make_unique<WorkerPool>(std::move(apis), std::chrono::seconds(1)),
                            store_.get())
            .value());
    auto tokens = auth::TokenTable::Parse(
        std::string(kAcmeToken) + " acme\n" + kGlobexToken + " globex\n", "test tokens");
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    tokens_ = std::move(*tokens);
    rpc::CallHandler::Options ho;
    ho.tokens = &tokens_;
    service_ = std::make_unique<CoordinatorService>(coord_.get(), ho);
    auto server = rpc::StartServer(rpc::ServerOptions(), {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    server_->SetServing(true);
    address_ = "127.0.0.1:" + std::to_string(server_->port());
  }
  void TearDown() override {
    server_.reset();
    service_.reset();
    coord_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<client::CoordinatorClient> Client(const std::string& token) {
    client::ConnectionOptions o;
    o.address = address_;
    o.token = token;
    o.default_timeout = std::chrono::seconds(10);
    return std::move(client::CoordinatorClient::Connect(o).value());
  }

  uint64_t seed_ = 0;
  std::string dir_;
  std::vector<std::unique_ptr<FakeWorkerServer>> fakes_;
  std::unique_ptr<kvstore::RecordStore> store_;
  std::unique_ptr<Coordinator> coord_;
  auth::TokenTable tokens_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<rpc::RunningServer> server_;
  std::string address_;
};

TEST_F(ServiceTest, UnauthenticatedCallsAreRefused) {
  for (const std::string& token : {std::string(), std::string("not-a-known-token-0123456789")}) {
    auto c = Client(token);
    EXPECT_EQ(c->ListModels().status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(c->GetCache(kvstore::CacheId::Random()).status().code(),
              absl::StatusCode::kUnauthenticated);
  }
  grpc::Status hs;
  auto channel = auth::CreateChannel(address_, auth::ChannelSecurityOptions(), "");
  ASSERT_TRUE(channel.ok());
  EXPECT_EQ(rpc::test_support::HealthCheck(*channel, "", &hs), 1) << hs.error_message();
}

TEST_F(ServiceTest, PrefillStreamAndTenantIsolationOverGrpc) {
  SCOPED_TRACE(seed_);
  auto acme = Client(kAcmeToken);
  auto globex = Client(kGlobexToken);
  auto models = acme->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 1u);

  Rng rng(seed_);
  client::PrefillRequest req;
  req.model = "tiny";
  for (int i = 0; i < 90; ++i) req.tokens.push_back(static_cast<int32_t>(rng.NextU64() % kVocab));
  int layers_seen = 0;
  auto result = acme->Prefill(req, [&](const client::PrefillProgress& p) {
    if (p.kind == client::PrefillProgress::Kind::kLayerDone) ++layers_seen;
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(layers_seen, kLayers);
  EXPECT_EQ(result->cache.state, client::CacheState::kReady);
  EXPECT_EQ(result->stats.workers, 2);
  const kvstore::CacheId id = result->cache.id;

  // The client verifies every block's xxh64 against the data before the callback sees it.
  int64_t blocks = 0;
  bool cold_seen = false, hot_after_cold = false;
  auto stats = acme->StreamCache(id, /*hot_only=*/false, [&](const client::KvChunk& c) {
    blocks += c.num_blocks;
    if (!c.hot) cold_seen = true;
    if (c.hot && cold_seen) hot_after_cold = true;
    return absl::OkStatus();
  });
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(blocks, int64_t{kLayers} * kKvHeads * 6);
  EXPECT_FALSE(hot_after_cold);

  // Another tenant cannot see, stream or delete it: NOT_FOUND, like a cache that does not exist.
  EXPECT_EQ(globex->GetCache(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(globex->StreamCache(id, true, [](const client::KvChunk&) { return absl::OkStatus(); })
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(globex->DeleteCache(id).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(acme->GetCache(id).ok());

  // Validation errors travel as INVALID_ARGUMENT naming the field.
  req.tokens[3] = static_cast<int32_t>(kVocab);
  auto bad = acme->Prefill(req);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("tokens[3]"));

  ASSERT_TRUE(acme->DeleteCache(id).ok());
  EXPECT_EQ(acme->GetCache(id).status().code(), absl::StatusCode::kNotFound);
  for (auto& f : fakes_) EXPECT_FALSE(f->service.HasShard(rpc::CacheIdToBytes(id)));
}

}  // namespace
}  // namespace sparsefill::coordinator::testing
