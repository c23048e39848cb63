// The Coordinator gRPC service: a thin adapter over the domain class (STYLE §9). Each handler
// authenticates through rpc::CallHandler (tenant from the bearer token), converts, calls the
// Coordinator and maps the Status back. Streaming handlers turn the client going away into the
// request's Cancellation so worker calls stop with it.
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>

#include "services/coordinator/coordinator.h"
#include "services/rpc/call_handler.h"
#include "sparsefill/v1/coordinator.grpc.pb.h"

namespace sparsefill::coordinator {

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  // `coordinator` is not owned and must outlive the service.
  CoordinatorService(Coordinator* coordinator, rpc::CallHandler::Options handler_options);

  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* request,
                       grpc::ServerWriter<v1::PrefillProgress>* writer) override;
  grpc::Status GetCache(grpc::ServerContext* ctx, const v1::GetCacheRequest* request,
                        v1::CacheInfo* reply) override;
  grpc::Status DeleteCache(grpc::ServerContext* ctx, const v1::DeleteCacheRequest* request,
                           v1::DeleteCacheResponse* reply) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* reply) override;

  rpc::CallHandler& handler() { return handler_; }

 private:
  // StreamCache and FetchBlocks are registered in place of the generated handlers (same methods,
  // same messages on the wire): every chunk goes out in the wire message it came in from the
  // worker, so the coordinator neither parses nor serializes block bytes.
  template <typename Request>
  using WireStream = grpc::ServerSplitStreamer<Request, grpc::ByteBuffer>;
  grpc::Status StreamCacheWire(grpc::ServerContext* ctx, WireStream<v1::StreamCacheRequest>* out);
  grpc::Status FetchBlocksWire(grpc::ServerContext* ctx, WireStream<v1::FetchBlocksRequest>* out);

  Coordinator* coordinator_;
  rpc::CallHandler handler_;
};

}  // namespace sparsefill::coordinator
