// kvstore_crash_writer <store dir> <seed> <log file>: writes caches forever (random sizes; most
// committed, some aborted, some abandoned PENDING, some deleted) until the crash test SIGKILLs
// it. Each step is appended to the log with write(2) before ("B", "d") or after ("R", "D") it
// happens, so the test knows which caches were begun, which Commit returned, which were deleted.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "sparsefill/common/rng.h"
#include "sparsefill/kvstore/kv_store.h"
#include "tests/unit/kvstore/crash_data.h"

namespace sk = sparsefill::kvstore;

namespace {

int log_fd = -1;

void Log(char what, const sk::CacheId& id) {
  const std::string line = std::string(1, what) + " " + id.ToHex() + "\n";
  if (::write(log_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    std::perror("log write");
    std::exit(3);
  }
}

[[noreturn]] void Fail(const char* what, const absl::Status& s) {
  std::fprintf(stderr, "crash writer: %s: %s\n", what, s.ToString().c_str());
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <store dir> <seed> <log file>\n", argv[0]);
    return 1;
  }
  log_fd = ::open(argv[3], O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (log_fd < 0) {
    std::perror(argv[3]);
    return 1;
  }
  sparsefill::Rng rng(std::strtoull(argv[2], nullptr, 10));
  auto store = sk::KvStore::Open(sk::testing::CrashStoreOptions(argv[1]));
  if (!store.ok()) Fail("open", store.status());

  // Some deletes of caches earlier runs committed (keeps the store small, exercises crash
  // during delete).
  for (const sk::Manifest& m : (*store)->ListCaches(false)) {
    if (rng.NextU64() % 2 == 0) continue;
    Log('d', m.id);
    if (absl::Status s = (*store)->DeleteCache(m.id); !s.ok()) Fail("delete", s);
    Log('D', m.id);
  }
  for (;;) {
    const sk::CacheId id{rng.NextU64(), rng.NextU64()};
    const sk::CacheSpec spec = sk::testing::CrashSpec(id);
    const sk::CacheLayout& l = spec.layout;
    Log('B', id);
    if (absl::Status s = (*store)->BeginCache(id, spec); !s.ok()) Fail("begin", s);
    for (int32_t layer = 0; layer < l.num_layers; ++layer) {
      const std::vector<float> k = sk::testing::CrashValues(id, l, layer, false);
      const std::vector<float> v = sk::testing::CrashValues(id, l, layer, true);
      const std::vector<float> imp = sk::testing::CrashImportance(id, l, layer);
      // Two shards split at a block boundary when the prompt has more than one block.
      const int64_t split = l.num_blocks() > 1 ? (l.num_blocks() / 2) * l.block_size : l.num_tokens;
      for (int64_t begin : {int64_t{0}, split}) {
        const int64_t end = begin == 0 ? split : l.num_tokens;
        if (end <= begin) continue;
        const size_t row = static_cast<size_t>(l.kv_heads) * l.head_dim;
        sk::LayerData d{.layer = layer,
                        .token_begin = begin,
                        .num_tokens = end - begin,
                        .k = k.data() + begin * row,
                        .v = v.data() + begin * row,
                        .importance = imp.data(),
                        .importance_blocks = l.num_blocks()};
        if (absl::Status s = (*store)->WriteLayer(id, d); !s.ok()) Fail("write", s);
      }
    }
    const uint64_t fate = rng.NextU64() % 20;
    if (fate < 2) {
      if (absl::Status s = (*store)->Abort(id); !s.ok()) Fail("abort", s);
      continue;
    }
    if (fate < 4) continue;  // abandoned PENDING: recovery must clean it up
    if (absl::Status s = (*store)->Commit(id); !s.ok()) Fail("commit", s);
    Log('R', id);
    if (fate < 7) {
      Log('d', id);
      if (absl::Status s = (*store)->DeleteCache(id); !s.ok()) Fail("delete", s);
      Log('D', id);
    }
  }
}
