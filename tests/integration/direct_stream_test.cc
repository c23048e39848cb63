// Direct streams (issue 4): a READY cache streamed by the decode node straight from the workers
// with coordinator-issued stream tickets, against the real processes. The bytes equal the
// relay's; tickets are single-use, single-cache and expire; wrong, used, expired and other-tenant
// tickets get PERMISSION_DENIED with one message whether or not the cache exists; a missing one
// UNAUTHENTICATED; clients cannot mint tickets; an unreachable worker falls back to the relay.
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/rpc/convert.h"
#include "sparsefill/client/coordinator_client.h"
#include "sparsefill/common/rng.h"
#include "tests/integration/harness.h"
#include "tests/integration/security_support.h"
#include "tests/testing/compare.h"

namespace sparsefill::integration {
namespace {

constexpr auto kCallTimeout = std::chrono::seconds(30);

// A cache's bytes per (layer, head) in block order, whatever the chunking and the order chunks
// came in; blocks that came twice or not at all make it fail.
struct Collected {
  std::map<std::tuple<int32_t, int32_t, int64_t>, std::string> chunks;
  int64_t blocks = 0;
  int64_t hot_blocks = 0;
  std::map<std::pair<int32_t, int32_t>, std::string> Joined() const {
    std::map<std::pair<int32_t, int32_t>, std::string> out;
    for (const auto& [key, data] : chunks) {
      out[{std::get<0>(key), std::get<1>(key)}] += data;  // map order: by first block
    }
    return out;
  }
};

absl::StatusOr<std::pair<Collected, client::StreamStats>> Collect(client::CoordinatorClient& c,
                                                                  const kvstore::CacheId& id,
                                                                  bool hot_only) {
  Collected got;
  std::mutex mu;
  client::CallOptions call;
  call.timeout = kCallTimeout;
  absl::StatusOr<client::StreamStats> stats = c.StreamCache(
      id, hot_only,
      [&](const client::KvChunk& k) -> absl::Status {
        std::lock_guard<std::mutex> lock(mu);
        auto [it, fresh] =
            got.chunks.emplace(std::make_tuple(k.layer, k.kv_head, k.first_block), k.data);
        if (!fresh)
          return absl::DataLossError(
              absl::StrCat("chunk at block ", k.first_block, " of layer ", k.layer, " came twice"));
        got.blocks += k.num_blocks;
        if (k.hot) got.hot_blocks += k.num_blocks;
        return absl::OkStatus();
      },
      call);
  if (!stats.ok()) return stats.status();
  return std::make_pair(std::move(got), *stats);
}

class DirectStreamTest : public ::testing::Test {
 protected:
  // Two workers behind a coordinator with tenant tokens; `coordinator_flags` and `worker_flags`
  // are added to the usual ones.
  void Start(std::vector<std::string> coordinator_flags = {},
             std::vector<std::string> worker_flags = {}) {
    auto files = tools::TempDir::Create("sparsefill-direct");
    ASSERT_TRUE(files.ok()) << files.status();
    files_ = *std::move(files);
    const std::string d = files_->path();
    ASSERT_TRUE(
        WriteFile(d + "/tokens", absl::StrCat(kTokenA, " tenant-a\n", kTokenB, " tenant-b\n")));
    ASSERT_TRUE(WriteFile(d + "/worker-tokens", absl::StrCat(kInternalToken, " internal\n")));
    ASSERT_TRUE(WriteFile(d + "/internal-token", absl::StrCat(kInternalToken, "\n")));
    std::vector<std::string> cf = {"--tokens", d + "/tokens", "--worker-token-file",
                                   d + "/internal-token"};
    cf.insert(cf.end(), coordinator_flags.begin(), coordinator_flags.end());
    std::vector<std::string> wf = {"--tokens", d + "/worker-tokens", "--peer-token-file",
                                   d + "/internal-token"};
    wf.insert(wf.end(), worker_flags.begin(), worker_flags.end());
    auto cluster = StartCluster(Spec(2, 2, cf, wf));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    auto prompt = NovelTokens(700);
    ASSERT_TRUE(prompt.ok()) << prompt.status();
    prompt_ = *std::move(prompt);
    stub_ = v1::Coordinator::NewStub(RawChannel((*cluster_)->coordinator_address()));
  }

  std::unique_ptr<client::CoordinatorClient> Client(const std::string& token, bool direct) {
    client::ConnectionOptions o;
    o.address = (*cluster_)->coordinator_address();
    o.token = token;
    o.default_timeout = kCallTimeout;
    o.direct_streams = direct;
    if (!tls_ca_.empty()) {
      o.security = client::Security::kTls;
      o.ca_file = tls_ca_;
    }
    auto c = client::CoordinatorClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  kvstore::CacheId Prefill(const std::string& token) {
    auto c = Client(token, true);
    if (c == nullptr) return {};
    client::PrefillRequest r;
    r.model = "tiny";
    r.tokens = prompt_;
    auto made = c->Prefill(r);
    EXPECT_TRUE(made.ok()) << made.status();
    if (!made.ok()) return {};
    EXPECT_EQ(made->stats.workers, 2) << "the prompt should span both workers";
    return made->cache.id;
  }

  // StreamCache with allow_direct through a raw stub: the plan, or the status.
  absl::StatusOr<v1::DirectStreamPlan> Plan(const std::string& token, const std::string& cache) {
    auto ctx = RawContext(Bearer(token), kCallTimeout);
    v1::StreamCacheRequest req;
    req.set_cache_id(cache);
    req.set_allow_direct(true);
    auto reader = stub_->StreamCache(ctx.get(), req);
    v1::KvChunk first;
    const bool got = reader->Read(&first);
    const grpc::Status s = Drain(reader.get());
    if (!s.ok())
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    if (!got || !first.has_direct_plan()) return absl::InternalError("no direct plan came");
    return first.direct_plan();
  }

  // Worker.StreamShard on worker `address` with a raw stub and no bearer token.
  grpc::Status StreamShard(const std::string& address, const std::string& ticket,
                           const std::string& cache, int64_t* messages = nullptr) {
    auto stub = v1::Worker::NewStub(RawChannel(address));
    auto ctx = RawContext("", kCallTimeout);
    v1::StreamShardRequest req;
    req.set_ticket(ticket);
    req.set_cache_id(cache);
    auto reader = stub->StreamShard(ctx.get(), req);
    return Drain(reader.get(), messages);
  }

  std::unique_ptr<tools::TempDir> files_;
  std::unique_ptr<TestCluster> cluster_;
  std::vector<int32_t> prompt_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;  // plaintext: not for the TLS cluster
  std::string tls_ca_;                           // clients use TLS with these roots when set
};

TEST_F(DirectStreamTest, DirectBytesEqualTheRelays) {
  // One hot block per (layer, head) of a shard: the rest is cold, so both passes are compared.
  ASSERT_NO_FATAL_FAILURE(Start({}, {"--hot-blocks", "1"}));
  const kvstore::CacheId id = Prefill(kTokenA);
  auto direct = Client(kTokenA, true);
  auto relay = Client(kTokenA, false);
  ASSERT_NE(direct, nullptr);
  ASSERT_NE(relay, nullptr);
  auto info = relay->GetCache(id);
  ASSERT_TRUE(info.ok()) << info.status();
  for (bool hot_only : {false, true}) {
    SCOPED_TRACE(hot_only ? "hot_only" : "whole cache");
    auto d = Collect(*direct, id, hot_only);
    ASSERT_TRUE(d.ok()) << d.status();
    auto r = Collect(*relay, id, hot_only);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(d->second.direct_blocks, d->second.blocks);
    EXPECT_EQ(d->second.relayed_shards, 0);
    EXPECT_EQ(r->second.direct_blocks, 0);
    EXPECT_EQ(d->second.bytes, r->second.bytes);
    EXPECT_EQ(d->first.blocks, r->first.blocks);
    EXPECT_EQ(d->first.hot_blocks, r->first.hot_blocks);
    if (!hot_only) {
      EXPECT_EQ(d->first.blocks, info->layout.total_blocks());
      EXPECT_LT(d->first.hot_blocks, d->first.blocks) << "the test wants cold blocks too";
    } else {
      EXPECT_EQ(d->first.blocks, d->first.hot_blocks);
    }
    const auto dj = d->first.Joined();
    const auto rj = r->first.Joined();
    ASSERT_EQ(dj.size(), rj.size());
    for (const auto& [key, bytes] : rj) {
      auto it = dj.find(key);
      ASSERT_NE(it, dj.end()) << "layer " << key.first << " head " << key.second;
      EXPECT_TRUE(it->second == bytes)
          << "layer " << key.first << " head " << key.second << ": direct and relayed bytes differ";
    }
  }
}

// A cluster on TLS (coordinator, workers, peers): decode nodes reach the workers with TLS too,
// verified against the connection's roots.
TEST_F(DirectStreamTest, DirectStreamsUseTlsWhenTheClusterDoes) {
  auto certs = tools::TempDir::Create("sparsefill-direct-certs");
  ASSERT_TRUE(certs.ok()) << certs.status();
  const std::string d = (*certs)->path();
  ASSERT_TRUE(MakeTestCertificates(d).ok());
  ASSERT_NO_FATAL_FAILURE(Start({"--tls-cert", d + "/server.pem", "--tls-key", d + "/server.key",
                                 "--worker-tls", "--worker-ca", d + "/ca.pem"},
                                {"--tls-cert", d + "/server.pem", "--tls-key", d + "/server.key",
                                 "--peer-ca", d + "/ca.pem"}));
  tls_ca_ = d + "/ca.pem";
  const kvstore::CacheId id = Prefill(kTokenA);
  auto direct = Client(kTokenA, true);
  auto relay = Client(kTokenA, false);
  ASSERT_NE(direct, nullptr);
  ASSERT_NE(relay, nullptr);
  auto dc = Collect(*direct, id, /*hot_only=*/false);
  ASSERT_TRUE(dc.ok()) << dc.status();
  auto rc = Collect(*relay, id, /*hot_only=*/false);
  ASSERT_TRUE(rc.ok()) << rc.status();
  EXPECT_EQ(dc->second.relayed_shards, 0);
  EXPECT_EQ(dc->second.direct_blocks, dc->second.blocks);
  EXPECT_GT(dc->second.blocks, 0);
  EXPECT_TRUE(dc->first.Joined() == rc->first.Joined());
  // A worker reached in plaintext refuses the TLS-less decode node: nothing is served in clear.
  int64_t messages = 0;
  const grpc::Status s = StreamShard((*cluster_)->worker_addresses()[0], "x", "y", &messages);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_EQ(messages, 0);
}

TEST_F(DirectStreamTest, TicketsAreSingleUseSingleCacheAndTenantBound) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const kvstore::CacheId a = Prefill(kTokenA);
  const kvstore::CacheId b = Prefill(kTokenB);
  const std::string a_bytes = rpc::CacheIdToBytes(a);
  const std::string b_bytes = rpc::CacheIdToBytes(b);
  const std::vector<std::string>& workers = (*cluster_)->worker_addresses();

  auto plan = Plan(kTokenA, a_bytes);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->shards_size(), 2);
  EXPECT_EQ(plan->shards(0).address(), workers[0]);
  EXPECT_EQ(plan->shards(1).address(), workers[1]);
  EXPECT_EQ(plan->shards(0).ticket().size(), 16u);
  EXPECT_NE(plan->shards(0).ticket(), plan->shards(1).ticket());

  // No ticket: UNAUTHENTICATED.
  grpc::Status s = StreamShard(workers[0], "", a_bytes);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  // A made-up ticket: PERMISSION_DENIED; its message is the one every refusal gets.
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const std::string guessed = rpc::CacheIdToBytes(kvstore::CacheId{rng.NextU64(), rng.NextU64()});
  const grpc::Status denied = StreamShard(workers[0], guessed, a_bytes);
  ASSERT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED) << denied.error_message();
  // Shard 0's ticket at the other worker: unknown there.
  s = StreamShard(workers[1], plan->shards(0).ticket(), a_bytes);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(), denied.error_message());
  // A good ticket works once.
  int64_t messages = 0;
  s = StreamShard(workers[1], plan->shards(1).ticket(), a_bytes, &messages);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_GT(messages, 0);
  s = StreamShard(workers[1], plan->shards(1).ticket(), a_bytes);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(), denied.error_message());

  // Tenant B's ticket (for its own cache) presented for A's cache, and for a cache that does not
  // exist: the same answer, so B learns nothing about A's caches.
  auto plan_b = Plan(kTokenB, b_bytes);
  ASSERT_TRUE(plan_b.ok()) << plan_b.status();
  const grpc::Status other = StreamShard(workers[0], plan_b->shards(0).ticket(), a_bytes);
  const std::string missing = rpc::CacheIdToBytes(kvstore::CacheId{rng.NextU64(), rng.NextU64()});
  const grpc::Status none = StreamShard(workers[1], plan_b->shards(1).ticket(), missing);
  EXPECT_EQ(other.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(other.error_message(), denied.error_message());
  EXPECT_EQ(none.error_message(), denied.error_message());
  // Those tickets were spent: B's own cache needs a new plan.
  s = StreamShard(workers[0], plan_b->shards(0).ticket(), b_bytes);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // At the coordinator, B asking for a plan of A's cache is answered like a missing cache.
  auto b_on_a = Plan(kTokenB, a_bytes);
  auto b_on_none = Plan(kTokenB, missing);
  ASSERT_FALSE(b_on_a.ok());
  EXPECT_EQ(b_on_a.status().code(), b_on_none.status().code());
  EXPECT_EQ(b_on_a.status().code(), absl::StatusCode::kNotFound);

  // A client token cannot mint tickets at a worker (it holds only internal tokens).
  {
    auto stub = v1::Worker::NewStub(RawChannel(workers[0]));
    auto ctx = RawContext(Bearer(kTokenA), kCallTimeout);
    v1::StreamTicket t;
    t.set_ticket(guessed);
    t.set_cache_id(a_bytes);
    t.set_tenant("tenant-a");
    t.set_ttl_ms(10000);
    v1::StreamTicketAck ack;
    const grpc::Status minted = stub->IssueStreamTicket(ctx.get(), t, &ack);
    EXPECT_EQ(minted.error_code(), grpc::StatusCode::UNAUTHENTICATED) << minted.error_message();
    s = StreamShard(workers[0], guessed, a_bytes);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
}

TEST_F(DirectStreamTest, ExpiredTicketsAreRefusedAndUnreachableWorkersFallBackToTheRelay) {
  // Every worker advertises an address nobody listens on: direct streams fail at once.
  ASSERT_NO_FATAL_FAILURE(
      Start({"--direct-ticket-ttl-ms", "300"}, {"--advertise-address", "127.0.0.1:1"}));
  const kvstore::CacheId id = Prefill(kTokenA);
  const std::string id_bytes = rpc::CacheIdToBytes(id);
  const std::vector<std::string>& workers = (*cluster_)->worker_addresses();

  auto plan = Plan(kTokenA, id_bytes);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->shards(0).address(), "127.0.0.1:1");
  EXPECT_EQ(plan->ticket_ttl_ms(), 300);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  const grpc::Status expired = StreamShard(workers[0], plan->shards(0).ticket(), id_bytes);
  EXPECT_EQ(expired.error_code(), grpc::StatusCode::PERMISSION_DENIED) << expired.error_message();

  auto direct = Client(kTokenA, true);
  auto relay = Client(kTokenA, false);
  ASSERT_NE(direct, nullptr);
  ASSERT_NE(relay, nullptr);
  auto d = Collect(*direct, id, /*hot_only=*/false);
  ASSERT_TRUE(d.ok()) << d.status();
  auto r = Collect(*relay, id, /*hot_only=*/false);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(d->second.relayed_shards, 2);
  EXPECT_EQ(d->second.direct_blocks, 0);
  EXPECT_EQ(d->first.blocks, r->first.blocks);
  EXPECT_TRUE(d->first.Joined() == r->first.Joined());
}

}  // namespace
}  // namespace sparsefill::integration
