// Fuzzes the coordinator's request validation: the bytes a client sends are parsed as the
// request message of Prefill, StreamCache, FetchBlocks, GetCache or DeleteCache and handed to
// the real Coordinator (services/coordinator/), as CoordinatorService does after parsing.
//
// The coordinator runs against one in-process worker (below) serving a tiny model and one READY
// cache of tenant "acme". Its admission budget is held full by the fuzzer, so a prefill that
// passes validation ends RESOURCE_EXHAUSTED at admission and no shard ever runs: every
// execution tests validation, not the engine.
//
// Input: byte 0 picks the method (% 5); byte 1 bits 0-1 pick the caller's tenant ("acme",
// "other", ""), bit 2 replaces the request's cache id by the READY cache's (for DeleteCache only
// with another tenant, so the cache stays); the rest is the serialized request.
// Invariants: a prefill that a plain re-statement of the rules finds invalid is
// INVALID_ARGUMENT, one it finds valid is RESOURCE_EXHAUSTED (or INVALID_ARGUMENT for its
// selection overrides), nothing else; another tenant's cache is NOT_FOUND for every method;
// streams of the READY cache verify (VerifyKvChunk) and cover exactly the blocks asked for;
// FetchBlocks refuses exactly the ranges outside the cache; the READY cache is never lost.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "services/coordinator/coordinator.h"
#include "services/coordinator/worker_pool.h"
#include "services/rpc/convert.h"
#include "services/rpc/kv_chunk.h"
#include "sparsefill/kvstore/record_store.h"
#include "tests/fuzz/fuzz_check.h"

namespace sc = ::sparsefill::coordinator;
namespace v1 = ::sparsefill::v1;
using sparsefill::kvstore::CacheId;
using sparsefill::kvstore::CacheLayout;

namespace {

constexpr char kModel[] = "tiny";
constexpr char kTenant[] = "acme";
constexpr int64_t kVocab = 1000;
constexpr int64_t kModelMaxTokens = 4096;
constexpr int64_t kMaxTtl = 7 * 24 * 3600;
constexpr char kWorker[] = "inproc:0";

CacheLayout ReadyLayout() {
  CacheLayout l;
  l.dtype = sparsefill::DType::kBF16;
  l.num_layers = 2;
  l.kv_heads = 2;
  l.head_dim = 4;
  l.block_size = 16;
  l.num_tokens = 100;  // 7 blocks, the last one partial
  return l;
}

// A worker that answers in process: one model, no shard execution (admission never lets one
// through), and the READY cache's blocks with real xxh64s; even blocks are hot.
class InProcessWorker final : public sc::WorkerApi {
 public:
  explicit InProcessWorker(CacheId cache) : cache_(cache) {}
  const std::string& address() const override { return address_; }

  absl::StatusOr<v1::ListModelsResponse> DescribeModels(const sc::CallControl&) override {
    v1::ListModelsResponse r;
    v1::ModelInfo* m = r.add_models();
    m->set_name(kModel);
    m->set_architecture("Qwen3ForCausalLM");
    m->set_num_layers(2);
    m->set_q_heads(4);
    m->set_kv_heads(2);
    m->set_head_dim(4);
    m->set_vocab_size(kVocab);
    m->set_max_tokens(kModelMaxTokens);
    m->set_has_tokenizer(true);
    m->set_default_policy(v1::POLICY_PHSA);
    m->set_kv_dtype(v1::DTYPE_BF16);
    return r;
  }
  // One id per byte, as a byte-level tokenizer without merges would give.
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& model, const std::string& text,
                                                const sc::CallControl&) override {
    SF_FUZZ_CHECK(model == kModel, "Tokenize for model %s", model.c_str());
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  absl::Status ExecuteShard(const v1::ShardRequest&, const Callback<v1::ShardEvent>&,
                            const sc::CallControl&) override {
    SF_FUZZ_CHECK(false, "a shard ran although admission is full");
    return absl::InternalError("unreachable");
  }
  absl::Status ReadBlocks(const v1::FetchBlocksRequest& request, const ChunkCallback& on_chunk,
                          const sc::CallControl&) override {
    const CacheLayout l = ReadyLayout();
    SF_FUZZ_CHECK(request.cache_id() == sparsefill::rpc::CacheIdToBytes(cache_),
                  "ReadBlocks of another cache");
    for (const v1::BlockRange& r : request.ranges()) {
      // The coordinator checked the ranges: anything outside the cache here is its bug.
      SF_FUZZ_CHECK(r.layer() >= 0 && r.layer() < l.num_layers && r.kv_head() >= 0 &&
                        r.kv_head() < l.kv_heads && r.num_blocks() > 0 && r.first_block() >= 0 &&
                        r.first_block() <= l.num_blocks() - r.num_blocks(),
                    "worker asked for layer %d head %d blocks [%lld, +%d)", r.layer(), r.kv_head(),
                    (long long)r.first_block(), r.num_blocks());
      for (int64_t b = r.first_block(); b < r.first_block() + r.num_blocks(); ++b) {
        v1::KvChunk c;
        c.set_cache_id(request.cache_id());
        c.set_layer(r.layer());
        c.set_kv_head(r.kv_head());
        c.set_first_block(b);
        c.set_tier(v1::TIER_HOST);
        c.set_hot(b % 2 == 0);
        std::string bytes(l.BlockBytes(b), '\0');
        for (size_t i = 0; i < bytes.size(); ++i) {
          bytes[i] = static_cast<char>(i * 7 + b * 13 + r.layer() * 5 + r.kv_head());
        }
        sparsefill::rpc::AppendBlock(&c, bytes);
        SF_FUZZ_CHECK(c.num_blocks() == 1, "AppendBlock");
        absl::Status s = on_chunk(c);
        if (!s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }
  absl::StatusOr<v1::ShardManifest> GetShardManifest(const CacheId&,
                                                     const sc::CallControl&) override {
    return absl::NotFoundError("inproc: no manifests");
  }
  absl::Status DeleteShard(const CacheId& id, const sc::CallControl&) override {
    SF_FUZZ_CHECK(id != cache_, "the READY cache's shard was deleted");
    return absl::OkStatus();
  }

 private:
  const CacheId cache_;
  const std::string address_ = kWorker;
};

struct World {
  std::string dir;
  std::unique_ptr<sparsefill::kvstore::RecordStore> store;
  std::unique_ptr<sc::Coordinator> coord;
  sc::AdmissionController::Slot held;  // the whole budget: every admission fails at once
  CacheId cache;
  std::string cache_bytes;
  int64_t max_tokens = 0;
};

World* TheWorld() {
  static World* w = [] {
    auto* w = new World;
    char tmpl[] = "/tmp/sf-fuzz-coordinator-XXXXXX";
    SF_FUZZ_CHECK(mkdtemp(tmpl) != nullptr, "mkdtemp");
    w->dir = tmpl;
    auto store = sparsefill::kvstore::RecordStore::Open(w->dir);
    SF_FUZZ_CHECK(store.ok(), "%s", std::string(store.status().message()).c_str());
    w->store = *std::move(store);
    w->cache = CacheId{0x5f0e1d2c3b4a5968ull, 0x778695a4b3c2d1e0ull};
    w->cache_bytes = sparsefill::rpc::CacheIdToBytes(w->cache);
    sc::CoordinatorOptions o;
    o.max_tokens = 3000;  // below the model's 4096: both limits are exercised
    o.admission.max_queue = 0;
    o.admission.max_inflight_tokens = 1 << 20;
    o.max_ttl_s = kMaxTtl;
    o.health_timeout = std::chrono::seconds(5);
    w->max_tokens = o.max_tokens;
    std::vector<std::unique_ptr<sc::WorkerApi>> workers;
    workers.push_back(std::make_unique<InProcessWorker>(w->cache));
    auto c = sc::Coordinator::Create(
        o, std::make_unique<sc::WorkerPool>(std::move(workers), o.health_timeout), w->store.get());
    SF_FUZZ_CHECK(c.ok(), "%s", std::string(c.status().message()).c_str());
    w->coord = *std::move(c);
    auto slot = w->coord->admission().Admit(
        o.admission.max_inflight_tokens, std::chrono::system_clock::now() + std::chrono::seconds(5),
        nullptr);
    SF_FUZZ_CHECK(slot.ok(), "%s", std::string(slot.status().message()).c_str());
    w->held = *std::move(slot);

    sc::CacheEntry e;
    e.id = w->cache;
    e.tenant = kTenant;
    e.model = kModel;
    e.state = sc::CacheState::kReady;
    e.layout = ReadyLayout();
    e.dtype_known = true;
    e.policy = "phsa";
    e.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    e.expires_unix_ms = e.created_unix_ms + int64_t{30} * 24 * 3600 * 1000;
    e.layers_ready = e.layout.num_layers;
    e.shards.push_back(sc::ShardRange{0, kWorker, 0, e.layout.num_tokens});
    const absl::Status created = w->coord->registry().Create(e);
    SF_FUZZ_CHECK(created.ok(), "%s", std::string(created.message()).c_str());
    std::atexit([] {
      World* w = TheWorld();
      w->coord.reset();
      w->store.reset();
      std::error_code ec;
      std::filesystem::remove_all(w->dir, ec);
    });
    return w;
  }();
  return w;
}

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// The rules of Coordinator::Validate, written out again (selection overrides aside).
bool PrefillLooksValid(const v1::PrefillRequest& r, int64_t max_tokens) {
  if (r.model() != kModel) return false;
  std::vector<int64_t> ids;
  if (r.has_tokens()) {
    for (int32_t id : r.tokens().ids()) ids.push_back(id);
  } else if (r.prompt_case() == v1::PrefillRequest::kText) {
    for (unsigned char c : r.text()) ids.push_back(c);
  } else {
    return false;
  }
  if (ids.empty() || static_cast<int64_t>(ids.size()) > std::min(max_tokens, kModelMaxTokens)) {
    return false;
  }
  for (int64_t id : ids) {
    if (id < 0 || id >= kVocab) return false;
  }
  return r.ttl_seconds() >= 0 && r.ttl_seconds() <= kMaxTtl;
}

bool RangeInside(const v1::BlockRange& r, const CacheLayout& l) {
  return r.layer() >= 0 && r.layer() < l.num_layers && r.kv_head() >= 0 &&
         r.kv_head() < l.kv_heads && r.num_blocks() > 0 && r.first_block() >= 0 &&
         r.first_block() <= l.num_blocks() - r.num_blocks();
}

// Lookup's outcome for `id` by `tenant`: OK, NOT_FOUND, or INVALID_ARGUMENT (not 16 bytes).
absl::StatusCode LookupCode(const World& w, const std::string& id, const std::string& tenant) {
  if (id.size() != 16) return absl::StatusCode::kInvalidArgument;
  return id == w.cache_bytes && tenant == kTenant ? absl::StatusCode::kOk
                                                  : absl::StatusCode::kNotFound;
}

void CheckStream(const World& w, const std::vector<v1::KvChunk>& chunks,
                 std::map<std::tuple<int, int, int64_t>, int>* got) {
  const CacheLayout l = ReadyLayout();
  for (const v1::KvChunk& c : chunks) {
    const absl::Status s = sparsefill::rpc::VerifyKvChunk(c, w.cache, l);
    SF_FUZZ_CHECK(s.ok(), "streamed chunk does not verify: %s", Msg(s).c_str());
    for (int64_t b = c.first_block(); b < c.first_block() + c.num_blocks(); ++b) {
      ++(*got)[{c.layer(), c.kv_head(), b}];
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Malformed UTF-8 in string fields is an expected parse failure, not worth a log line each.
  google::protobuf::SetLogHandler(nullptr);
  TheWorld();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  World& w = *TheWorld();
  static const char* const kTenants[] = {kTenant, "other", ""};
  const std::string tenant = kTenants[(data[1] & 3) % 3];
  const bool use_cache = (data[1] & 4) != 0;
  const sc::RequestContext rc{tenant, std::chrono::system_clock::now() + std::chrono::seconds(10),
                              nullptr};
  const uint8_t* body = data + 2;
  const int body_size = static_cast<int>(size - 2);
  const CacheLayout layout = ReadyLayout();

  switch (data[0] % 5) {
    case 0: {
      v1::PrefillRequest r;
      if (!r.ParseFromArray(body, body_size)) return 0;
      bool progressed = false;
      const absl::Status s = w.coord->Prefill(rc, r, [&](const v1::PrefillProgress&) {
        progressed = true;
        return absl::OkStatus();
      });
      SF_FUZZ_CHECK(!progressed, "a prefill made progress although admission is full");
      const bool valid = PrefillLooksValid(r, w.max_tokens);
      if (!valid) {
        SF_FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument,
                      "invalid prefill got code %d: %s", static_cast<int>(s.code()),
                      Msg(s).c_str());
      } else {
        SF_FUZZ_CHECK(
            s.code() == absl::StatusCode::kResourceExhausted ||
                (s.code() == absl::StatusCode::kInvalidArgument && Msg(s).starts_with("selection")),
            "valid prefill got code %d: %s", static_cast<int>(s.code()), Msg(s).c_str());
      }
      SF_FUZZ_CHECK(!Msg(s).empty(), "error without a message");
      break;
    }
    case 1: {
      v1::StreamCacheRequest r;
      if (!r.ParseFromArray(body, body_size)) return 0;
      if (use_cache) r.set_cache_id(w.cache_bytes);
      std::vector<v1::KvChunk> chunks;
      const absl::Status s = w.coord->StreamCache(rc, r, [&](const v1::KvChunk& c) {
        chunks.push_back(c);
        return absl::OkStatus();
      });
      const absl::StatusCode want = LookupCode(w, r.cache_id(), tenant);
      SF_FUZZ_CHECK(s.code() == want, "StreamCache code %d, expected %d: %s",
                    static_cast<int>(s.code()), static_cast<int>(want), Msg(s).c_str());
      if (!s.ok()) {
        SF_FUZZ_CHECK(chunks.empty(), "chunks sent before an error of Lookup");
        break;
      }
      std::map<std::tuple<int, int, int64_t>, int> got;
      CheckStream(w, chunks, &got);
      for (const v1::KvChunk& c : chunks) {
        if (r.hot_only()) SF_FUZZ_CHECK(c.hot(), "cold chunk in a hot_only stream");
      }
      if (!r.hot_only()) {
        SF_FUZZ_CHECK(got.size() == static_cast<size_t>(layout.total_blocks()),
                      "stream covered %zu of %lld blocks", got.size(),
                      (long long)layout.total_blocks());
        for (const auto& [k, n] : got) SF_FUZZ_CHECK(n == 1, "block streamed %d times", n);
      }
      break;
    }
    case 2: {
      v1::FetchBlocksRequest r;
      if (!r.ParseFromArray(body, body_size)) return 0;
      if (use_cache) r.set_cache_id(w.cache_bytes);
      std::vector<v1::KvChunk> chunks;
      const absl::Status s = w.coord->FetchBlocks(rc, r, [&](const v1::KvChunk& c) {
        chunks.push_back(c);
        return absl::OkStatus();
      });
      absl::StatusCode want = LookupCode(w, r.cache_id(), tenant);
      if (want == absl::StatusCode::kOk) {
        bool inside = !r.ranges().empty();
        for (const v1::BlockRange& br : r.ranges()) inside = inside && RangeInside(br, layout);
        if (!inside) want = absl::StatusCode::kInvalidArgument;
      }
      SF_FUZZ_CHECK(s.code() == want, "FetchBlocks code %d, expected %d: %s",
                    static_cast<int>(s.code()), static_cast<int>(want), Msg(s).c_str());
      if (!s.ok()) break;
      std::map<std::tuple<int, int, int64_t>, int> got, asked;
      CheckStream(w, chunks, &got);
      for (const v1::BlockRange& br : r.ranges()) {
        for (int64_t b = br.first_block(); b < br.first_block() + br.num_blocks(); ++b) {
          ++asked[{br.layer(), br.kv_head(), b}];
        }
      }
      SF_FUZZ_CHECK(got == asked, "FetchBlocks served %zu distinct blocks, %zu were asked for",
                    got.size(), asked.size());
      break;
    }
    case 3: {
      v1::GetCacheRequest r;
      if (!r.ParseFromArray(body, body_size)) return 0;
      if (use_cache) r.set_cache_id(w.cache_bytes);
      const auto info = w.coord->GetCache(rc, r.cache_id());
      const absl::StatusCode want = LookupCode(w, r.cache_id(), tenant);
      SF_FUZZ_CHECK(info.status().code() == want, "GetCache code %d, expected %d: %s",
                    static_cast<int>(info.status().code()), static_cast<int>(want),
                    Msg(info.status()).c_str());
      if (info.ok()) {
        SF_FUZZ_CHECK(info->cache_id() == w.cache_bytes && info->model() == kModel &&
                          info->state() == v1::CACHE_STATE_READY &&
                          info->layers_ready() == layout.num_layers,
                      "GetCache returned another cache");
      }
      break;
    }
    case 4: {
      v1::DeleteCacheRequest r;
      if (!r.ParseFromArray(body, body_size)) return 0;
      if (use_cache && tenant != kTenant) r.set_cache_id(w.cache_bytes);
      if (r.cache_id() == w.cache_bytes && tenant == kTenant) return 0;  // keep the READY cache
      const absl::Status s = w.coord->DeleteCache(rc, r.cache_id());
      const absl::StatusCode want = LookupCode(w, r.cache_id(), tenant);
      SF_FUZZ_CHECK(s.code() == want, "DeleteCache code %d, expected %d: %s",
                    static_cast<int>(s.code()), static_cast<int>(want), Msg(s).c_str());
      const auto still =
          w.coord->GetCache(sc::RequestContext{kTenant, rc.deadline, nullptr}, w.cache_bytes);
      SF_FUZZ_CHECK(still.ok(), "the READY cache is gone: %s", Msg(still.status()).c_str());
      break;
    }
  }
  return 0;
}
