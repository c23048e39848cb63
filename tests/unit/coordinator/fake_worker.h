// A Worker gRPC service answering from canned data, for the coordinator's tests (the real worker
// process is tested in its own folder). It serves one model, runs "shards" by emitting one event
// per layer, keeps per-shard manifests, serves deterministic KV blocks with real xxh64s, and can
// be told to fail, hang or stall so the coordinator's failure paths are exercised.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "services/rpc/convert.h"
#include "services/rpc/kv_chunk.h"
#include "services/rpc/server.h"
#include "sparsefill/v1/worker.grpc.pb.h"

namespace sparsefill::coordinator::testing {

namespace v1 = ::sparsefill::v1;

inline constexpr int32_t kLayers = 3;
inline constexpr int32_t kQHeads = 4;
inline constexpr int32_t kKvHeads = 2;
inline constexpr int32_t kHeadDim = 4;
inline constexpr int64_t kVocab = 1000;
inline constexpr int64_t kModelMaxTokens = 4096;

inline v1::ModelInfo TinyModel() {
  v1::ModelInfo m;
  m.set_name("tiny");
  m.set_architecture("Qwen3ForCausalLM");
  m.set_num_layers(kLayers);
  m.set_q_heads(kQHeads);
  m.set_kv_heads(kKvHeads);
  m.set_head_dim(kHeadDim);
  m.set_vocab_size(kVocab);
  m.set_max_tokens(kModelMaxTokens);
  m.set_has_tokenizer(true);
  m.set_default_policy(v1::POLICY_PHSA);  // block size 16
  return m;
}

// Bytes of one block (bf16 K then V): a function of (cache, layer, head, global block) only, so
// tests can recompute what a decode node must receive.
inline std::string BlockBytes(const std::string& cache_id, int32_t layer, int32_t head,
                              int64_t global_block, int64_t tokens) {
  std::string out(static_cast<size_t>(tokens * kHeadDim * 2 * 2), '\0');
  uint64_t x = rpc::Xxh64(cache_id) ^ (uint64_t(layer) << 48) ^ (uint64_t(head) << 40) ^
               uint64_t(global_block);
  for (char& c : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x & 0xff);
  }
  return out;
}

// Placement of the fake: even global blocks are hot.
inline bool IsHot(int64_t global_block) { return global_block % 2 == 0; }

class FakeWorker final : public v1::Worker::Service {
 public:
  struct Shard {
    v1::ShardRequest request;
    int32_t layers_written = 0;
    bool ready = false;
  };

  // Behaviour knobs (set before or between calls).
  std::atomic<int> layer_delay_ms{0};
  std::atomic<int> fail_at_layer{-1};  // ExecuteShard fails (UNAVAILABLE) before this layer
  std::atomic<int> hang_at_layer{-1};  // ExecuteShard stops answering before this layer
  std::atomic<int> stall_reads_from_layer{-1};  // ReadBlocks of this layer or later hang
  std::atomic<int> execute_calls{0};

  grpc::Status DescribeModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                              v1::ListModelsResponse* out) override {
    *out->add_models() = TinyModel();
    return grpc::Status::OK;
  }

  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* req,
                        v1::TokenIds* out) override {
    if (req->model() != "tiny") return {grpc::StatusCode::NOT_FOUND, "no such model"};
    // One id per byte: enough to count tokens and check ranges.
    for (unsigned char c : req->text()) out->add_ids(c);
    return grpc::Status::OK;
  }

  grpc::Status ExecuteShard(grpc::ServerContext* ctx, const v1::ShardRequest* req,
                            grpc::ServerWriter<v1::ShardEvent>* writer) override {
    ++execute_calls;
    {
      std::lock_guard<std::mutex> lock(mu_);
      shards_[req->job_id()].request = *req;
      requests_.push_back(*req);
    }
    const int64_t tokens = req->tokens().ids_size();
    for (int32_t layer = 0; layer < kLayers; ++layer) {
      if (layer == fail_at_layer.load()) {
        return {grpc::StatusCode::UNAVAILABLE,
                "injected failure at layer " + std::to_string(layer)};
      }
      if (layer == hang_at_layer.load()) {
        while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return {grpc::StatusCode::CANCELLED, "cancelled while hanging"};
      }
      if (layer_delay_ms.load() > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(layer_delay_ms.load()));
      }
      if (ctx->IsCancelled()) return {grpc::StatusCode::CANCELLED, "cancelled"};
      {
        std::lock_guard<std::mutex> lock(mu_);
        shards_[req->job_id()].layers_written = layer + 1;
      }
      v1::ShardEvent ev;
      v1::ShardLayerDone* l = ev.mutable_layer_done();
      l->set_layer(layer);
      l->set_selected_keys(tokens * 3);
      l->set_causal_keys(tokens * 10);
      // A loss of 0.5 for every query head of every query of the shard.
      l->set_information_loss_sum(0.5 * tokens * kQHeads);
      l->set_information_loss_count(tokens * kQHeads);
      if (!writer->Write(ev)) return {grpc::StatusCode::CANCELLED, "write failed"};
    }
    const int32_t b = req->selection().block_size();
    const int64_t blocks = (tokens + b - 1) / b;
    v1::ShardEvent done;
    done.mutable_done()->set_seconds(0.01);
    done.mutable_done()->set_hot_blocks(blocks * kLayers * kKvHeads / 2);
    done.mutable_done()->set_cold_blocks(blocks * kLayers * kKvHeads -
                                         blocks * kLayers * kKvHeads / 2);
    done.mutable_done()->set_hidden_rel_l2(0.01);
    done.mutable_done()->set_next_token_kl(0.02);
    {
      std::lock_guard<std::mutex> lock(mu_);
      shards_[req->job_id()].ready = true;
    }
    writer->Write(done);
    return grpc::Status::OK;
  }

  grpc::Status ReadBlocks(grpc::ServerContext* ctx, const v1::FetchBlocksRequest* req,
                          grpc::ServerWriter<v1::KvChunk>* writer) override {
    v1::ShardRequest shard;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = shards_.find(req->cache_id());
      if (it == shards_.end()) return {grpc::StatusCode::NOT_FOUND, "no such shard"};
      shard = it->second.request;
      ++reads_;
    }
    const int32_t b = shard.selection().block_size();
    const int64_t begin = shard.peers(shard.rank()).token_begin();
    const int64_t end = shard.peers(shard.rank()).token_end();
    // Global block indices in and out, as the real worker speaks them.
    for (const v1::BlockRange& r : req->ranges()) {
      if (stall_reads_from_layer.load() >= 0 && r.layer() >= stall_reads_from_layer.load()) {
        while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return {grpc::StatusCode::CANCELLED, "cancelled while stalled"};
      }
      if (r.first_block() < begin / b || (r.first_block() + r.num_blocks()) * b > end + b - 1) {
        return {grpc::StatusCode::INVALID_ARGUMENT, "blocks outside this shard"};
      }
      for (int64_t global = r.first_block(); global < r.first_block() + r.num_blocks();
           ++global) {
        const int64_t tokens = std::min<int64_t>(b, end - global * b);
        v1::KvChunk c;
        c.set_cache_id(req->cache_id());
        c.set_layer(r.layer());
        c.set_kv_head(r.kv_head());
        c.set_first_block(global);
        c.set_tier(IsHot(global) ? v1::TIER_HOST : v1::TIER_DISK);
        c.set_hot(IsHot(global));
        rpc::AppendBlock(&c, BlockBytes(req->cache_id(), r.layer(), r.kv_head(), global, tokens));
        if (!writer->Write(c)) return {grpc::StatusCode::CANCELLED, "write failed"};
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status GetShardManifest(grpc::ServerContext*, const v1::ShardManifestRequest* req,
                                v1::ShardManifest* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = shards_.find(req->cache_id());
    if (it == shards_.end()) return {grpc::StatusCode::NOT_FOUND, "no such shard"};
    const v1::ShardRequest& s = it->second.request;
    out->set_cache_id(req->cache_id());
    v1::CacheLayout* l = out->mutable_layout();
    l->set_dtype(v1::DTYPE_BF16);
    l->set_num_layers(kLayers);
    l->set_kv_heads(kKvHeads);
    l->set_head_dim(kHeadDim);
    l->set_block_size(s.selection().block_size());
    l->set_num_tokens(s.num_tokens());
    out->set_token_begin(s.peers(s.rank()).token_begin());
    out->set_token_end(s.peers(s.rank()).token_end());
    out->set_layers_written(it->second.layers_written);
    out->set_ready(it->second.ready);
    return grpc::Status::OK;
  }

  grpc::Status DeleteShard(grpc::ServerContext*, const v1::DeleteShardRequest* req,
                           v1::DeleteShardResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    deleted_.push_back(req->cache_id());
    if (shards_.erase(req->cache_id()) == 0) return {grpc::StatusCode::NOT_FOUND, "no such shard"};
    return grpc::Status::OK;
  }

  // Inspection.
  std::vector<v1::ShardRequest> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  bool HasShard(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    return shards_.count(id) != 0;
  }
  std::vector<std::string> deleted() {
    std::lock_guard<std::mutex> lock(mu_);
    return deleted_;
  }
  // Puts a shard in place as if an earlier coordinator had started it.
  void AddShard(const v1::ShardRequest& req) {
    std::lock_guard<std::mutex> lock(mu_);
    shards_[req.job_id()].request = req;
  }

 private:
  std::mutex mu_;
  std::map<std::string, Shard> shards_;
  std::vector<v1::ShardRequest> requests_;
  std::vector<std::string> deleted_;
  int64_t reads_ = 0;
};

// A fake worker on its own in-process gRPC server at 127.0.0.1:<port>.
struct FakeWorkerServer {
  FakeWorker service;
  std::unique_ptr<rpc::RunningServer> server;
  std::string address;

  absl::Status Start() {
    rpc::ServerOptions o;
    o.address = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<rpc::RunningServer>> s = rpc::StartServer(o, {&service});
    if (!s.ok()) return s.status();
    server = std::move(*s);
    address = "127.0.0.1:" + std::to_string(server->port());
    return absl::OkStatus();
  }
  // As if the process was killed: every connection refused from now on.
  void Kill() {
    if (server) server->Shutdown(std::chrono::milliseconds(0));
    server.reset();
  }
};

}  // namespace sparsefill::coordinator::testing
