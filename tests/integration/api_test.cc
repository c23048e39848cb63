// The public API at its edges, against the real coordinator process: bearer-token auth with
// tenant isolation, and every kind of bad Prefill input answered INVALID_ARGUMENT naming what is
// wrong (the coordinator stays healthy afterwards).
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sparsefill/v1/coordinator.grpc.pb.h"
#include "tests/integration/harness.h"

namespace sparsefill::integration {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

constexpr char kTokenA[] = "tenant-a-token-0123456789abcdef";
constexpr char kTokenB[] = "tenant-b-token-fedcba9876543210";

client::PrefillRequest Request(std::vector<int32_t> tokens) {
  client::PrefillRequest r;
  r.model = "tiny";
  r.tokens = std::move(tokens);
  return r;
}

TEST(AuthTest, TokensMapToTenantsAndTenantsSeeOnlyTheirCaches) {
  auto dir = tools::TempDir::Create("sparsefill-it-tokens");
  ASSERT_TRUE(dir.ok());
  const std::string tokens_file = (*dir)->path() + "/tokens";
  std::ofstream(tokens_file) << "# token tenant\n"
                             << kTokenA << " tenant-a\n"
                             << kTokenB << " tenant-b\n";
  auto cluster = StartCluster(Spec(1, 2, {"--tokens", tokens_file}));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  TestCluster& c = **cluster;
  auto prompt = NovelTokens(300);
  ASSERT_TRUE(prompt.ok());

  for (const std::string token : {"", "not-a-known-token-0000000000"}) {
    SCOPED_TRACE("token '" + token + "'");
    auto anon = Connect(c->coordinator_address(), token);
    ASSERT_TRUE(anon.ok());
    auto models = (*anon)->ListModels();
    EXPECT_EQ(models.status().code(), absl::StatusCode::kUnauthenticated) << models.status();
    auto prefill = (*anon)->Prefill(Request(*prompt));
    EXPECT_EQ(prefill.status().code(), absl::StatusCode::kUnauthenticated) << prefill.status();
  }

  auto a = Connect(c->coordinator_address(), kTokenA);
  auto b = Connect(c->coordinator_address(), kTokenB);
  ASSERT_TRUE(a.ok() && b.ok());
  auto made = (*a)->Prefill(Request(*prompt));
  ASSERT_TRUE(made.ok()) << made.status();
  const kvstore::CacheId id = made->cache.id;

  // Tenant B learns nothing about A's cache: the same answer as for a cache that does not exist.
  auto get = (*b)->GetCache(id);
  EXPECT_EQ(get.status().code(), absl::StatusCode::kNotFound) << get.status();
  auto stream = (*b)->StreamCache(id, false, [](const client::KvChunk&) {
    return absl::InternalError("tenant B received a chunk of tenant A's cache");
  });
  EXPECT_EQ(stream.status().code(), absl::StatusCode::kNotFound) << stream.status();
  auto fetch = (*b)->FetchBlocks(
      id, {{.layer = 0, .kv_head = 0, .first_block = 0, .num_blocks = 1}},
      [](const client::KvChunk&) { return absl::InternalError("tenant B fetched A's blocks"); });
  EXPECT_EQ(fetch.status().code(), absl::StatusCode::kNotFound) << fetch.status();
  const absl::Status del = (*b)->DeleteCache(id);
  EXPECT_EQ(del.code(), absl::StatusCode::kNotFound) << del;

  // A still has it, whole.
  auto mine = StreamWholeCache(**a, id);
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->info.state, client::CacheState::kReady);
  EXPECT_EQ(mine->verified, mine->info.layout.total_blocks());
  ASSERT_TRUE((*a)->DeleteCache(id).ok());
  EXPECT_EQ((*a)->GetCache(id).status().code(), absl::StatusCode::kNotFound);
}

class BadInputTest : public ::testing::Test {
 protected:
  static constexpr int64_t kMaxTokens = 2048;
  static void SetUpTestSuite() {
    auto cluster = StartCluster(Spec(1, 2, {"--max-tokens", std::to_string(kMaxTokens)}));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    auto c = Connect((*cluster_)->coordinator_address());
    ASSERT_TRUE(c.ok());
    client_ = *std::move(c);
  }
  // The request must fail with INVALID_ARGUMENT naming `what`; the coordinator then still serves.
  void ExpectInvalid(const client::PrefillRequest& r, const std::string& what) {
    auto result = client_->Prefill(r);
    ASSERT_FALSE(result.ok()) << "accepted a request with a bad " << what;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(what)) << result.status();
  }

  static TestCluster* cluster_;
  std::unique_ptr<client::CoordinatorClient> client_;
};
TestCluster* BadInputTest::cluster_ = nullptr;

// The client library refuses an empty prompt before sending it, so the server is asked through
// the raw stub: its own validation must answer too.
TEST_F(BadInputTest, EmptyPromptReachingTheServer) {
  auto channel =
      grpc::CreateChannel((*cluster_)->coordinator_address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Coordinator::NewStub(channel);
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    v1::PrefillRequest req;
    req.set_model("tiny");
    if (variant == 1) req.mutable_tokens();  // tokens set, but no ids
    if (variant == 2) req.set_text("");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    auto reader = stub->Prefill(&ctx, req);
    v1::PrefillProgress progress;
    EXPECT_FALSE(reader->Read(&progress)) << "the server started an empty prefill";
    const grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), AnyOf(HasSubstr("prompt"), HasSubstr("empty")));
  }
  // And through the client, which names the field itself.
  auto result = client_->Prefill(Request({}));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("prompt"));
}

TEST_F(BadInputTest, OverTheMaximumLength) {
  auto tokens = NovelTokens(kMaxTokens + 1);
  ASSERT_TRUE(tokens.ok());
  ExpectInvalid(Request(*tokens), std::to_string(kMaxTokens));
}

TEST_F(BadInputTest, TokenIdOutsideTheVocabulary) {
  auto models = client_->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 1u);
  const int64_t vocab = (*models)[0].vocab_size;
  ASSERT_GT(vocab, 0);
  auto tokens = NovelTokens(64);
  ASSERT_TRUE(tokens.ok());
  (*tokens)[17] = static_cast<int32_t>(vocab);
  ExpectInvalid(Request(*tokens), std::to_string(vocab));
  (*tokens)[17] = -5;
  ExpectInvalid(Request(*tokens), "-5");
}

TEST_F(BadInputTest, UnknownModel) {
  auto tokens = NovelTokens(64);
  ASSERT_TRUE(tokens.ok());
  client::PrefillRequest r = Request(*tokens);
  r.model = "no-such-model";
  ExpectInvalid(r, "no-such-model");
}

TEST_F(BadInputTest, BadSelectionOverrides) {
  auto tokens = NovelTokens(64);
  ASSERT_TRUE(tokens.ok());
  struct Case {
    const char* field;
    void (*set)(client::SelectionOverrides&);
  };
  const Case cases[] = {
      {"block_size", [](client::SelectionOverrides& s) { s.block_size = 0; }},
      {"block_size", [](client::SelectionOverrides& s) { s.block_size = -16; }},
      {"topk", [](client::SelectionOverrides& s) { s.topk = -1; }},
      {"lambda", [](client::SelectionOverrides& s) { s.lambda = 1.5f; }},
      {"local_tokens", [](client::SelectionOverrides& s) { s.local_tokens = -512; }},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.field);
    client::PrefillRequest r = Request(*tokens);
    r.selection.policy = engine::Policy::kPhsa;
    k.set(r.selection);
    ExpectInvalid(r, k.field);
  }
}

// After all of that the coordinator still admits and completes a good request.
TEST_F(BadInputTest, GoodRequestStillServed) {
  auto tokens = NovelTokens(128);
  ASSERT_TRUE(tokens.ok());
  auto result = client_->Prefill(Request(*tokens));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->cache.state, client::CacheState::kReady);
}

}  // namespace
}  // namespace sparsefill::integration
