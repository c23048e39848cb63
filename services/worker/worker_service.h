// The Worker gRPC service (worker.proto): a thin adapter over the transport-free Worker (STYLE
// §9). Each handler converts proto -> domain types (INVALID_ARGUMENT names the field), calls the
// Worker through rpc::CallHandler (auth, deadline, logs, metrics), and converts back.
#pragma once

#include <cstdint>
#include <memory>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>

#include "services/metrics/prefill_metrics.h"
#include "services/metrics/server_metrics.h"
#include "services/rpc/call_handler.h"
#include "services/worker/grpc_shard_exchange.h"
#include "services/worker/stream_tickets.h"
#include "services/worker/worker.h"
#include "sparsefill/v1/worker.grpc.pb.h"

namespace sparsefill::worker {

class WorkerService final : public v1::Worker::Service {
 public:
  struct Options {
    // Authentication, logging and metrics of incoming calls (default: none of them).
    rpc::CallHandler::Options handler;
    // Channels (TLS, bearer token) for calls to peers.
    PeerChannels::Options peers;
    // Deadlines and liveness checks of the peer exchange.
    GrpcExchangeOptions exchange;
    // ReadBlocks cuts a chunk once it holds this many bytes (DESIGN §7: >= 1 MiB). Default 1 MiB.
    uint64_t chunk_bytes = 1u << 20;
    // This worker's shards: tokens, latency, per-layer selected and causal keys. Default null:
    // none. Not owned; must outlive the service.
    metrics::PrefillMetricSet* prefill_metrics = nullptr;
    // KV bytes and chunks this worker streams straight to decode nodes (StreamShard; the
    // coordinator counts what it relays). Default null: not counted. Not owned.
    metrics::StreamMetricSet* stream_metrics = nullptr;
    // host:port decode nodes use for StreamShard, told to the coordinator with every ticket.
    // Default empty: the address the coordinator reaches this worker at.
    std::string advertise_address;
    // Stream tickets (limits, clock) of direct StreamShard calls.
    StreamTickets::Options tickets;
    absl::Status Validate() const;
  };

  // `worker` is not owned and must outlive the service.
  static absl::StatusOr<std::unique_ptr<WorkerService>> Create(Worker* worker, Options options);

  grpc::Status ExecuteShard(grpc::ServerContext* ctx, const v1::ShardRequest* req,
                            grpc::ServerWriter<v1::ShardEvent>* out) override;
  grpc::Status PutPayload(grpc::ServerContext* ctx, const v1::PeerPayload* req,
                          v1::PeerAck* resp) override;
  grpc::Status FetchKv(grpc::ServerContext* ctx, const v1::FetchKvRequest* req,
                       grpc::ServerWriter<v1::KvRows>* out) override;
  grpc::Status GetShardManifest(grpc::ServerContext* ctx, const v1::ShardManifestRequest* req,
                                v1::ShardManifest* resp) override;
  grpc::Status DeleteShard(grpc::ServerContext* ctx, const v1::DeleteShardRequest* req,
                           v1::DeleteShardResponse* resp) override;
  grpc::Status ListShards(grpc::ServerContext* ctx, const v1::ListShardsRequest* req,
                          v1::ListShardsResponse* resp) override;
  grpc::Status DescribeModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* req,
                              v1::ListModelsResponse* resp) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                        v1::TokenIds* resp) override;
  grpc::Status IssueStreamTicket(grpc::ServerContext* ctx, const v1::StreamTicket* req,
                                 v1::StreamTicketAck* resp) override;

  const rpc::CallHandler& handler() const { return handler_; }
  // StreamShard's calls (authenticated by their tickets, not by bearer tokens).
  const rpc::CallHandler& ticket_handler() const { return ticket_handler_; }
  StreamTickets& tickets() { return tickets_; }

 private:
  WorkerService(Worker* worker, Options options);
  // ReadBlocks, registered in place of the generated handler (same method, same messages on the
  // wire): each chunk is written as a ready-made wire message (WireKvChunk) whose block bytes
  // are the buffer the store read them into, instead of being copied into a KvChunk and again
  // into its serialization.
  grpc::Status ReadBlocksWire(
      grpc::ServerContext* ctx,
      grpc::ServerSplitStreamer<v1::FetchBlocksRequest, grpc::ByteBuffer>* stream);
  // StreamShard, registered the same way: a decode node's direct stream of this worker's shard.
  grpc::Status StreamShardWire(
      grpc::ServerContext* ctx,
      grpc::ServerSplitStreamer<v1::StreamShardRequest, grpc::ByteBuffer>* stream);

  Worker* worker_;
  Options options_;
  rpc::CallHandler handler_;
  // The handler's options without the token table: decode nodes hold no worker token.
  rpc::CallHandler ticket_handler_;
  StreamTickets tickets_;
  PeerChannels channels_;
  GrpcExchangeFactory exchanges_;
};

}  // namespace sparsefill::worker
