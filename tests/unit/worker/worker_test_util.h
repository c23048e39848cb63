// In-process Worker servers on 127.0.0.1 (real gRPC, real KV stores in temp dirs) for the worker
// tests, and the single-process reference they are compared with.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/client/worker_client.h"
#include "services/rpc/convert.h"
#include "services/rpc/server.h"
#include "services/worker/worker.h"
#include "services/worker/worker_service.h"
#include "sparsefill/engine/engine.h"
#include "tests/testing/compare.h"

namespace sparsefill::worker::test_support {

inline constexpr char kFixture[] = "tests/fixtures/hf/qwen3";
inline constexpr char kModel[] = "qwen3-fixture";

struct NodeOptions {
  const auth::TokenTable* tokens = nullptr;  // incoming calls
  std::string peer_token;                    // outgoing calls
  std::chrono::milliseconds peer_timeout{20000};
  uint64_t chunk_bytes = 1u << 20;
  int32_t hot_blocks = 8;
  std::vector<ModelSpec> models;  // default: the fixture as kModel
};

// One worker process' worth of objects, listening on 127.0.0.1:<free port>.
struct Node {
  std::string store_dir;
  std::unique_ptr<Worker> worker;
  std::unique_ptr<WorkerService> service;
  std::unique_ptr<rpc::RunningServer> server;
  std::string address;

  std::unique_ptr<client::WorkerClient> Client(const std::string& token = "") const {
    client::WorkerClient::Options o;
    o.address = address;
    o.token = token;
    o.default_timeout = std::chrono::seconds(60);
    auto c = client::WorkerClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
};

inline std::unique_ptr<Node> StartNode(const NodeOptions& options) {
  auto node = std::make_unique<Node>();
  node->store_dir = sparsefill::testing::MakeTempDir("worker_node");
  WorkerOptions wo;
  wo.models = options.models;
  if (wo.models.empty()) wo.models = {{.name = kModel, .dir = kFixture}};
  wo.store_dir = node->store_dir;
  wo.placement.hot_blocks = options.hot_blocks;
  wo.placement.local_blocks = 2;
  auto w = Worker::Create(wo);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return nullptr;
  node->worker = *std::move(w);
  WorkerService::Options so;
  so.handler.tokens = options.tokens;
  so.peers.token = options.peer_token;
  so.exchange.peer_timeout = options.peer_timeout;
  so.exchange.unreachable_after = std::chrono::milliseconds(1000);
  so.chunk_bytes = options.chunk_bytes;
  auto s = WorkerService::Create(node->worker.get(), so);
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) return nullptr;
  node->service = *std::move(s);
  auto server = rpc::StartServer(rpc::ServerOptions{}, {node->service.get()});
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  node->server = *std::move(server);
  node->server->SetServing(true);
  node->address = absl::StrCat("127.0.0.1:", node->server->port());
  return node;
}

// What one ExecuteShard call returned.
struct ShardCall {
  absl::Status status = absl::UnknownError("not run");
  std::vector<v1::ShardLayerDone> layers;
  std::vector<v1::ShardDone> done;
  double seconds = 0;
};

inline v1::ShardRequest MakeRequest(const kvstore::CacheId& id, int32_t rank,
                                    const std::vector<int64_t>& bounds,
                                    const std::vector<std::string>& addresses,
                                    const std::vector<int32_t>& tokens,
                                    const engine::SelectionConfig& selection,
                                    const std::string& model = kModel) {
  v1::ShardRequest req;
  req.set_job_id(rpc::CacheIdToBytes(id));
  req.set_model(model);
  req.set_rank(rank);
  for (size_t r = 0; r + 1 < bounds.size(); ++r) {
    v1::ShardPeer* p = req.add_peers();
    p->set_rank(static_cast<int32_t>(r));
    p->set_address(addresses[r]);
    p->set_token_begin(bounds[r]);
    p->set_token_end(bounds[r + 1]);
  }
  req.set_num_tokens(bounds.back());
  if (rank >= 0 && static_cast<size_t>(rank) + 1 < bounds.size()) {
    for (int64_t t = bounds[rank]; t < bounds[rank + 1]; ++t) {
      req.mutable_tokens()->add_ids(tokens[static_cast<size_t>(t)]);
    }
  }
  *req.mutable_selection() = rpc::SelectionToProto(selection);
  return req;
}

inline ShardCall CallExecute(client::WorkerClient& c, const v1::ShardRequest& req,
                             std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  ShardCall out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  const auto t0 = std::chrono::steady_clock::now();
  out.status = c.ExecuteShard(
      req,
      [&](const v1::ShardEvent& ev) {
        if (ev.has_layer_done()) out.layers.push_back(ev.layer_done());
        if (ev.has_done()) out.done.push_back(ev.done());
        return absl::OkStatus();
      },
      &ctx);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

// Runs every rank of `bounds` on `nodes` concurrently (rank r on nodes[r]).
inline std::vector<ShardCall> RunJob(const std::vector<Node*>& nodes, const kvstore::CacheId& id,
                                     const std::vector<int64_t>& bounds,
                                     const std::vector<int32_t>& tokens,
                                     const engine::SelectionConfig& selection,
                                     const std::string& token = "",
                                     const std::string& model = kModel) {
  std::vector<std::string> addresses;
  for (Node* n : nodes) addresses.push_back(n->address);
  std::vector<ShardCall> calls(nodes.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < nodes.size(); ++r) {
    threads.emplace_back([&, r] {
      auto c = nodes[r]->Client(token);
      calls[r] = CallExecute(*c, MakeRequest(id, static_cast<int32_t>(r), bounds, addresses, tokens,
                                             selection, model));
    });
  }
  for (auto& t : threads) t.join();
  return calls;
}

// Keeps every layer's K/V of a single-process run.
class KeepingSink final : public engine::LayerSink {
 public:
  absl::Status OnLayer(const engine::LayerKv& kv) override {
    const size_t n = static_cast<size_t>(kv.num_tokens * kv.kv_heads * kv.head_dim);
    k[kv.layer].assign(kv.k, kv.k + n);
    v[kv.layer].assign(kv.v, kv.v + n);
    return absl::OkStatus();
  }
  std::map<int32_t, std::vector<float>> k, v;  // [tokens, kv_heads, head_dim] per layer
};

}  // namespace sparsefill::worker::test_support
