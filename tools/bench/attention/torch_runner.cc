#include "tools/bench/attention/torch_runner.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::bench {
namespace {

// Single-quoted for /bin/sh.
std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

absl::Status WriteBinary(const std::string& path, const void* data, size_t bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot create ", path));
  const size_t wrote = bytes == 0 ? 0 : std::fwrite(data, 1, bytes, f);
  const bool closed = std::fclose(f) == 0;
  if (wrote != bytes || !closed) {
    return absl::InternalError(absl::StrCat("writing ", bytes, " bytes to ", path, " failed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> WriteFlexRun(const std::string& dir, const std::string& key,
                                            int64_t tokens, const TileBlocks& tiles) {
  std::string safe = key;
  for (char& c : safe) {
    if (c == '/') c = '_';
  }
  const std::string offsets = absl::StrCat(dir, "/", safe, ".offsets.bin");
  const std::string blocks = absl::StrCat(dir, "/", safe, ".blocks.bin");
  SF_RETURN_IF_ERROR(
      WriteBinary(offsets, tiles.offsets.data(), tiles.offsets.size() * sizeof(int64_t)));
  SF_RETURN_IF_ERROR(
      WriteBinary(blocks, tiles.blocks.data(), tiles.blocks.size() * sizeof(int32_t)));
  return nlohmann::json{{"key", key},
                        {"tokens", tokens},
                        {"q_tile", tiles.q_tile},
                        {"kv_block", tiles.out_block},
                        {"num_tiles", tiles.num_tiles},
                        {"offsets", offsets},
                        {"blocks", blocks}};
}

absl::StatusOr<nlohmann::json> RunTorchReference(const TorchRequest& r) {
  const nlohmann::json meta = {
      {"max_tokens", r.max_tokens}, {"q_heads", r.q_heads}, {"kv_heads", r.kv_heads},
      {"head_dim", r.head_dim},     {"warmup", r.warmup},   {"repeats", r.repeats},
      {"q_file", r.q_file},         {"k_file", r.k_file},   {"v_file", r.v_file},
      {"dense", r.dense},           {"flex", r.flex}};
  const std::string text = meta.dump(1);
  SF_RETURN_IF_ERROR(WriteBinary(r.dir + "/meta.json", text.data(), text.size()));
  const std::string cmd =
      absl::StrCat(ShellQuote(r.python), " ", ShellQuote(r.script), " --dir ", ShellQuote(r.dir));
  std::fflush(stdout);
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("`", cmd, "` failed (status ", WIFEXITED(rc) ? WEXITSTATUS(rc) : rc, ")"));
  }
  std::ifstream in(r.dir + "/torch.json");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json out = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded() || !out.is_object()) {
    return absl::InternalError(absl::StrCat("unreadable ", r.dir, "/torch.json"));
  }
  return out;
}

}  // namespace sparsefill::bench
