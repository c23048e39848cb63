#include "tests/integration/harness.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "tests/testing/compare.h"
#include "tools/decode-sink/await_layout.h"
#include "tools/decode-sink/cache_assembler.h"
#include "tools/sparsefill/token_file.h"

namespace sparsefill::integration {
namespace {

namespace fs = std::filesystem;

}  // namespace

std::string Bin() { return fs::absolute(testing::BinDir()).string(); }

absl::StatusOr<std::string> TinyModel(int32_t layers) {
  std::error_code ec;
  std::string tokenizer = "none";
  if (const std::string shared = testing::SharedDataDir(); !shared.empty()) {
    const std::string t = shared + "/qwen3-tokenizer/tokenizer.json";
    if (fs::exists(t, ec)) tokenizer = fs::absolute(t).string();
  }
  // A model made while the shared data was missing has no tokenizer (PHSA refuses it): the name
  // says which kind a directory holds, so that one is not reused once the data is there.
  const fs::path dir =
      fs::path(Bin()).parent_path() / "tests" / "models" /
      absl::StrCat("tiny-l", layers, tokenizer == "none" ? "-no-tokenizer" : "-qwen3-tokenizer");
  if (fs::exists(dir / "config.json", ec)) return dir.string();
  fs::create_directories(dir.parent_path(), ec);
  // Tests run in parallel: write beside, then rename into place (the loser discards its copy).
  const fs::path tmp = dir.string() + absl::StrCat(".tmp", ::getpid());
  fs::remove_all(tmp, ec);
  tools::ChildOptions o;
  o.program = Bin() + "/make-model";
  o.args = {"--shape",   "tiny",       "--layers",    std::to_string(layers),
            "--out",     tmp.string(), "--tokenizer", tokenizer,
            "--threads", "2"};
  SF_ASSIGN_OR_RETURN(auto child, tools::ChildProcess::Spawn(o));
  SF_ASSIGN_OR_RETURN(const int code, child->Wait(std::chrono::minutes(2)));
  if (code != 0) return absl::InternalError(absl::StrCat("make-model exited with ", code));
  fs::rename(tmp, dir, ec);
  if (ec) fs::remove_all(tmp, ec);
  if (!fs::exists(dir / "config.json", ec)) {
    return absl::InternalError(absl::StrCat("no model at ", dir.string()));
  }
  return dir.string();
}

absl::StatusOr<std::vector<int32_t>> NovelTokens(size_t n) {
  SF_ASSIGN_OR_RETURN(
      std::vector<int32_t> ids,
      tools::ReadTokenFile("tests/fixtures/tokenizer/pride_and_prejudice.qwen3.u32"));
  if (ids.size() < n) {
    return absl::FailedPreconditionError(absl::StrCat("the novel has ", ids.size(), " tokens"));
  }
  ids.resize(n);
  return ids;
}

absl::StatusOr<std::string> WriteTokens(const std::string& dir, const std::string& name,
                                        const std::vector<int32_t>& ids) {
  const std::string path = absl::StrCat(dir, "/", name, ".u32");
  std::ofstream out(path, std::ios::binary);
  for (int32_t id : ids) {
    const uint32_t v = static_cast<uint32_t>(id);
    out.write(reinterpret_cast<const char*>(&v), 4);
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return path;
}

absl::StatusOr<std::unique_ptr<TestCluster>> StartCluster(const ClusterSpec& spec) {
  auto c = std::make_unique<TestCluster>();
  SF_ASSIGN_OR_RETURN(c->dir, tools::TempDir::Create("sparsefill-it"));
  tools::LocalClusterOptions o;
  o.bin_dir = Bin();
  SF_ASSIGN_OR_RETURN(o.model_dir, TinyModel(spec.layers));
  o.workers = spec.workers;
  o.work_dir = c->dir->path();
  o.threads_per_worker = 1;  // tests run side by side on few cores
  o.worker_flags = spec.worker_flags;
  o.coordinator_flags = spec.coordinator_flags;
  SF_ASSIGN_OR_RETURN(c->cluster, tools::LocalCluster::Start(o));
  return c;
}

absl::StatusOr<std::unique_ptr<client::CoordinatorClient>> Connect(
    const std::string& address, const std::string& token, std::chrono::milliseconds timeout) {
  client::ConnectionOptions o;
  o.address = address;
  o.token = token;
  o.default_timeout = timeout;
  return client::CoordinatorClient::Connect(o);
}

absl::StatusOr<StreamedCache> StreamWholeCache(client::CoordinatorClient& client,
                                               const kvstore::CacheId& id) {
  StreamedCache out;
  SF_ASSIGN_OR_RETURN(out.info, tools::AwaitCacheLayout(client, id, std::chrono::seconds(60)));
  const kvstore::CacheLayout& l = out.info.layout;
  SF_ASSIGN_OR_RETURN(tools::CacheAssembler assembler, tools::CacheAssembler::Create(id, l));
  out.checksums.assign(static_cast<size_t>(l.total_blocks()), 0);
  SF_ASSIGN_OR_RETURN(
      const client::StreamStats stats,
      client.StreamCache(id, /*hot_only=*/false, [&](const client::KvChunk& c) {
        SF_RETURN_IF_ERROR(assembler.Add(c));
        for (int32_t i = 0; i < c.num_blocks; ++i) {
          out.checksums[static_cast<size_t>(l.Index(c.layer, c.kv_head, c.first_block + i))] =
              c.xxh64[static_cast<size_t>(i)];
        }
        return absl::OkStatus();
      }));
  SF_RETURN_IF_ERROR(assembler.CheckComplete());
  out.chunks = stats.chunks;
  out.blocks = assembler.stats().blocks;
  out.hot_blocks = assembler.stats().hot_blocks;
  out.verified = assembler.stats().checksums_verified;
  return out;
}

}  // namespace sparsefill::integration
