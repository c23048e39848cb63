#include "services/coordinator/registry.h"

#include <chrono>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {
namespace {

constexpr std::string_view kKeyPrefix = "cache/";

absl::Status NotFound(const kvstore::CacheId& id) {
  return absl::NotFoundError(absl::StrCat("cache ", id.ToHex(), " not found"));
}

absl::StatusOr<CacheState> StateFromName(std::string_view name) {
  if (name == "PENDING") return CacheState::kPending;
  if (name == "READY") return CacheState::kReady;
  if (name == "FAILED") return CacheState::kFailed;
  return absl::InvalidArgumentError(absl::StrCat("unknown state '", AsAbsl(name), "'"));
}

}  // namespace

std::string_view CacheStateName(CacheState state) {
  switch (state) {
    case CacheState::kPending:
      return "PENDING";
    case CacheState::kReady:
      return "READY";
    case CacheState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

std::string RegistryKey(const kvstore::CacheId& id) {
  return absl::StrCat(AsAbsl(kKeyPrefix), id.ToHex());
}

std::string SerializeEntry(const CacheEntry& e) {
  nlohmann::json shards = nlohmann::json::array();
  for (const ShardRange& s : e.shards) {
    shards.push_back({{"rank", s.rank},
                      {"address", s.address},
                      {"token_begin", s.token_begin},
                      {"token_end", s.token_end}});
  }
  const nlohmann::json j = {{"id", e.id.ToHex()},
                            {"tenant", e.tenant},
                            {"model", e.model},
                            {"state", std::string(CacheStateName(e.state))},
                            {"layout",
                             {{"dtype", std::string(DTypeName(e.layout.dtype))},
                              {"dtype_known", e.dtype_known},
                              {"num_layers", e.layout.num_layers},
                              {"kv_heads", e.layout.kv_heads},
                              {"head_dim", e.layout.head_dim},
                              {"block_size", e.layout.block_size},
                              {"num_tokens", e.layout.num_tokens}}},
                            {"policy", e.policy},
                            {"created_unix_ms", e.created_unix_ms},
                            {"expires_unix_ms", e.expires_unix_ms},
                            {"layers_ready", e.layers_ready},
                            {"hot_blocks", e.hot_blocks},
                            {"cold_blocks", e.cold_blocks},
                            {"bytes", e.bytes},
                            {"shards", shards},
                            {"failure", e.failure},
                            {"deleted", e.deleted},
                            {"cleanup_pending", e.cleanup_pending}};
  return j.dump();
}

absl::StatusOr<CacheEntry> ParseEntry(std::string_view bytes, std::string_view key) {
  const nlohmann::json j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr,
                                                 /*allow_exceptions=*/false);
  auto bad = [&](std::string_view why) {
    return absl::DataLossError(absl::StrCat("registry record '", AsAbsl(key), "': ", AsAbsl(why)));
  };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  // Typed reads without exceptions: every field must be present with the right JSON type.
  auto str = [&](const nlohmann::json& o, const char* name, std::string* out) -> bool {
    auto it = o.find(name);
    if (it == o.end() || !it->is_string()) return false;
    *out = it->get<std::string>();
    return true;
  };
  auto num = [&](const nlohmann::json& o, const char* name, auto* out) -> bool {
    auto it = o.find(name);
    if (it == o.end() || !it->is_number_integer()) return false;
    *out = it->get<std::remove_pointer_t<decltype(out)>>();
    return true;
  };
  auto boolean = [&](const nlohmann::json& o, const char* name, bool* out) -> bool {
    auto it = o.find(name);
    if (it == o.end() || !it->is_boolean()) return false;
    *out = it->get<bool>();
    return true;
  };
  CacheEntry e;
  std::string id_hex, state, dtype;
  if (!str(j, "id", &id_hex)) return bad("missing id");
  absl::StatusOr<kvstore::CacheId> id = kvstore::CacheId::FromHex(id_hex);
  if (!id.ok()) return bad(std::string(id.status().message()));
  e.id = *id;
  if (!str(j, "tenant", &e.tenant) || !str(j, "model", &e.model) || !str(j, "state", &state) ||
      !str(j, "policy", &e.policy) || !str(j, "failure", &e.failure)) {
    return bad("missing a string field (tenant, model, state, policy, failure)");
  }
  absl::StatusOr<CacheState> st = StateFromName(state);
  if (!st.ok()) return bad(std::string(st.status().message()));
  e.state = *st;
  auto lit = j.find("layout");
  if (lit == j.end() || !lit->is_object()) return bad("missing layout");
  const nlohmann::json& l = *lit;
  if (!str(l, "dtype", &dtype) || !boolean(l, "dtype_known", &e.dtype_known) ||
      !num(l, "num_layers", &e.layout.num_layers) || !num(l, "kv_heads", &e.layout.kv_heads) ||
      !num(l, "head_dim", &e.layout.head_dim) || !num(l, "block_size", &e.layout.block_size) ||
      !num(l, "num_tokens", &e.layout.num_tokens)) {
    return bad("incomplete layout");
  }
  absl::StatusOr<DType> dt = ParseDType(dtype);
  if (!dt.ok()) return bad(std::string(dt.status().message()));
  e.layout.dtype = *dt;
  if (!num(j, "created_unix_ms", &e.created_unix_ms) ||
      !num(j, "expires_unix_ms", &e.expires_unix_ms) || !num(j, "layers_ready", &e.layers_ready) ||
      !num(j, "hot_blocks", &e.hot_blocks) || !num(j, "cold_blocks", &e.cold_blocks) ||
      !num(j, "bytes", &e.bytes) || !boolean(j, "deleted", &e.deleted) ||
      !boolean(j, "cleanup_pending", &e.cleanup_pending)) {
    return bad("missing a numeric or boolean field");
  }
  auto sit = j.find("shards");
  if (sit == j.end() || !sit->is_array()) return bad("missing shards");
  for (const nlohmann::json& s : *sit) {
    ShardRange r;
    if (!s.is_object() || !num(s, "rank", &r.rank) || !str(s, "address", &r.address) ||
        !num(s, "token_begin", &r.token_begin) || !num(s, "token_end", &r.token_end)) {
      return bad("malformed shard");
    }
    e.shards.push_back(std::move(r));
  }
  return e;
}

absl::StatusOr<std::unique_ptr<CacheRegistry>> CacheRegistry::Open(kvstore::RecordStore* store,
                                                                   Clock* clock) {
  if (store == nullptr || clock == nullptr) {
    return absl::InvalidArgumentError("cache registry: store and clock are required");
  }
  std::unique_ptr<CacheRegistry> reg(new CacheRegistry(store, clock));
  SF_ASSIGN_OR_RETURN(std::vector<kvstore::Record> records, store->Scan(kKeyPrefix));
  std::lock_guard<std::mutex> lock(reg->mu_);
  for (const kvstore::Record& r : records) {
    SF_ASSIGN_OR_RETURN(CacheEntry e, ParseEntry(r.value, r.key));
    if (e.state == CacheState::kPending) {
      e.state = CacheState::kFailed;
      e.failure = "coordinator restarted during prefill";
      e.cleanup_pending = true;
      SF_RETURN_IF_ERROR(reg->PersistLocked(e, /*sync=*/true));
    }
    const kvstore::CacheId id = e.id;
    reg->entries_.emplace(id, std::move(e));
  }
  return reg;
}

absl::Status CacheRegistry::PersistLocked(const CacheEntry& e, bool sync) {
  return store_->Put(RegistryKey(e.id), SerializeEntry(e), sync);
}

bool CacheRegistry::VisibleLocked(const CacheEntry& e, std::string_view tenant) const {
  if (e.deleted || e.tenant != tenant) return false;
  // Expired but not swept yet: already gone for its tenant.
  return e.state == CacheState::kPending || e.expires_unix_ms > clock_->NowUnixMillis();
}

absl::Status CacheRegistry::Create(const CacheEntry& entry) {
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(entry.id) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("cache ", entry.id.ToHex(), " already exists"));
  }
  SF_RETURN_IF_ERROR(PersistLocked(entry, /*sync=*/true));
  entries_.emplace(entry.id, entry);
  return absl::OkStatus();
}

absl::StatusOr<CacheEntry> CacheRegistry::Get(const kvstore::CacheId& id,
                                              std::string_view tenant) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || !VisibleLocked(it->second, tenant)) return NotFound(id);
  return it->second;
}

absl::Status CacheRegistry::Update(const kvstore::CacheId& id, bool sync,
                                   const std::function<void(CacheEntry&)>& fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return NotFound(id);
    CacheEntry updated = it->second;
    fn(updated);
    SF_RETURN_IF_ERROR(PersistLocked(updated, sync));
    it->second = std::move(updated);
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status CacheRegistry::SetLayersReady(const kvstore::CacheId& id, int32_t layers_ready) {
  return Update(id, /*sync=*/false, [&](CacheEntry& e) {
    if (layers_ready > e.layers_ready) e.layers_ready = layers_ready;
  });
}

absl::StatusOr<CacheEntry> CacheRegistry::WaitForLayer(const kvstore::CacheId& id,
                                                       std::string_view tenant, int32_t layer,
                                                       Deadline deadline,
                                                       const Cancellation* cancel) const {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    auto it = entries_.find(id);
    if (it == entries_.end() || !VisibleLocked(it->second, tenant)) return NotFound(id);
    const CacheEntry& e = it->second;
    if (e.state == CacheState::kFailed) {
      return absl::FailedPreconditionError(
          absl::StrCat("cache ", id.ToHex(), " failed: ", AsAbsl(e.failure)));
    }
    if (e.layers_ready > layer) return e;
    if (IsCancelled(cancel)) return absl::CancelledError("cancelled while waiting for a layer");
    const auto now = std::chrono::system_clock::now();
    if (deadline != kNoDeadline && now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("cache ", id.ToHex(), ": layer ", layer,
                                                      " was not ready before the deadline"));
    }
    auto wake = now + std::chrono::milliseconds(20);
    if (deadline < wake) wake = deadline;
    cv_.wait_until(lock, wake);
  }
}

absl::Status CacheRegistry::Remove(const kvstore::CacheId& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    SF_RETURN_IF_ERROR(store_->Delete(RegistryKey(id), /*sync=*/true));
    entries_.erase(id);
  }
  cv_.notify_all();
  return absl::OkStatus();
}

std::vector<CacheEntry> CacheRegistry::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<CacheEntry> out;
  out.reserve(entries_.size());
  for (const auto& [id, e] : entries_) out.push_back(e);
  return out;
}

size_t CacheRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace sparsefill::coordinator
