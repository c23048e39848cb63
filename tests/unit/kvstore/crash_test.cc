// SIGKILLs a writer process at random moments and reopens the store each time: no READY cache
// is ever incomplete or corrupt, no PENDING cache survives, and a crashed cache leaves no keys.
// SPARSEFILL_CRASH_RUNS sets the number of runs (default 8 for CI; the acceptance run uses 50).
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "services/kvstore/rocksdb/rocksdb_tier.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kvstore/kv_store.h"
#include "tests/testing/compare.h"
#include "tests/unit/kvstore/crash_data.h"

extern char** environ;

namespace sparsefill::kvstore {
namespace {

int CrashRuns() {
  const char* env = std::getenv("SPARSEFILL_CRASH_RUNS");
  const int n = env ? std::atoi(env) : 0;
  return n > 0 ? n : 8;
}

// The writer's log: the last event per id ('B' begun, 'R' committed, 'd' deleting, 'D' deleted).
std::map<CacheId, char> ReadLog(const std::string& path) {
  std::map<CacheId, char> last;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() != 34) continue;  // a line torn by the kill
    absl::StatusOr<CacheId> id = CacheId::FromHex(line.substr(2));
    if (id.ok()) last[*id] = line[0];
  }
  return last;
}

TEST(KvStoreCrash, KilledWriterNeverLeavesAnIncompleteReadyCache) {
  const uint64_t seed = sparsefill::testing::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  Rng rng(seed);
  const std::string dir = sparsefill::testing::MakeTempDir("kv-crash");
  const std::string db = dir + "/db";
  const std::string log = dir + "/writer.log";
  const std::string writer = sparsefill::testing::BinDir() + "/kvstore_crash_writer";
  ASSERT_TRUE(std::filesystem::exists(writer)) << writer << " is not built";
  const int runs = CrashRuns();
  int64_t verified_blocks = 0, ready_seen = 0, cleaned = 0;
  std::set<CacheId> ever_begun;

  for (int run = 0; run < runs; ++run) {
    SCOPED_TRACE(::testing::Message() << "run " << run);
    const std::string writer_seed = std::to_string(rng.NextU64() >> 1);
    std::vector<std::string> args = {writer, db, writer_seed, log};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, writer.c_str(), nullptr, nullptr, argv.data(), environ), 0);
    const int delay_ms = static_cast<int>(rng.NextU64() % 300);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    // Dying of anything but our SIGKILL (an error exit) is a failure of the writer itself.
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "writer exited on its own with status " << status << " after " << delay_ms << " ms";

    const std::map<CacheId, char> events = ReadLog(log);
    for (const auto& [id, e] : events) ever_begun.insert(id);
    std::set<CacheId> ready;
    {
      absl::StatusOr<std::unique_ptr<KvStore>> store =
          KvStore::Open(testing::CrashStoreOptions(db));
      ASSERT_TRUE(store.ok()) << store.status();
      ASSERT_TRUE((*store)->ListCaches(/*include_pending=*/true).size() ==
                  (*store)->ListCaches(false).size())
          << "a PENDING cache survived the reopen";
      for (const Manifest& m : (*store)->ListCaches(false)) {
        ASSERT_EQ(m.state, CacheState::kReady);
        ready.insert(m.id);
        const CacheLayout& l = m.layout;
        const CacheSpec spec = testing::CrashSpec(m.id);
        ASSERT_EQ(l.num_tokens, spec.layout.num_tokens) << m.id.ToHex();
        ASSERT_EQ(l.dtype, spec.layout.dtype) << m.id.ToHex();
        for (int32_t layer = 0; layer < l.num_layers; ++layer) {
          const std::vector<float> k = testing::CrashValues(m.id, l, layer, false);
          const std::vector<float> v = testing::CrashValues(m.id, l, layer, true);
          for (int32_t h = 0; h < l.kv_heads; ++h) {
            for (int64_t b = 0; b < l.num_blocks(); ++b) {
              const BlockKey key{.cache = m.id, .layer = layer, .head = h, .block = b};
              std::vector<uint8_t> got(l.BlockBytes(b));
              ASSERT_TRUE((*store)->ReadBlock(key, got).ok()) << key.ToString();
              ASSERT_EQ(got, testing::ExpectedBlock(l, k, v, h, b)) << key.ToString();
              ++verified_blocks;
            }
          }
        }
      }
      // Every cache whose Commit returned and whose delete never started is still READY.
      for (const auto& [id, e] : events) {
        if (e == 'R') {
          EXPECT_TRUE(ready.contains(id)) << "committed cache lost: " << id.ToHex();
        }
        if (e == 'D') {
          EXPECT_FALSE(ready.contains(id)) << "deleted cache back: " << id.ToHex();
        }
      }
      EXPECT_EQ((*store)->Stats().pending_caches, 0);
    }
    // Raw view: only READY manifests, and no block keys under any other cache's prefix.
    absl::StatusOr<std::unique_ptr<RocksDbTier>> raw =
        RocksDbTier::Open(db, testing::CrashStoreOptions(db).rocksdb);
    ASSERT_TRUE(raw.ok()) << raw.status();
    auto manifests = (*raw)->ListManifests();
    ASSERT_TRUE(manifests.ok()) << manifests.status();
    for (const auto& [id, bytes] : *manifests) {
      absl::StatusOr<Manifest> m = Manifest::Parse(bytes);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(m->state, CacheState::kReady) << id.ToHex();
      EXPECT_TRUE(ready.contains(id)) << id.ToHex();
    }
    auto with_blocks = (*raw)->ListBlockCaches();
    ASSERT_TRUE(with_blocks.ok()) << with_blocks.status();
    for (const CacheId& id : *with_blocks) {
      EXPECT_TRUE(ready.contains(id)) << "blocks left behind by " << id.ToHex();
    }
    for (const CacheId& id : ever_begun) {
      if (ready.contains(id)) continue;
      absl::StatusOr<int64_t> n = (*raw)->CountBlocks(id);
      ASSERT_TRUE(n.ok()) << n.status();
      EXPECT_EQ(*n, 0) << "partial cache " << id.ToHex() << " left keys";
      ++cleaned;
    }
    ready_seen += static_cast<int64_t>(ready.size());
  }
  std::printf(
      "crash test: %d runs, %lld READY caches checked (%lld blocks), %lld gone caches "
      "checked empty\n",
      runs, static_cast<long long>(ready_seen), static_cast<long long>(verified_blocks),
      static_cast<long long>(cleaned));
  // The test must have exercised something: caches were begun and some became READY.
  EXPECT_GT(ever_begun.size(), 0u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sparsefill::kvstore
