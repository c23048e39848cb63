// Shared pieces of the integration tests: the real binaries (SPARSEFILL_BIN_DIR), small
// synthetic models written once per build directory by make-model, prompts of real text (the
// novel's token ids committed in tests/fixtures), and a cluster in a temporary directory.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/client/coordinator_client.h"
#include "tools/sparsefill/child_process.h"
#include "tools/sparsefill/local_cluster.h"

namespace sparsefill::integration {

// Directory of the built binaries.
std::string Bin();
// A tiny synthetic Qwen3 checkpoint with `layers` layers (and the shared Qwen3 tokenizer when
// present), written by make-model once under <build>/tests/models and reused.
absl::StatusOr<std::string> TinyModel(int32_t layers);
// The first `n` token ids of the novel (tests/fixtures/tokenizer/pride_and_prejudice.qwen3.u32).
absl::StatusOr<std::vector<int32_t>> NovelTokens(size_t n);
// Writes ids as a .u32 file in `dir` and returns its path.
absl::StatusOr<std::string> WriteTokens(const std::string& dir, const std::string& name,
                                        const std::vector<int32_t>& ids);

// A cluster plus the temporary directory it lives in (removed after the processes stop).
struct TestCluster {
  std::unique_ptr<tools::TempDir> dir;
  std::unique_ptr<tools::LocalCluster> cluster;
  ~TestCluster() {
    if (cluster != nullptr) cluster->StopAll();
    cluster.reset();
  }
  tools::LocalCluster* operator->() { return cluster.get(); }
};

struct ClusterSpec {
  int32_t workers = 1;
  int32_t layers = 2;
  std::vector<std::string> worker_flags;
  std::vector<std::string> coordinator_flags;
};
absl::StatusOr<std::unique_ptr<TestCluster>> StartCluster(const ClusterSpec& spec);
inline ClusterSpec Spec(int32_t workers, int32_t layers,
                        std::vector<std::string> coordinator_flags = {},
                        std::vector<std::string> worker_flags = {}) {
  ClusterSpec s;
  s.workers = workers;
  s.layers = layers;
  s.coordinator_flags = std::move(coordinator_flags);
  s.worker_flags = std::move(worker_flags);
  return s;
}

// Servers built with ASan or TSan run several times slower: a test whose calls do seconds of real
// prefill work scales their deadlines by this (tools/sanitize).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr int kSanitizerSlowdown = 4;
#else
inline constexpr int kSanitizerSlowdown = 1;
#endif

// A client of the cluster's coordinator; `token` is the bearer token ("" for none).
absl::StatusOr<std::unique_ptr<client::CoordinatorClient>> Connect(
    const std::string& address, const std::string& token = "",
    std::chrono::milliseconds timeout = std::chrono::seconds(60));

// One read of a whole cache: each block's xxh64 by manifest index, with counts.
struct StreamedCache {
  client::CacheInfo info;
  std::vector<uint64_t> checksums;  // [layers, kv_heads, blocks], 0 for blocks that never came
  int64_t chunks = 0;
  int64_t blocks = 0;
  int64_t hot_blocks = 0;
  int64_t verified = 0;  // blocks whose xxh64 the test recomputed and found equal
};
// GetCache (waiting for the layout) then StreamCache of every block; DataLoss on any checksum
// mismatch, duplicate or missing block.
absl::StatusOr<StreamedCache> StreamWholeCache(client::CoordinatorClient& client,
                                               const kvstore::CacheId& id);

}  // namespace sparsefill::integration
