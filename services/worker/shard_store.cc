#include "services/worker/shard_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sparsefill/common/status.h"

namespace sparsefill::worker {
namespace {

constexpr char kSuffix[] = ".shard.json";

absl::Status Errno(std::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(AsAbsl(what), " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteFileDurably(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", tmp);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const absl::Status s = Errno("cannot write", tmp);
      ::close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const absl::Status s = Errno("cannot fsync", tmp);
    ::close(fd);
    return s;
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Errno("cannot rename", tmp);
  return absl::OkStatus();
}

absl::StatusOr<ShardRecord> ParseRecord(const std::string& text, const std::string& path) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](std::string_view why) {
    return absl::DataLossError(absl::StrCat("shard record ", path, ": ", AsAbsl(why)));
  };
  if (!j.is_object()) return bad("not a JSON object");
  for (const char* key : {"token_begin", "token_end", "num_tokens", "rank", "world_size"}) {
    if (!j.contains(key) || !j[key].is_number_integer()) {
      return bad(absl::StrCat("\"", key, "\" is missing or not an integer"));
    }
  }
  if (!j.contains("cache_id") || !j["cache_id"].is_string()) return bad("\"cache_id\" missing");
  auto id = kvstore::CacheId::FromHex(j["cache_id"].get<std::string>());
  if (!id.ok()) return bad(std::string(id.status().message()));
  ShardRecord r;
  r.id = *id;
  r.token_begin = j["token_begin"].get<int64_t>();
  r.token_end = j["token_end"].get<int64_t>();
  r.num_tokens = j["num_tokens"].get<int64_t>();
  r.rank = j["rank"].get<int32_t>();
  r.world_size = j["world_size"].get<int32_t>();
  if (j.contains("policy") && j["policy"].is_string()) r.policy = j["policy"].get<std::string>();
  if (r.token_begin < 0 || r.token_end <= r.token_begin || r.token_end > r.num_tokens) {
    return bad("token range is not inside the prompt");
  }
  return r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShardRecords>> ShardRecords::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard records: cannot create ", dir, ": ", ec.message()));
  }
  std::unique_ptr<ShardRecords> out(new ShardRecords(dir));
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string path = entry.path().string();
    const std::string name = entry.path().filename().string();
    if (name.size() > sizeof(kSuffix) - 1 && name.ends_with(".tmp")) {
      std::filesystem::remove(entry.path(), ec);  // a write that did not finish
      continue;
    }
    if (!name.ends_with(kSuffix)) continue;
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    SF_ASSIGN_OR_RETURN(ShardRecord r, ParseRecord(text.str(), path));
    out->records_[r.id] = r;
  }
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard records: cannot list ", dir, ": ", ec.message()));
  }
  return out;
}

std::string ShardRecords::PathOf(const kvstore::CacheId& id) const {
  return absl::StrCat(dir_, "/", id.ToHex(), kSuffix);
}

absl::Status ShardRecords::Put(const ShardRecord& r) {
  nlohmann::json j;
  j["cache_id"] = r.id.ToHex();
  j["token_begin"] = r.token_begin;
  j["token_end"] = r.token_end;
  j["num_tokens"] = r.num_tokens;
  j["rank"] = r.rank;
  j["world_size"] = r.world_size;
  j["policy"] = r.policy;
  SF_RETURN_IF_ERROR(WriteFileDurably(PathOf(r.id), j.dump()));
  std::lock_guard<std::mutex> lock(mu_);
  records_[r.id] = r;
  return absl::OkStatus();
}

absl::StatusOr<ShardRecord> ShardRecords::Get(const kvstore::CacheId& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(id);
  if (it == records_.end()) {
    return absl::NotFoundError(absl::StrCat("cache ", id.ToHex(), " has no shard on this worker"));
  }
  return it->second;
}

absl::Status ShardRecords::Erase(const kvstore::CacheId& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    records_.erase(id);
  }
  std::error_code ec;
  std::filesystem::remove(PathOf(id), ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot remove ", PathOf(id), ": ", ec.message()));
  return absl::OkStatus();
}

std::vector<ShardRecord> ShardRecords::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ShardRecord> out;
  for (const auto& [id, r] : records_) out.push_back(r);
  return out;
}

absl::Status StoreLayerSink::OnLayer(const engine::LayerKv& kv) {
  if (kv.token_begin != shard_begin_ || kv.num_tokens != shard_tokens_) {
    return absl::InternalError(absl::StrCat("layer ", kv.layer, " covers tokens [", kv.token_begin,
                                            ", ", kv.token_begin + kv.num_tokens,
                                            ") but this worker's shard is [", shard_begin_, ", ",
                                            shard_begin_ + shard_tokens_, ")"));
  }
  kvstore::LayerData data;
  data.layer = kv.layer;
  data.token_begin = 0;  // the store holds the shard alone
  data.num_tokens = kv.num_tokens;
  data.k = kv.k;
  data.v = kv.v;
  data.importance = kv.block_importance;
  data.importance_blocks = kv.block_importance != nullptr ? kv.num_blocks : 0;
  SF_RETURN_IF_ERROR(store_->WriteLayer(id_, data));
  stored_.push_back(kv.layer);
  return on_stored_ ? on_stored_(kv) : absl::OkStatus();
}

}  // namespace sparsefill::worker
