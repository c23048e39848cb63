#include "tools/bench/stream/stream_cluster.h"

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "services/coordinator/coordinator.h"
#include "services/coordinator/coordinator_service.h"
#include "services/coordinator/grpc_worker.h"
#include "services/coordinator/shard_plan.h"
#include "services/rpc/server.h"
#include "services/worker/worker.h"
#include "services/worker/worker_service.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kvstore/record_store.h"
#include "tools/bench/harness/timing.h"

namespace sparsefill::bench {

namespace fs = std::filesystem;

struct StreamCluster::Impl {
  struct Node {
    std::unique_ptr<worker::Worker> worker;
    std::unique_ptr<worker::WorkerService> service;
    std::unique_ptr<rpc::RunningServer> server;
    std::string address;
  };
  ClusterOptions options;
  std::vector<Node> nodes;
  std::unique_ptr<kvstore::RecordStore> registry_store;
  std::unique_ptr<coordinator::Coordinator> coordinator;
  std::unique_ptr<coordinator::CoordinatorService> service;
  std::unique_ptr<rpc::RunningServer> server;
  std::string address;

  ~Impl() {
    // Front to back: no call may reach a component that is already gone.
    if (server) server->Shutdown(std::chrono::seconds(2));
    server.reset();
    if (coordinator) coordinator->Stop();
    service.reset();
    coordinator.reset();
    registry_store.reset();
    for (Node& n : nodes) {
      if (n.server) n.server->Shutdown(std::chrono::seconds(2));
      n.server.reset();
      n.service.reset();
      n.worker.reset();
    }
    std::error_code ec;
    if (!options.dir.empty()) fs::remove_all(options.dir, ec);
  }
};

StreamCluster::StreamCluster(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StreamCluster::~StreamCluster() = default;

const std::string& StreamCluster::address() const { return impl_->address; }

std::vector<std::string> StreamCluster::worker_addresses() const {
  std::vector<std::string> out;
  for (const Impl::Node& n : impl_->nodes) out.push_back(n.address);
  return out;
}

absl::StatusOr<std::unique_ptr<StreamCluster>> StreamCluster::Start(const ClusterOptions& o) {
  if (o.workers < 1) {
    return absl::InvalidArgumentError(absl::StrCat("workers: must be >= 1, got ", o.workers));
  }
  auto impl = std::make_unique<Impl>();
  std::error_code ec;
  fs::remove_all(o.dir, ec);
  fs::create_directories(o.dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", o.dir, ": ", ec.message()));
  impl->options = o;

  for (int i = 0; i < o.workers; ++i) {
    Impl::Node node;
    worker::WorkerOptions wo;
    wo.models = {{.name = "bench-model", .dir = o.model_dir}};
    wo.store_dir = absl::StrCat(o.dir, "/worker-", i);
    wo.default_ttl_ms = 0;  // never expires during the run
    fs::create_directories(wo.store_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("creating ", wo.store_dir, ": ", ec.message()));
    if (o.hot) {
      // Room for the whole cache on every worker (a limit, not a reservation); every block is
      // "local" so all are hot without an importance ranking.
      wo.host_budget_bytes = o.cache_bytes + (64ull << 20);
      wo.placement.init_blocks = 0;
      wo.placement.local_blocks = 1 << 30;
      wo.placement.hot_blocks = 1 << 30;
    } else {
      wo.placement.init_blocks = 0;
      wo.placement.local_blocks = 0;
      wo.placement.hot_blocks = 0;
    }
    SF_ASSIGN_OR_RETURN(node.worker, worker::Worker::Create(wo));
    worker::WorkerService::Options so;
    so.chunk_bytes = o.chunk_bytes;
    SF_ASSIGN_OR_RETURN(node.service, worker::WorkerService::Create(node.worker.get(), so));
    SF_ASSIGN_OR_RETURN(node.server, rpc::StartServer(rpc::ServerOptions{}, {node.service.get()}));
    node.server->SetServing(true);
    node.address = absl::StrCat("127.0.0.1:", node.server->port());
    impl->nodes.push_back(std::move(node));
  }

  coordinator::CoordinatorOptions co;
  std::vector<std::unique_ptr<coordinator::WorkerApi>> apis;
  for (const Impl::Node& n : impl->nodes) {
    client::WorkerClient::Options wo;
    wo.address = n.address;
    wo.default_timeout = co.default_deadline;
    SF_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::GrpcWorker> w,
                        coordinator::GrpcWorker::Connect(wo));
    apis.push_back(std::move(w));
  }
  SF_ASSIGN_OR_RETURN(impl->registry_store, kvstore::RecordStore::Open(o.dir + "/registry"));
  SF_ASSIGN_OR_RETURN(
      impl->coordinator,
      coordinator::Coordinator::Create(
          co, std::make_unique<coordinator::WorkerPool>(std::move(apis), co.health_timeout),
          impl->registry_store.get()));
  impl->service = std::make_unique<coordinator::CoordinatorService>(impl->coordinator.get(),
                                                                    rpc::CallHandler::Options{});
  SF_ASSIGN_OR_RETURN(impl->server, rpc::StartServer(rpc::ServerOptions{}, {impl->service.get()}));
  impl->coordinator->Start();
  impl->server->SetServing(true);
  impl->address = absl::StrCat("127.0.0.1:", impl->server->port());
  return std::unique_ptr<StreamCluster>(new StreamCluster(std::move(impl)));
}

absl::StatusOr<InstalledCache> StreamCluster::Install(SyntheticKv& kv, const std::string& model) {
  const kvstore::CacheLayout& layout = kv.layout();
  SF_ASSIGN_OR_RETURN(
      std::vector<coordinator::ShardRange> shards,
      coordinator::PlanShards(layout.num_tokens, layout.block_size, worker_addresses()));
  InstalledCache out;
  out.id = kvstore::CacheId::Random();
  const auto t0 = std::chrono::steady_clock::now();
  const size_t row = static_cast<size_t>(layout.kv_heads) * layout.head_dim;
  for (const coordinator::ShardRange& s : shards) {
    worker::Worker& w = *impl_->nodes[static_cast<size_t>(s.rank)].worker;
    // What ExecuteShard does: the record first (so a crash leaves nothing unplaceable), then a
    // PENDING cache of the shard's own length, its layers, and Commit.
    worker::ShardRecord record;
    record.id = out.id;
    record.token_begin = s.token_begin;
    record.token_end = s.token_end;
    record.num_tokens = layout.num_tokens;
    record.rank = s.rank;
    record.world_size = static_cast<int32_t>(shards.size());
    record.policy = "dense";
    SF_RETURN_IF_ERROR(w.records().Put(record));
    kvstore::CacheSpec spec;
    spec.model = model;
    spec.layout = layout;
    spec.layout.num_tokens = s.token_end - s.token_begin;
    spec.ttl_ms = 0;
    SF_RETURN_IF_ERROR(w.store().BeginCache(out.id, spec));
    for (int32_t l = 0; l < layout.num_layers; ++l) {
      kv.SetLayer(l);
      kvstore::LayerData d;
      d.layer = l;
      d.token_begin = 0;  // the store holds the shard alone
      d.num_tokens = spec.layout.num_tokens;
      d.k = kv.k() + static_cast<size_t>(s.token_begin) * row;
      d.v = kv.v() + static_cast<size_t>(s.token_begin) * row;
      SF_RETURN_IF_ERROR(w.store().WriteLayer(out.id, d));
    }
    SF_RETURN_IF_ERROR(w.store().Commit(out.id));
    SF_ASSIGN_OR_RETURN(worker::ShardInfo info, w.GetShard(out.id));
    out.hot_blocks += info.hot_blocks;
    out.blocks += info.hot_blocks + info.cold_blocks;
  }
  out.write_seconds = SecondsSince(t0);
  out.bytes = layout.total_bytes();

  coordinator::CacheEntry e;
  e.id = out.id;
  e.tenant = "";
  e.model = model;
  e.state = coordinator::CacheState::kReady;
  e.layout = layout;
  e.dtype_known = true;
  e.policy = "dense";
  e.created_unix_ms = Clock::Real()->NowUnixMillis();
  e.expires_unix_ms = e.created_unix_ms + 24ll * 3600 * 1000;
  e.layers_ready = layout.num_layers;
  e.hot_blocks = out.hot_blocks;
  e.cold_blocks = out.blocks - out.hot_blocks;
  e.bytes = out.bytes;
  e.shards = shards;
  SF_RETURN_IF_ERROR(impl_->coordinator->registry().Create(e));
  return out;
}

}  // namespace sparsefill::bench
