// Bearer tokens and tenant isolation against the real processes (issue 9 item 5, issue 4 item
// 6): missing, malformed, unknown and expired tokens are UNAUTHENTICATED; a tenant cannot tell
// another tenant's cache from one that does not exist; workers refuse client tokens; cache ids
// cannot be guessed. Each attack runs while another tenant's prefill + stream loop goes on, and
// that loop must complete normally.
#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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

using ::testing::HasSubstr;

constexpr char kExpiredToken[] = "sec-expired-token-a0b1c2d3e4f5";
constexpr char kFutureToken[] = "sec-future-token-f5e4d3c2b1a0";
constexpr char kSoonToken[] = "sec-soon-expiring-token-9a8b7c";
constexpr auto kCallTimeout = std::chrono::seconds(20);

std::string CacheIdBytes(const kvstore::CacheId& id) { return rpc::CacheIdToBytes(id); }

kvstore::CacheId RandomId(Rng& rng) { return kvstore::CacheId{rng.NextU64(), rng.NextU64()}; }

// A coordinator with the tenant tokens (one expired, one expiring `soon_s` seconds after the
// start, one far in the future) in front of one worker that knows only the internal token.
class SecurityAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto files = tools::TempDir::Create("sparsefill-sec-auth");
    ASSERT_TRUE(files.ok()) << files.status();
    files_ = *std::move(files);
    const std::string d = files_->path();
    // Far enough ahead that a loaded machine still reaches the "still valid" check in time.
    soon_ = absl::Now() + absl::Seconds(12);
    const std::string soon = absl::FormatTime(absl::RFC3339_full, soon_, absl::UTCTimeZone());
    ASSERT_TRUE(WriteFile(
        d + "/tokens", absl::StrCat("# token tenant [expires=TIME]\n", kTokenA, " tenant-a\n",
                                    kTokenB, " tenant-b\n", kTokenMallory, " mallory\n",
                                    kExpiredToken, " tenant-a expires=2001-02-03T04:05:06Z\n",
                                    kFutureToken, " tenant-a\texpires=2999-01-01T00:00:00+09:00\n",
                                    kSoonToken, " tenant-a expires=", soon, "\n")));
    ASSERT_TRUE(WriteFile(d + "/worker-tokens", absl::StrCat(kInternalToken, " internal\n")));
    ASSERT_TRUE(WriteFile(d + "/internal-token", absl::StrCat(kInternalToken, "\n")));
    auto cluster = StartCluster(
        Spec(1, 2, {"--tokens", d + "/tokens", "--worker-token-file", d + "/internal-token"},
             {"--tokens", d + "/worker-tokens", "--peer-token-file", d + "/internal-token"}));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    auto prompt = NovelTokens(300);
    ASSERT_TRUE(prompt.ok()) << prompt.status();
    prompt_ = *std::move(prompt);
    address_ = (*cluster_)->coordinator_address();
    channel_ = RawChannel(address_);
    stub_ = v1::Coordinator::NewStub(channel_);
  }

  client::ConnectionOptions Tenant(const std::string& token) const {
    client::ConnectionOptions o;
    o.address = address_;
    o.token = token;
    o.default_timeout = std::chrono::seconds(60);
    return o;
  }
  std::unique_ptr<TenantTraffic> StartTraffic(const std::string& token) {
    auto t = std::make_unique<TenantTraffic>(Tenant(token), prompt_);
    t->Start();
    return t;
  }
  // A READY cache of tenant A.
  kvstore::CacheId PrefillAsA() {
    auto a = client::CoordinatorClient::Connect(Tenant(kTokenA));
    EXPECT_TRUE(a.ok());
    if (!a.ok()) return {};
    client::PrefillRequest r;
    r.model = "tiny";
    r.tokens = prompt_;
    auto made = (*a)->Prefill(r);
    EXPECT_TRUE(made.ok()) << made.status();
    return made.ok() ? made->cache.id : kvstore::CacheId{};
  }
  void ExpectAIntact(const kvstore::CacheId& id) {
    auto a = client::CoordinatorClient::Connect(Tenant(kTokenA));
    ASSERT_TRUE(a.ok());
    auto mine = StreamWholeCache(**a, id);
    ASSERT_TRUE(mine.ok()) << mine.status();
    EXPECT_EQ(mine->info.state, client::CacheState::kReady);
    EXPECT_EQ(mine->verified, mine->info.layout.total_blocks());
  }

  // Every public method called with `authorization` (verbatim; "" sends none), the status of
  // each by method name.
  std::vector<std::pair<std::string, grpc::Status>> CallEveryMethod(
      const std::vector<std::string>& authorization, const std::string& cache_id) {
    auto ctx = [&] {
      auto c = RawContext("", kCallTimeout);
      for (const std::string& a : authorization) c->AddMetadata("authorization", a);
      return c;
    };
    std::vector<std::pair<std::string, grpc::Status>> out;
    {
      auto c = ctx();
      v1::ListModelsResponse r;
      out.emplace_back("ListModels", stub_->ListModels(c.get(), v1::ListModelsRequest(), &r));
    }
    {
      auto c = ctx();
      v1::PrefillRequest req;
      req.set_model("tiny");
      req.mutable_tokens()->mutable_ids()->Add(prompt_.begin(), prompt_.end());
      auto reader = stub_->Prefill(c.get(), req);
      out.emplace_back("Prefill", Drain(reader.get()));
    }
    {
      auto c = ctx();
      v1::GetCacheRequest req;
      req.set_cache_id(cache_id);
      v1::CacheInfo r;
      out.emplace_back("GetCache", stub_->GetCache(c.get(), req, &r));
    }
    {
      auto c = ctx();
      v1::StreamCacheRequest req;
      req.set_cache_id(cache_id);
      auto reader = stub_->StreamCache(c.get(), req);
      out.emplace_back("StreamCache", Drain(reader.get()));
    }
    {
      auto c = ctx();
      v1::FetchBlocksRequest req;
      req.set_cache_id(cache_id);
      v1::BlockRange* r = req.add_ranges();
      r->set_num_blocks(1);
      auto reader = stub_->FetchBlocks(c.get(), req);
      out.emplace_back("FetchBlocks", Drain(reader.get()));
    }
    {
      auto c = ctx();
      v1::DeleteCacheRequest req;
      req.set_cache_id(cache_id);
      v1::DeleteCacheResponse r;
      out.emplace_back("DeleteCache", stub_->DeleteCache(c.get(), req, &r));
    }
    return out;
  }

  std::unique_ptr<tools::TempDir> files_;
  std::unique_ptr<TestCluster> cluster_;
  std::vector<int32_t> prompt_;
  std::string address_;
  absl::Time soon_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(SecurityAuthTest, MissingMalformedUnknownAndExpiredTokensAreUnauthenticated) {
  const kvstore::CacheId target = PrefillAsA();
  auto traffic = StartTraffic(kTokenB);
  const std::string a_prefix(kTokenA, sizeof(kTokenA) - 2);
  struct Case {
    const char* what;
    std::vector<std::string> authorization;
    const char* message;  // expected in the status message
  };
  const std::vector<Case> cases = {
      {"no authorization", {}, "missing bearer token"},
      {"empty value", {""}, "missing bearer token"},
      {"basic scheme", {"Basic dGVuYW50LWE6cGFzc3dvcmQ="}, "not of the form"},
      {"scheme without token", {"Bearer"}, "not of the form"},
      {"scheme and blanks", {"Bearer    "}, "not of the form"},
      {"token without scheme", {kTokenA}, "not of the form"},
      {"two tokens", {Bearer(kTokenA), Bearer(kTokenB)}, "more than one"},
      {"unknown token", {Bearer("sec-unknown-token-000000000000")}, "unknown bearer token"},
      {"prefix of a token", {Bearer(a_prefix)}, "unknown bearer token"},
      {"token with a suffix", {Bearer(std::string(kTokenA) + "0")}, "unknown bearer token"},
      {"expired token", {Bearer(kExpiredToken)}, "expired at 2001-02-03T04:05:06"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    std::vector<std::string> auth = k.authorization;
    if (auth.size() == 1 && auth[0].empty()) auth.clear();
    for (const auto& [method, s] : CallEveryMethod(auth, CacheIdBytes(target))) {
      SCOPED_TRACE(method);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr(k.message));
      // Messages never echo what the caller sent.
      EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr("sec-")));
    }
  }
  // Tokens with an expiry in the future work; one that expires while the server runs stops
  // working then, without a restart (the server's clock is read on every call).
  Rng rng(testing::FreshSeed());
  ASSERT_LT(absl::Now() + absl::Seconds(1), soon_)
      << "the machine is too slow for this test: the short-lived token expired before its check";
  for (const char* token : {kFutureToken, kSoonToken}) {
    for (const auto& [method, s] : CallEveryMethod({Bearer(token)}, CacheIdBytes(RandomId(rng)))) {
      if (method == "ListModels") {
        EXPECT_TRUE(s.ok()) << token << ": " << s.error_message();
      }
      if (method == "GetCache") {
        EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
      }
    }
  }
  const absl::Duration wait = soon_ - absl::Now() + absl::Milliseconds(200);
  if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
  for (const auto& [method, s] : CallEveryMethod({Bearer(kSoonToken)}, CacheIdBytes(target))) {
    SCOPED_TRACE(method);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("expired"));
  }
  const absl::Status other = traffic->Stop();
  EXPECT_TRUE(other.ok()) << other;
  ExpectAIntact(target);
}

// Tenant B asking for A's cache gets, byte for byte up to the id, the answer for an id nobody
// holds: no existence oracle. DeleteCache from B leaves A's cache whole.
TEST_F(SecurityAuthTest, WrongTenantGetsExactlyTheAnswerForAMissingCache) {
  const kvstore::CacheId target = PrefillAsA();
  auto traffic = StartTraffic(kTokenB);
  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  Rng rng(seed);
  const kvstore::CacheId missing = RandomId(rng);
  const auto for_target = CallEveryMethod({Bearer(kTokenMallory)}, CacheIdBytes(target));
  const auto for_missing = CallEveryMethod({Bearer(kTokenMallory)}, CacheIdBytes(missing));
  ASSERT_EQ(for_target.size(), for_missing.size());
  for (size_t i = 0; i < for_target.size(); ++i) {
    const std::string& method = for_target[i].first;
    SCOPED_TRACE(method);
    if (method == "ListModels" || method == "Prefill") continue;  // no cache involved
    const grpc::Status& t = for_target[i].second;
    const grpc::Status& m = for_missing[i].second;
    EXPECT_EQ(t.error_code(), grpc::StatusCode::NOT_FOUND) << t.error_message();
    EXPECT_EQ(t.error_code(), m.error_code());
    std::string tm = t.error_message(), mm = m.error_message();
    const std::string th = target.ToHex(), mh = missing.ToHex();
    if (size_t at = tm.find(th); at != std::string::npos) tm.replace(at, th.size(), "<id>");
    if (size_t at = mm.find(mh); at != std::string::npos) mm.replace(at, mh.size(), "<id>");
    EXPECT_EQ(tm, mm);
    EXPECT_EQ(t.error_details(), m.error_details());
  }
  // The same through the client library, hot-only streams included.
  auto mallory = client::CoordinatorClient::Connect(Tenant(kTokenMallory));
  ASSERT_TRUE(mallory.ok());
  for (bool hot_only : {false, true}) {
    auto s = (*mallory)->StreamCache(target, hot_only, [](const client::KvChunk&) {
      return absl::InternalError("mallory received a chunk of tenant A's cache");
    });
    EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound) << s.status();
  }
  const absl::Status other = traffic->Stop();
  EXPECT_TRUE(other.ok()) << other;
  ExpectAIntact(target);
}

// The worker's internal service takes only the internal identity: a tenant's token (valid at
// the coordinator) or none is UNAUTHENTICATED for every worker method, so a client cannot read
// or delete shards behind the coordinator's back.
TEST_F(SecurityAuthTest, WorkerRefusesClientTokens) {
  const kvstore::CacheId target = PrefillAsA();
  auto traffic = StartTraffic(kTokenB);
  auto worker = v1::Worker::NewStub(RawChannel((*cluster_)->worker_addresses()[0]));
  auto call_all = [&](const std::string& authorization) {
    std::vector<std::pair<std::string, grpc::Status>> out;
    {
      auto c = RawContext(authorization, kCallTimeout);
      v1::ListModelsResponse r;
      out.emplace_back("DescribeModels",
                       worker->DescribeModels(c.get(), v1::ListModelsRequest(), &r));
    }
    {
      auto c = RawContext(authorization, kCallTimeout);
      v1::ListShardsResponse r;
      out.emplace_back("ListShards", worker->ListShards(c.get(), v1::ListShardsRequest(), &r));
    }
    {
      auto c = RawContext(authorization, kCallTimeout);
      v1::FetchBlocksRequest req;
      req.set_cache_id(CacheIdBytes(target));
      req.add_ranges()->set_num_blocks(1);
      auto reader = worker->ReadBlocks(c.get(), req);
      out.emplace_back("ReadBlocks", Drain(reader.get()));
    }
    {
      auto c = RawContext(authorization, kCallTimeout);
      v1::ShardManifestRequest req;
      req.set_cache_id(CacheIdBytes(target));
      v1::ShardManifest r;
      out.emplace_back("GetShardManifest", worker->GetShardManifest(c.get(), req, &r));
    }
    {
      auto c = RawContext(authorization, kCallTimeout);
      v1::DeleteShardRequest req;
      req.set_cache_id(CacheIdBytes(target));
      v1::DeleteShardResponse r;
      out.emplace_back("DeleteShard", worker->DeleteShard(c.get(), req, &r));
    }
    return out;
  };
  for (const std::string& auth : {std::string(), Bearer(kTokenA), Bearer(kTokenB)}) {
    SCOPED_TRACE("authorization '" + auth + "'");
    for (const auto& [method, s] : call_all(auth)) {
      SCOPED_TRACE(method);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    }
  }
  // The internal identity is served (the refusals above are about the token, not the method).
  auto c = RawContext(Bearer(kInternalToken), kCallTimeout);
  v1::ListShardsResponse shards;
  const grpc::Status s = worker->ListShards(c.get(), v1::ListShardsRequest(), &shards);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(shards.shards_size(), 1);
  const absl::Status other = traffic->Stop();
  EXPECT_TRUE(other.ok()) << other;
  ExpectAIntact(target);
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// Cache ids are 128 bits from the OS CSPRNG (kvstore::CacheId::Random, getrandom): every bit is
// a fair coin and ids never repeat. 2,000 guesses from another tenant all get NOT_FOUND, and a
// tenant's own lookups stay fast while they run.
TEST_F(SecurityAuthTest, CacheIdsCannotBeGuessed) {
  constexpr int kIds = 4096;
  std::set<std::pair<uint64_t, uint64_t>> seen;
  std::vector<int> ones(128, 0);
  for (int i = 0; i < kIds; ++i) {
    const kvstore::CacheId id = kvstore::CacheId::Random();
    seen.emplace(id.hi, id.lo);
    for (int b = 0; b < 64; ++b) {
      ones[static_cast<size_t>(b)] += static_cast<int>((id.hi >> b) & 1);
      ones[static_cast<size_t>(64 + b)] += static_cast<int>((id.lo >> b) & 1);
    }
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kIds));
  for (int b = 0; b < 128; ++b) {
    // 0.5 +- 0.1 is over 12 standard deviations for 4096 draws: a stuck or biased bit fails.
    EXPECT_NEAR(ones[static_cast<size_t>(b)] / double{kIds}, 0.5, 0.1) << "bit " << b;
  }

  const kvstore::CacheId mine = PrefillAsA();
  auto a = client::CoordinatorClient::Connect(Tenant(kTokenA));
  ASSERT_TRUE(a.ok());
  auto lookup_ms = [&](int n) {
    std::vector<double> ms;
    for (int i = 0; i < n; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      auto info = (*a)->GetCache(mine);
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      EXPECT_TRUE(info.ok()) << info.status();
    }
    return ms;
  };
  const double before = Median(lookup_ms(40));

  const uint64_t seed = testing::FreshSeed();
  SCOPED_TRACE(seed);
  constexpr int kThreads = 4, kGuessesPerThread = 500;
  std::atomic<int> not_found{0}, other{0};
  std::vector<std::thread> guessers;
  for (int t = 0; t < kThreads; ++t) {
    guessers.emplace_back([&, t] {
      Rng rng(seed + static_cast<uint64_t>(t));
      auto stub = v1::Coordinator::NewStub(RawChannel(address_));
      for (int i = 0; i < kGuessesPerThread; ++i) {
        auto c = RawContext(Bearer(kTokenMallory), kCallTimeout);
        v1::GetCacheRequest req;
        req.set_cache_id(CacheIdBytes(RandomId(rng)));
        v1::CacheInfo r;
        const grpc::Status s = stub->GetCache(c.get(), req, &r);
        (s.error_code() == grpc::StatusCode::NOT_FOUND ? not_found : other).fetch_add(1);
      }
    });
  }
  auto traffic = StartTraffic(kTokenB);
  std::vector<double> during;
  while (not_found.load() + other.load() < kThreads * kGuessesPerThread * 3 / 4) {
    for (double x : lookup_ms(5)) during.push_back(x);
  }
  for (std::thread& t : guessers) t.join();
  const double while_guessing = Median(during);
  EXPECT_EQ(not_found.load(), kThreads * kGuessesPerThread);
  EXPECT_EQ(other.load(), 0);
  // The guesses share this machine's cores with the lookups, so some slow-down is the CPU's;
  // the bound catches a server that serializes or throttles everyone behind the guesser.
  RecordProperty("lookup_ms_before", std::to_string(before));
  RecordProperty("lookup_ms_while_guessing", std::to_string(while_guessing));
  EXPECT_LT(while_guessing, std::max(10 * before, 50.0))
      << "median GetCache " << before << " ms before, " << while_guessing << " ms while guessing";
  const absl::Status s = traffic->Stop();
  EXPECT_TRUE(s.ok()) << s;
  ExpectAIntact(mine);
}

}  // namespace
}  // namespace sparsefill::integration
