#include "services/worker/worker_service.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "services/rpc/convert.h"
#include "services/rpc/deadline.h"
#include "services/rpc/stream_writer.h"
#include "services/worker/wire_chunk.h"
#include "sparsefill/common/status.h"

namespace sparsefill::worker {
namespace {

// Proto -> ShardJob; every problem names the request field.
absl::StatusOr<ShardJob> ToJob(const v1::ShardRequest& req, const Worker& worker,
                               const rpc::CallInfo& call) {
  ShardJob job;
  SF_ASSIGN_OR_RETURN(job.id, rpc::CacheIdFromBytes(req.job_id(), "job_id"));
  job.model = req.model();
  SF_ASSIGN_OR_RETURN(engine::Engine * engine, worker.FindModel(req.model()));
  job.rank = req.rank();
  if (req.peers_size() == 0) {
    return absl::InvalidArgumentError("peers: empty (list every worker of the job by rank)");
  }
  job.bounds.push_back(req.peers(0).token_begin());
  for (int i = 0; i < req.peers_size(); ++i) {
    const v1::ShardPeer& p = req.peers(i);
    if (p.rank() != i) {
      return absl::InvalidArgumentError(absl::StrCat("peers[", i, "].rank: ", p.rank(),
                                                     ", expected ", i, " (peers are by rank)"));
    }
    if (p.token_begin() != job.bounds.back()) {
      return absl::InvalidArgumentError(
          absl::StrCat("peers[", i, "].token_begin: ", p.token_begin(),
                       " does not continue at token ", job.bounds.back()));
    }
    job.bounds.push_back(p.token_end());
    job.peer_addresses.push_back(p.address());
  }
  job.num_tokens = req.num_tokens();
  job.tokens.assign(req.tokens().ids().begin(), req.tokens().ids().end());
  SF_ASSIGN_OR_RETURN(job.selection, rpc::ResolveSelection(req.selection(), engine->config()));
  job.measure = req.measure();
  if (req.information_loss_queries() < engine::kEveryQuery) {
    return absl::InvalidArgumentError(absl::StrCat(
        "information_loss_queries: ", req.information_loss_queries(),
        ", give a positive number of query positions, -1 (every query) or 0 (the default)"));
  }
  if (req.information_loss_queries() != 0) {
    job.information_loss_queries = req.information_loss_queries();
  }
  if (req.ttl_seconds() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_seconds: must be >= 0, got ", req.ttl_seconds()));
  }
  job.ttl_ms = req.ttl_seconds() == 0 ? -1 : req.ttl_seconds() * 1000;
  // The coordinator authenticated the client and names its tenant; direct callers own theirs.
  job.tenant = req.tenant().empty() ? call.tenant : req.tenant();
  job.deadline = call.deadline;
  grpc::ServerContext* ctx = call.ctx;
  job.cancelled = [ctx] { return ctx->IsCancelled(); };
  return job;
}

// What a request that failed ToJob still says about its job: enough to tell the peers.
std::optional<ShardJob> PeersOf(const v1::ShardRequest& req) {
  auto id = rpc::CacheIdFromBytes(req.job_id(), "job_id");
  if (!id.ok() || req.rank() < 0 || req.rank() >= req.peers_size()) return std::nullopt;
  ShardJob job;
  job.id = *id;
  job.rank = req.rank();
  for (const v1::ShardPeer& p : req.peers()) job.peer_addresses.push_back(p.address());
  return job;
}

v1::ShardManifest ToProto(const ShardInfo& s) {
  v1::ShardManifest m;
  m.set_cache_id(rpc::CacheIdToBytes(s.id));
  *m.mutable_layout() = rpc::CacheLayoutToProto(s.layout);
  m.set_token_begin(s.token_begin);
  m.set_token_end(s.token_end);
  m.set_layers_written(s.layers_written);
  m.set_ready(s.ready);
  m.set_hot_blocks(s.hot_blocks);
  m.set_cold_blocks(s.cold_blocks);
  return m;
}

}  // namespace

absl::Status WorkerService::Options::Validate() const {
  if (chunk_bytes == 0 || chunk_bytes > (32u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_bytes: ", chunk_bytes, " is outside (0, 32 MiB]"));
  }
  SF_RETURN_IF_ERROR(peers.Validate());
  SF_RETURN_IF_ERROR(tickets.Validate());
  return exchange.Validate();
}

namespace {
// The index of ReadBlocks among the Worker service's methods (worker.proto order), as the
// generated WithSplitStreamingMethod_ReadBlocks uses it.
constexpr int kReadBlocksMethod = 3;
constexpr int kStreamShardMethod = 10;

rpc::CallHandler::Options WithoutTokens(rpc::CallHandler::Options o) {
  o.tokens = nullptr;
  return o;
}

// A chunk the store produced, as the wire message ReadBlocks and StreamShard send.
grpc::ByteBuffer ToWire(const std::string& id_bytes, BlockChunk& c) {
  v1::KvChunk header;
  header.set_cache_id(id_bytes);
  header.set_layer(c.run.layer);
  header.set_kv_head(c.run.kv_head);
  header.set_first_block(c.run.first_block);
  header.set_num_blocks(c.run.num_blocks);
  header.set_tier(rpc::TierToProto(c.tier));
  header.set_hot(c.hot);
  header.mutable_xxh64()->Assign(c.checksums.begin(), c.checksums.end());
  return WireKvChunk(header, std::move(c.data));
}

}  // namespace

WorkerService::WorkerService(Worker* worker, Options options)
    : worker_(worker),
      options_(options),
      handler_(options.handler),
      ticket_handler_(WithoutTokens(options.handler)),
      tickets_(options.tickets),
      channels_(options.peers),
      exchanges_(&channels_, options.exchange) {
  MarkMethodStreamed(
      kReadBlocksMethod,
      new grpc::internal::SplitServerStreamingHandler<v1::FetchBlocksRequest, grpc::ByteBuffer>(
          [this](grpc::ServerContext* ctx,
                 grpc::ServerSplitStreamer<v1::FetchBlocksRequest, grpc::ByteBuffer>* stream) {
            return ReadBlocksWire(ctx, stream);
          }));
  MarkMethodStreamed(
      kStreamShardMethod,
      new grpc::internal::SplitServerStreamingHandler<v1::StreamShardRequest, grpc::ByteBuffer>(
          [this](grpc::ServerContext* ctx,
                 grpc::ServerSplitStreamer<v1::StreamShardRequest, grpc::ByteBuffer>* stream) {
            return StreamShardWire(ctx, stream);
          }));
}

absl::StatusOr<std::unique_ptr<WorkerService>> WorkerService::Create(Worker* worker,
                                                                     Options options) {
  if (worker == nullptr) return absl::InvalidArgumentError("worker: null");
  SF_RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<WorkerService>(new WorkerService(worker, std::move(options)));
}

grpc::Status WorkerService::ExecuteShard(grpc::ServerContext* ctx, const v1::ShardRequest* req,
                                         grpc::ServerWriter<v1::ShardEvent>* out) {
  return handler_.Handle(ctx, "ExecuteShard", [&](const rpc::CallInfo& call) -> absl::Status {
    absl::StatusOr<ShardJob> job_or = ToJob(*req, *worker_, call);
    if (!job_or.ok()) {
      // The peers wait for this rank from their first exchange on: a request this rank refuses
      // (an unknown model, a bad selection) fails them now instead of at their deadline.
      if (std::optional<ShardJob> peers = PeersOf(*req)) {
        exchanges_.AbortPeers(*peers, job_or.status());
      }
      return job_or.status();
    }
    ShardJob job = *std::move(job_or);
    rpc::StreamWriter<v1::ShardEvent> writer(call, out, handler_.metrics());
    metrics::PrefillMetricSet* m = options_.prefill_metrics;
    auto on_layer = [&](const ShardLayerEvent& e) -> absl::Status {
      if (m != nullptr) {
        m->RecordLayer(e.layer, e.selected_keys, e.causal_keys, e.information_loss_sum,
                       e.information_loss_count);
      }
      v1::ShardEvent ev;
      v1::ShardLayerDone* d = ev.mutable_layer_done();
      d->set_layer(e.layer);
      d->set_selected_keys(e.selected_keys);
      d->set_causal_keys(e.causal_keys);
      d->set_information_loss_sum(e.information_loss_sum);
      d->set_information_loss_count(e.information_loss_count);
      d->set_hot_blocks(e.hot_blocks);
      d->set_cold_blocks(e.cold_blocks);
      return writer.Write(ev);
    };
    absl::StatusOr<ShardOutcome> outcome = worker_->ExecuteShard(job, exchanges_, on_layer);
    if (m != nullptr) {
      m->RecordPrefill(outcome.status().code(), static_cast<int64_t>(job.tokens.size()),
                       outcome.ok() ? outcome->seconds : 0.0);
    }
    if (!outcome.ok()) return outcome.status();
    const ShardOutcome& done = *outcome;
    v1::ShardEvent ev;
    v1::ShardDone* d = ev.mutable_done();
    d->set_seconds(done.seconds);
    d->set_hot_blocks(done.hot_blocks);
    d->set_cold_blocks(done.cold_blocks);
    d->set_hidden_rel_l2(done.hidden_rel_l2);
    d->set_next_token_kl(done.next_token_kl);
    return writer.Write(ev);
  });
}

grpc::Status WorkerService::PutPayload(grpc::ServerContext* ctx, const v1::PeerPayload* req,
                                       v1::PeerAck* /*resp*/) {
  return handler_.Handle(ctx, "PutPayload", [&]() -> absl::Status {
    SF_ASSIGN_OR_RETURN(kvstore::CacheId id, rpc::CacheIdFromBytes(req->job_id(), "job_id"));
    SF_ASSIGN_OR_RETURN(std::shared_ptr<JobMailbox> box, worker_->mailbox().Open(id.ToHex()));
    return box->Deliver(req->layer(), req->tag(), req->from_rank(), req->data());
  });
}

grpc::Status WorkerService::FetchKv(grpc::ServerContext* ctx, const v1::FetchKvRequest* req,
                                    grpc::ServerWriter<v1::KvRows>* out) {
  return handler_.Handle(ctx, "FetchKv", [&](const rpc::CallInfo& call) -> absl::Status {
    SF_ASSIGN_OR_RETURN(kvstore::CacheId id, rpc::CacheIdFromBytes(req->job_id(), "job_id"));
    if (req->begins_size() != req->ends_size() || req->begins_size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat("begins/ends: ", req->begins_size(), " and ",
                                                     req->ends_size(),
                                                     " values; expected the same non-zero count"));
    }
    std::vector<engine::TokenRange> ranges(static_cast<size_t>(req->begins_size()));
    for (int i = 0; i < req->begins_size(); ++i) {
      ranges[static_cast<size_t>(i)] = {req->begins(i), req->ends(i)};
    }
    SF_ASSIGN_OR_RETURN(std::shared_ptr<JobMailbox> box, worker_->mailbox().Open(id.ToHex()));
    WaitOptions wait;
    const auto timeout = rpc::TimeLeft(call.deadline).value_or(options_.exchange.peer_timeout);
    wait.deadline = std::chrono::steady_clock::now() +
                    std::min<std::chrono::milliseconds>(timeout, options_.exchange.peer_timeout);
    wait.poll = options_.exchange.poll;
    wait.check = [ctx](std::span<const int32_t>) {
      return ctx->IsCancelled() ? absl::CancelledError("the FetchKv caller went away")
                                : absl::OkStatus();
    };
    SF_ASSIGN_OR_RETURN(std::string bytes, box->ReadRows(req->layer(), ranges, wait));
    rpc::StreamWriter<v1::KvRows> writer(call, out, handler_.metrics());
    const size_t step = options_.exchange.max_rows_bytes;
    v1::KvRows msg;
    for (size_t at = 0; at < bytes.size(); at += step) {
      msg.set_data(bytes.data() + at, std::min(step, bytes.size() - at));
      SF_RETURN_IF_ERROR(writer.Write(msg));
    }
    return absl::OkStatus();
  });
}

grpc::Status WorkerService::ReadBlocksWire(
    grpc::ServerContext* ctx,
    grpc::ServerSplitStreamer<v1::FetchBlocksRequest, grpc::ByteBuffer>* stream) {
  return handler_.Handle(ctx, "ReadBlocks", [&]() -> absl::Status {
    v1::FetchBlocksRequest req;
    if (!stream->Read(&req)) {
      return absl::InvalidArgumentError(
          "ReadBlocks: no request message (or one that does not "
          "parse as a FetchBlocksRequest)");
    }
    SF_ASSIGN_OR_RETURN(kvstore::CacheId id, rpc::CacheIdFromBytes(req.cache_id(), "cache_id"));
    std::vector<BlockRun> runs;
    runs.reserve(static_cast<size_t>(req.ranges_size()));
    for (const v1::BlockRange& r : req.ranges()) {
      runs.push_back({.layer = r.layer(),
                      .kv_head = r.kv_head(),
                      .first_block = r.first_block(),
                      .num_blocks = r.num_blocks()});
    }
    if (runs.empty()) return absl::InvalidArgumentError("ranges: empty");
    const std::string id_bytes = rpc::CacheIdToBytes(id);
    int64_t written = 0;
    return worker_->ReadBlocks(
        id, runs, options_.chunk_bytes,
        [&](BlockChunk& c) -> absl::Status {
          // The checks rpc::StreamWriter makes: a gone client or a passed deadline ends the
          // stream with the status saying which.
          SF_RETURN_IF_ERROR(rpc::StreamStopStatus(*ctx, "ReadBlocks", written, false));
          const size_t bytes = c.data.size();
          grpc::ByteBuffer wire = ToWire(id_bytes, c);
          if (!stream->Write(wire)) {
            return rpc::StreamStopStatus(*ctx, "ReadBlocks", written, /*write_failed=*/true);
          }
          ++written;
          if (handler_.metrics() != nullptr) {
            handler_.metrics()->RecordStreamMessage("ReadBlocks", bytes);
          }
          return absl::OkStatus();
        },
        req.hot_pass());
  });
}

grpc::Status WorkerService::IssueStreamTicket(grpc::ServerContext* ctx, const v1::StreamTicket* req,
                                              v1::StreamTicketAck* resp) {
  return handler_.Handle(ctx, "IssueStreamTicket", [&]() -> absl::Status {
    SF_ASSIGN_OR_RETURN(kvstore::CacheId id, rpc::CacheIdFromBytes(req->cache_id(), "cache_id"));
    // The coordinator's view of the shard must be this worker's: a ticket for anything else
    // would stream blocks the coordinator did not mean to hand out.
    SF_ASSIGN_OR_RETURN(ShardInfo info, worker_->GetShard(id));
    if (!info.ready) {
      return absl::FailedPreconditionError(
          absl::StrCat("cache ", id.ToHex(), ": this worker's shard is not READY (",
                       info.layers_written, " of ", info.layout.num_layers, " layers stored)"));
    }
    if (info.tenant != req->tenant()) {
      return absl::FailedPreconditionError(
          absl::StrCat("cache ", id.ToHex(), ": tenant \"", req->tenant(),
                       "\" is not the tenant of this worker's shard"));
    }
    if (info.token_begin != req->token_begin() || info.token_end != req->token_end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cache ", id.ToHex(), ": this worker holds tokens [", info.token_begin, ", ",
          info.token_end, "), not [", req->token_begin(), ", ", req->token_end(), ")"));
    }
    TicketGrant grant;
    grant.cache_id = req->cache_id();
    grant.tenant = req->tenant();
    grant.token_begin = req->token_begin();
    grant.token_end = req->token_end();
    SF_RETURN_IF_ERROR(tickets_.Issue(req->ticket(), std::move(grant), req->ttl_ms()));
    resp->set_address(options_.advertise_address);
    return absl::OkStatus();
  });
}

grpc::Status WorkerService::StreamShardWire(
    grpc::ServerContext* ctx,
    grpc::ServerSplitStreamer<v1::StreamShardRequest, grpc::ByteBuffer>* stream) {
  return ticket_handler_.Handle(ctx, "StreamShard", [&]() -> absl::Status {
    v1::StreamShardRequest req;
    if (!stream->Read(&req)) {
      return absl::InvalidArgumentError(
          "StreamShard: no request message (or one that does not parse as a "
          "StreamShardRequest)");
    }
    SF_ASSIGN_OR_RETURN(TicketGrant grant, tickets_.Redeem(req.ticket(), req.cache_id()));
    // The ticket matched the cache id bytes it was issued for, so they parse.
    SF_ASSIGN_OR_RETURN(kvstore::CacheId id, rpc::CacheIdFromBytes(req.cache_id(), "cache_id"));
    absl::StatusOr<ShardInfo> info = worker_->GetShard(id);
    // Gone, or replaced by another tenant's or another range since the ticket was issued: the
    // same answer as a bad ticket.
    if (!info.ok() || !info->ready ||
        !grant.Matches(info->tenant, info->token_begin, info->token_end)) {
      return StreamTickets::Denied();
    }
    // Open from the redeemed ticket to the last chunk, every return path included: the
    // stalled-stream alert reads it (a direct stream moves no bytes through the coordinator).
    metrics::StreamMetricSet* const open_metrics = options_.stream_metrics;
    if (open_metrics != nullptr) open_metrics->StreamOpened();
    const absl::Cleanup close_stream = [open_metrics] {
      if (open_metrics != nullptr) open_metrics->StreamClosed();
    };
    const kvstore::CacheLayout& l = info->layout;
    const int64_t first = info->token_begin / l.block_size;
    const int64_t end = (info->token_end + l.block_size - 1) / l.block_size;
    const std::string& id_bytes = req.cache_id();
    int64_t written = 0;
    auto write = [&](BlockChunk& c) -> absl::Status {
      SF_RETURN_IF_ERROR(rpc::StreamStopStatus(*ctx, "StreamShard", written, false));
      const size_t bytes = c.data.size();
      if (!stream->Write(ToWire(id_bytes, c))) {
        return rpc::StreamStopStatus(*ctx, "StreamShard", written, /*write_failed=*/true);
      }
      ++written;
      if (ticket_handler_.metrics() != nullptr) {
        ticket_handler_.metrics()->RecordStreamMessage("StreamShard", bytes);
      }
      if (options_.stream_metrics != nullptr) options_.stream_metrics->RecordChunk(bytes, c.hot);
      return absl::OkStatus();
    };
    // The order of the coordinator's relay, within this shard: each layer's hot blocks (cold
    // runs only noted), then every cold run.
    std::vector<BlockRun> cold;
    for (int32_t layer = 0; layer < l.num_layers; ++layer) {
      std::vector<BlockRun> runs;
      for (int32_t h = 0; h < l.kv_heads; ++h) {
        runs.push_back({.layer = layer,
                        .kv_head = h,
                        .first_block = first,
                        .num_blocks = static_cast<int32_t>(end - first)});
      }
      SF_RETURN_IF_ERROR(worker_->ReadBlocks(
          id, runs, options_.chunk_bytes,
          [&](BlockChunk& c) -> absl::Status {
            if (c.hot) return write(c);
            if (!cold.empty() && cold.back().layer == c.run.layer &&
                cold.back().kv_head == c.run.kv_head &&
                cold.back().first_block + cold.back().num_blocks == c.run.first_block) {
              cold.back().num_blocks += c.run.num_blocks;
            } else {
              cold.push_back(c.run);
            }
            return absl::OkStatus();
          },
          /*hot_pass=*/true));
    }
    if (req.hot_only() || cold.empty()) return absl::OkStatus();
    return worker_->ReadBlocks(id, cold, options_.chunk_bytes, write);
  });
}

grpc::Status WorkerService::GetShardManifest(grpc::ServerContext* ctx,
                                             const v1::ShardManifestRequest* req,
                                             v1::ShardManifest* resp) {
  return handler_.Handle(ctx, "GetShardManifest", [&]() -> absl::Status {
    SF_ASSIGN_OR_RETURN(kvstore::CacheId id, rpc::CacheIdFromBytes(req->cache_id(), "cache_id"));
    SF_ASSIGN_OR_RETURN(ShardInfo info, worker_->GetShard(id));
    *resp = ToProto(info);
    return absl::OkStatus();
  });
}

grpc::Status WorkerService::DeleteShard(grpc::ServerContext* ctx, const v1::DeleteShardRequest* req,
                                        v1::DeleteShardResponse* /*resp*/) {
  return handler_.Handle(ctx, "DeleteShard", [&]() -> absl::Status {
    SF_ASSIGN_OR_RETURN(kvstore::CacheId id, rpc::CacheIdFromBytes(req->cache_id(), "cache_id"));
    return worker_->DeleteShard(id);
  });
}

grpc::Status WorkerService::ListShards(grpc::ServerContext* ctx,
                                       const v1::ListShardsRequest* /*req*/,
                                       v1::ListShardsResponse* resp) {
  return handler_.Handle(ctx, "ListShards", [&]() -> absl::Status {
    for (const ShardInfo& s : worker_->ListShards()) *resp->add_shards() = ToProto(s);
    return absl::OkStatus();
  });
}

grpc::Status WorkerService::DescribeModels(grpc::ServerContext* ctx,
                                           const v1::ListModelsRequest* /*req*/,
                                           v1::ListModelsResponse* resp) {
  return handler_.Handle(ctx, "DescribeModels", [&]() -> absl::Status {
    for (const ModelInfo& m : worker_->Models()) {
      v1::ModelInfo* p = resp->add_models();
      p->set_name(m.name);
      p->set_architecture(std::string(engine::ArchitectureName(m.config.arch)));
      p->set_num_layers(m.config.num_layers);
      p->set_q_heads(m.config.num_heads);
      p->set_kv_heads(m.config.num_kv_heads);
      p->set_head_dim(m.config.head_dim);
      p->set_vocab_size(m.config.vocab_size);
      p->set_max_tokens(m.config.max_position_embeddings);
      p->set_has_tokenizer(m.has_tokenizer);
      p->set_default_policy(rpc::PolicyToProto(rpc::DefaultPolicy(m.config)));
      p->set_kv_dtype(rpc::DTypeToProto(m.config.dtype));
      if (m.config.sparse.present) {
        *p->mutable_sparse_config() = rpc::SparseConfigToProto(m.config.sparse);
      }
    }
    return absl::OkStatus();
  });
}

grpc::Status WorkerService::Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                                     v1::TokenIds* resp) {
  return handler_.Handle(ctx, "Tokenize", [&]() -> absl::Status {
    SF_ASSIGN_OR_RETURN(std::vector<int32_t> ids, worker_->Tokenize(req->model(), req->text()));
    resp->mutable_ids()->Assign(ids.begin(), ids.end());
    return absl::OkStatus();
  });
}

}  // namespace sparsefill::worker
