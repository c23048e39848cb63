// A small Coordinator for the RPC tests, built on the real helpers (CallHandler, StreamWriter,
// converters): ListModels, GetCache, a streaming Prefill, StreamCache/FetchBlocks over random
// caches, DeleteCache. It remembers the tenant each handler saw and how its streams ended.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "services/rpc/call_handler.h"
#include "services/rpc/convert.h"
#include "services/rpc/kv_chunk.h"
#include "services/rpc/stream_writer.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/common/status.h"
#include "sparsefill/v1/coordinator.grpc.pb.h"

namespace sparsefill::rpc::test_support {

struct TestCache {
  kvstore::CacheLayout layout;
  // [num_layers, kv_heads, num_blocks] blocks, each K then V bytes.
  std::vector<std::string> blocks;
  bool corrupt = false;  // serve one wrong byte in block 1 of layer 0 head 0
  bool endless = false;  // stream forever, one chunk per 20 ms, until the stream stops
};

class TestCoordinator final : public v1::Coordinator::Service {
 public:
  explicit TestCoordinator(CallHandler::Options options) : handler_(options) {}

  CallHandler& handler() { return handler_; }

  kvstore::CacheId AddCache(const kvstore::CacheLayout& layout, uint64_t seed) {
    TestCache c;
    c.layout = layout;
    Rng rng(seed);
    for (int64_t i = 0; i < layout.total_blocks(); ++i) {
      std::string bytes(LayoutBlockBytes(layout, i % layout.num_blocks()), '\0');
      for (char& b : bytes) b = static_cast<char>(rng.NextU64() & 0xff);
      c.blocks.push_back(std::move(bytes));
    }
    const kvstore::CacheId id{rng.NextU64(), rng.NextU64()};
    std::lock_guard<std::mutex> lock(mu_);
    caches_[id] = std::move(c);
    return id;
  }
  void SetCorrupt(const kvstore::CacheId& id) {
    Mutate(id, [](TestCache& c) { c.corrupt = true; });
  }
  void SetEndless(const kvstore::CacheId& id) {
    Mutate(id, [](TestCache& c) { c.endless = true; });
  }
  std::string Block(const kvstore::CacheId& id, int64_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    return caches_.at(id).blocks.at(index);
  }

  std::string last_tenant() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_tenant_;
  }
  // Status with which the last StreamCache ended on the server, once it has.
  std::optional<absl::Status> last_stream_status() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_stream_status_;
  }

  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* out) override {
    return handler_.Handle(ctx, "ListModels", [&](const CallInfo& call) {
      Remember(call);
      v1::ModelInfo* m = out->add_models();
      m->set_name("tiny");
      m->set_architecture("Qwen3ForCausalLM");
      m->set_num_layers(2);
      m->set_default_policy(v1::POLICY_PHSA);
      return absl::OkStatus();
    });
  }

  grpc::Status GetCache(grpc::ServerContext* ctx, const v1::GetCacheRequest* req,
                        v1::CacheInfo* out) override {
    return handler_.Handle(ctx, "GetCache", [&](const CallInfo& call) -> absl::Status {
      Remember(call);
      SF_ASSIGN_OR_RETURN(const kvstore::CacheId id, CacheIdFromBytes(req->cache_id()));
      std::lock_guard<std::mutex> lock(mu_);
      const auto it = caches_.find(id);
      if (it == caches_.end()) return absl::NotFoundError("cache " + CacheIdHex(id));
      *out = Info(id, it->second);
      return absl::OkStatus();
    });
  }

  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                       grpc::ServerWriter<v1::PrefillProgress>* writer) override {
    return handler_.Handle(ctx, "Prefill", [&](const CallInfo& call) -> absl::Status {
      Remember(call);
      if (req->model() != "tiny") return absl::NotFoundError("model \"" + req->model() + "\"");
      engine::ModelConfig model;
      model.num_layers = 2;
      SF_ASSIGN_OR_RETURN(const engine::SelectionConfig selection,
                          ResolveSelection(req->selection(), model));
      kvstore::CacheLayout layout;
      layout.dtype = DType::kBF16;
      layout.num_layers = 2;
      layout.kv_heads = 1;
      layout.head_dim = 8;
      layout.block_size = selection.block_size;
      layout.num_tokens = req->tokens().ids_size();
      if (layout.num_tokens == 0) return absl::InvalidArgumentError("tokens: empty");
      const kvstore::CacheId id = AddCache(layout, static_cast<uint64_t>(layout.num_tokens));
      StreamWriter<v1::PrefillProgress> out(call, writer, handler_.metrics());
      v1::PrefillProgress p;
      p.mutable_admitted()->set_cache_id(CacheIdToBytes(id));
      p.mutable_admitted()->set_num_tokens(layout.num_tokens);
      p.mutable_admitted()->set_workers(1);
      p.mutable_admitted()->set_num_layers(layout.num_layers);
      SF_RETURN_IF_ERROR(out.Write(p));
      for (int32_t l = 0; l < layout.num_layers; ++l) {
        p.Clear();
        p.mutable_layer_done()->set_layer(l);
        p.mutable_layer_done()->set_layers_total(layout.num_layers);
        SF_RETURN_IF_ERROR(out.Write(p));
      }
      p.Clear();
      {
        std::lock_guard<std::mutex> lock(mu_);
        *p.mutable_done()->mutable_cache() = Info(id, caches_.at(id));
      }
      p.mutable_done()->mutable_stats()->set_num_tokens(layout.num_tokens);
      p.mutable_done()->mutable_stats()->set_policy(
          std::string(engine::PolicyName(selection.policy)));
      return out.Write(p);
    });
  }

  grpc::Status StreamCache(grpc::ServerContext* ctx, const v1::StreamCacheRequest* req,
                           grpc::ServerWriter<v1::KvChunk>* writer) override {
    return handler_.Handle(ctx, "StreamCache", [&](const CallInfo& call) -> absl::Status {
      Remember(call);
      SF_ASSIGN_OR_RETURN(const kvstore::CacheId id, CacheIdFromBytes(req->cache_id()));
      TestCache cache;
      {
        std::lock_guard<std::mutex> lock(mu_);
        const auto it = caches_.find(id);
        if (it == caches_.end()) return absl::NotFoundError("cache " + CacheIdHex(id));
        cache = it->second;
      }
      StreamWriter<v1::KvChunk> out(call, writer, handler_.metrics());
      absl::Status status;
      const kvstore::CacheLayout& l = cache.layout;
      do {
        for (int32_t layer = 0; layer < l.num_layers && status.ok(); ++layer) {
          for (int32_t head = 0; head < l.kv_heads && status.ok(); ++head) {
            // Two blocks per chunk, so chunk boundaries are exercised.
            for (int64_t b = 0; b < l.num_blocks() && status.ok(); b += 2) {
              v1::KvChunk chunk;
              chunk.set_cache_id(CacheIdToBytes(id));
              chunk.set_layer(layer);
              chunk.set_kv_head(head);
              chunk.set_first_block(b);
              chunk.set_tier(v1::TIER_HOST);
              for (int64_t i = b; i < std::min<int64_t>(b + 2, l.num_blocks()); ++i) {
                AppendBlock(&chunk, cache.blocks[l.Index(layer, head, i)]);
              }
              if (cache.corrupt && layer == 0 && head == 0 && b == 0) {
                const size_t at = LayoutBlockBytes(l, 0);  // first byte of block 1
                (*chunk.mutable_data())[at] ^= 0x5a;
              }
              status = out.Write(chunk);
              if (cache.endless) std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
          }
        }
      } while (cache.endless && status.ok());
      std::lock_guard<std::mutex> lock(mu_);
      last_stream_status_ = status;
      return status;
    });
  }

  grpc::Status DeleteCache(grpc::ServerContext* ctx, const v1::DeleteCacheRequest* req,
                           v1::DeleteCacheResponse*) override {
    return handler_.Handle(ctx, "DeleteCache", [&]() -> absl::Status {
      SF_ASSIGN_OR_RETURN(const kvstore::CacheId id, CacheIdFromBytes(req->cache_id()));
      std::lock_guard<std::mutex> lock(mu_);
      if (caches_.erase(id) == 0) return absl::NotFoundError("cache " + CacheIdHex(id));
      return absl::OkStatus();
    });
  }

 private:
  template <typename F>
  void Mutate(const kvstore::CacheId& id, F&& f) {
    std::lock_guard<std::mutex> lock(mu_);
    f(caches_.at(id));
  }
  void Remember(const CallInfo& call) {
    std::lock_guard<std::mutex> lock(mu_);
    last_tenant_ = call.tenant;
  }
  static v1::CacheInfo Info(const kvstore::CacheId& id, const TestCache& c) {
    v1::CacheInfo info;
    info.set_cache_id(CacheIdToBytes(id));
    info.set_model("tiny");
    info.set_state(v1::CACHE_STATE_READY);
    *info.mutable_layout() = CacheLayoutToProto(c.layout);
    info.set_layers_ready(c.layout.num_layers);
    return info;
  }

  CallHandler handler_;
  std::mutex mu_;
  std::map<kvstore::CacheId, TestCache> caches_;
  std::string last_tenant_;
  std::optional<absl::Status> last_stream_status_;
};

}  // namespace sparsefill::rpc::test_support
