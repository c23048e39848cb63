// The Coordinator gRPC service: a thin adapter over the domain class (STYLE §9). Each handler
// authenticates through rpc::CallHandler (tenant from the bearer token), converts, calls the
// Coordinator and maps the Status back. Streaming handlers turn the client going away into the
// request's Cancellation so worker calls stop with it.
#pragma once

#include <grpcpp/server_context.h>

#include "services/coordinator/coordinator.h"
#include "services/rpc/call_handler.h"
#include "sparsefill/v1/coordinator.grpc.pb.h"

namespace sparsefill::coordinator {

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  // `coordinator` is not owned and must outlive the service.
  CoordinatorService(Coordinator* coordinator, rpc::CallHandler::Options handler_options)
      : coordinator_(coordinator), handler_(handler_options) {}

  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* request,
                       grpc::ServerWriter<v1::PrefillProgress>* writer) override;
  grpc::Status GetCache(grpc::ServerContext* ctx, const v1::GetCacheRequest* request,
                        v1::CacheInfo* reply) override;
  grpc::Status StreamCache(grpc::ServerContext* ctx, const v1::StreamCacheRequest* request,
                           grpc::ServerWriter<v1::KvChunk>* writer) override;
  grpc::Status FetchBlocks(grpc::ServerContext* ctx, const v1::FetchBlocksRequest* request,
                           grpc::ServerWriter<v1::KvChunk>* writer) override;
  grpc::Status DeleteCache(grpc::ServerContext* ctx, const v1::DeleteCacheRequest* request,
                           v1::DeleteCacheResponse* reply) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* reply) override;

  rpc::CallHandler& handler() { return handler_; }

 private:
  Coordinator* coordinator_;
  rpc::CallHandler handler_;
};

}  // namespace sparsefill::coordinator
