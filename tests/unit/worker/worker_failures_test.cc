// How a worker's failures reach the others and how its housekeeping copes with them: a rank that
// refuses its request before its exchange exists aborts its peers at once; a post to a peer that
// never answers ends when the job is cancelled or aborted, not at the peer's deadline; TTL expiry
// goes on past a cache it cannot remove and reports it; peer mailboxes are collected on the
// expiry timer, without new jobs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gtest/gtest.h"
#include "services/worker/grpc_shard_exchange.h"
#include "sparsefill/common/status.h"
#include "tests/unit/worker/worker_test_util.h"

namespace sparsefill::worker {
namespace {

using namespace test_support;  // NOLINT: the test helpers of this folder

// A TCP port that accepts connections (the kernel's backlog) and never says a word: every gRPC
// call to it waits until its deadline or cancellation.
class BlackHole {
 public:
  BlackHole() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        listen(fd_, 16) != 0 || getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ADD_FAILURE() << "cannot open a listening socket";
      return;
    }
    address_ = absl::StrCat("127.0.0.1:", ntohs(a.sin_port));
  }
  ~BlackHole() {
    if (fd_ >= 0) close(fd_);
  }
  const std::string& address() const { return address_; }

 private:
  int fd_ = -1;
  std::string address_;
};

std::vector<int32_t> RandomTokens(size_t n, int64_t vocab, Rng& rng) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(vocab));
  return t;
}

// Sparse, so every rank all-gathers block summaries with every other from layer 0 on.
engine::SelectionConfig Sparse16() {
  engine::SelectionConfig s = engine::SelectionConfig::InfLlmV2();
  s.block_size = 16;
  s.kernel_size = 32;
  s.kernel_stride = 16;
  s.init_blocks = 1;
  s.local_tokens = 64;
  s.topk = 9;
  s.dense_below = 0;
  return s;
}

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(WorkerFailuresTest, ARankThatRefusesItsRequestAbortsItsPeersFast) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < 2; ++i) {
    NodeOptions o;
    o.peer_timeout = std::chrono::seconds(30);
    nodes.push_back(StartNode(o));
    ASSERT_NE(nodes.back(), nullptr);
  }
  auto model = engine::Engine::Create(kFixture, {});
  ASSERT_TRUE(model.ok()) << model.status();
  const auto tokens = RandomTokens(200, (*model)->config().vocab_size, rng);
  const std::vector<int64_t> bounds = {0, 96, 200};
  const std::vector<std::string> addresses = {nodes[0]->address, nodes[1]->address};
  // Refused by the service (an unknown model) and by the worker (the wrong number of tokens):
  // both before rank 1 has an exchange.
  struct Case {
    std::string name;
    std::function<void(v1::ShardRequest&)> spoil;
    std::string cause;
  };
  const std::vector<Case> cases = {
      {"unknown model", [](v1::ShardRequest& r) { r.set_model("no-such-model"); }, "no-such-model"},
      {"tokens short", [](v1::ShardRequest& r) { r.mutable_tokens()->mutable_ids()->RemoveLast(); },
       "tokens"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const kvstore::CacheId id = kvstore::CacheId::Random();
    std::vector<ShardCall> calls(2);
    std::vector<std::thread> threads;
    for (int32_t r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        v1::ShardRequest req = MakeRequest(id, r, bounds, addresses, tokens, Sparse16());
        if (r == 1) c.spoil(req);
        calls[r] = CallExecute(*nodes[r]->Client(), req);
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_FALSE(calls[1].status.ok());
    EXPECT_NE(calls[1].status.message().find(c.cause), std::string::npos) << calls[1].status;
    EXPECT_FALSE(calls[0].status.ok());
    EXPECT_NE(calls[0].status.message().find("rank 1 aborted"), std::string::npos)
        << calls[0].status;
    EXPECT_NE(calls[0].status.message().find(c.cause), std::string::npos) << calls[0].status;
    EXPECT_LT(calls[0].seconds, 10.0) << "rank 0 waited for its deadline";
  }
}

TEST(WorkerFailuresTest, PostsToASilentPeerEndWithCancellationOrAnAbort) {
  BlackHole hole;
  ASSERT_FALSE(hole.address().empty());
  PeerChannels channels({});
  GrpcExchangeOptions options;
  options.peer_timeout = std::chrono::seconds(30);
  options.poll = std::chrono::milliseconds(20);
  auto layout = engine::ShardLayout::FromBounds({0, 16, 32}, 16);
  ASSERT_TRUE(layout.ok()) << layout.status();
  for (const bool by_cancel : {true, false}) {
    SCOPED_TRACE(by_cancel ? "cancelled" : "aborted by a peer");
    std::atomic<bool> cancelled{false};
    ShardJob job;
    job.id = kvstore::CacheId::Random();
    job.rank = 0;
    job.peer_addresses = {"127.0.0.1:1", hole.address()};
    job.cancelled = [&] { return cancelled.load(); };
    auto box = std::make_shared<JobMailbox>(job.id.ToHex());
    auto x = GrpcShardExchange::Create(job, *layout, box, &channels, options);
    ASSERT_TRUE(x.ok()) << x.status();
    const auto t0 = std::chrono::steady_clock::now();
    absl::Status got;
    std::thread caller([&] { got = (*x)->AllGather(0, "summaries", "payload").status(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (by_cancel) {
      cancelled.store(true);
    } else {
      box->Abort(absl::InternalError("rank 1 aborted: out of memory"));
    }
    caller.join();
    const double seconds = SecondsSince(t0);
    EXPECT_LT(seconds, 5.0) << "the post sat out the peer's deadline: " << got;
    if (by_cancel) {
      EXPECT_EQ(got.code(), absl::StatusCode::kCancelled) << got;
    } else {
      EXPECT_EQ(got.code(), absl::StatusCode::kInternal) << got;
      EXPECT_NE(got.message().find("out of memory"), std::string::npos) << got;
    }
  }
}

std::unique_ptr<Worker> MakeWorker(const std::string& dir, Clock* clock,
                                   std::chrono::milliseconds linger) {
  WorkerOptions o;
  o.models = {{.name = kModel, .dir = kFixture}};
  o.store_dir = dir;
  o.clock = clock;
  o.mailbox.linger = linger;
  auto w = Worker::Create(o);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *std::move(w) : nullptr;
}

// A one-layer cache straight into the worker's store, as the bench installs one.
absl::Status Install(Worker& w, const kvstore::CacheId& id, int64_t ttl_ms, Rng& rng) {
  kvstore::CacheSpec spec;
  spec.model = kModel;
  spec.tenant = "t";
  spec.layout = {.dtype = DType::kBF16,
                 .num_layers = 1,
                 .kv_heads = 1,
                 .head_dim = 8,
                 .block_size = 16,
                 .num_tokens = 32};
  spec.ttl_ms = ttl_ms;
  ShardRecord r;
  r.id = id;
  r.token_end = 32;
  r.num_tokens = 32;
  r.world_size = 1;
  r.policy = "dense";
  SF_RETURN_IF_ERROR(w.records().Put(r));
  SF_RETURN_IF_ERROR(w.store().BeginCache(id, spec));
  const auto k = sparsefill::testing::RandomNormal(32 * 8, rng);
  const auto v = sparsefill::testing::RandomNormal(32 * 8, rng);
  kvstore::LayerData d;
  d.num_tokens = 32;
  d.k = k.data();
  d.v = v.data();
  SF_RETURN_IF_ERROR(w.store().WriteLayer(id, d));
  return w.store().Commit(id);
}

TEST(WorkerFailuresTest, ExpiryGoesOnPastACacheItCannotRemoveAndReportsIt) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const std::string dir = sparsefill::testing::MakeTempDir("worker_expiry");
  FakeClock clock;
  auto w = MakeWorker(dir, &clock, std::chrono::seconds(120));
  ASSERT_NE(w, nullptr);
  const kvstore::CacheId stuck = kvstore::CacheId::Random();
  const kvstore::CacheId fine = kvstore::CacheId::Random();
  ASSERT_TRUE(Install(*w, stuck, 1000, rng).ok());  // created first: expired first
  ASSERT_TRUE(Install(*w, fine, 1000, rng).ok());
  // The first cache's record cannot be removed: its file became a non-empty directory.
  std::filesystem::path record;
  for (const auto& f : std::filesystem::directory_iterator(dir + "/shards")) {
    if (f.path().filename().string().starts_with(stuck.ToHex())) record = f.path();
  }
  ASSERT_FALSE(record.empty());
  std::filesystem::remove(record);
  std::filesystem::create_directory(record);
  std::ofstream(record / "pin") << "x";

  clock.Advance(2000);
  absl::StatusOr<int64_t> n = w->ExpireCaches();
  EXPECT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find(stuck.ToHex()), std::string::npos) << n.status();
  // The other cache went completely, record included.
  EXPECT_EQ(w->records().Get(fine).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(w->GetShard(fine).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(w->ListShards().empty());
  std::filesystem::remove_all(dir);
}

TEST(WorkerFailuresTest, PeerMailboxesAreCollectedWithoutNewJobs) {
  const std::string dir = sparsefill::testing::MakeTempDir("worker_mailbox");
  auto w = MakeWorker(dir, nullptr, std::chrono::milliseconds(50));
  ASSERT_NE(w, nullptr);
  // A peer posted for a job that never started here, and a job that ran and finished.
  auto orphan = w->mailbox().Open("orphan");
  ASSERT_TRUE(orphan.ok());
  auto done = w->mailbox().Attach("done");
  ASSERT_TRUE(done.ok());
  w->mailbox().Detach("done", absl::OkStatus());
  ASSERT_EQ(w->mailbox().size(), 2u);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  ASSERT_TRUE(w->ExpireCaches().ok());
  EXPECT_EQ(w->mailbox().size(), 0u);
  // Whoever still waits on the orphan learns that the job never started here.
  EXPECT_EQ((*orphan)->failure().code(), absl::StatusCode::kDeadlineExceeded);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sparsefill::worker
