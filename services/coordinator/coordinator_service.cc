#include "services/coordinator/coordinator_service.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "services/rpc/stream_writer.h"

namespace sparsefill::coordinator {
namespace {

// Synchronous gRPC handlers learn about a cancelled call only by asking: this watcher asks every
// 20 ms while the handler runs and fires the request's Cancellation.
class CancelWatcher {
 public:
  explicit CancelWatcher(grpc::ServerContext* ctx)
      : thread_([this, ctx] {
          while (!stop_.load()) {
            if (ctx->IsCancelled()) {
              cancel_.Cancel();
              return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }) {}
  ~CancelWatcher() {
    stop_.store(true);
    thread_.join();
  }
  Cancellation* cancellation() { return &cancel_; }

 private:
  Cancellation cancel_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: starts after the members it uses
};

RequestContext Context(const rpc::CallInfo& call, Cancellation* cancel) {
  RequestContext rc;
  rc.tenant = call.tenant;
  rc.deadline = call.deadline;  // rpc::kNoDeadline == kNoDeadline (system_clock max)
  rc.cancel = cancel;
  return rc;
}

}  // namespace

grpc::Status CoordinatorService::Prefill(grpc::ServerContext* ctx,
                                         const v1::PrefillRequest* request,
                                         grpc::ServerWriter<v1::PrefillProgress>* writer) {
  return handler_.Handle(ctx, "Prefill", [&](const rpc::CallInfo& call) {
    CancelWatcher watcher(ctx);
    rpc::StreamWriter<v1::PrefillProgress> out(call, writer, handler_.metrics());
    return coordinator_->Prefill(Context(call, watcher.cancellation()), *request,
                                 [&](const v1::PrefillProgress& m) { return out.Write(m); });
  });
}

grpc::Status CoordinatorService::GetCache(grpc::ServerContext* ctx,
                                          const v1::GetCacheRequest* request,
                                          v1::CacheInfo* reply) {
  return handler_.Handle(ctx, "GetCache", [&](const rpc::CallInfo& call) -> absl::Status {
    absl::StatusOr<v1::CacheInfo> info =
        coordinator_->GetCache(Context(call, nullptr), request->cache_id());
    if (!info.ok()) return info.status();
    *reply = std::move(*info);
    return absl::OkStatus();
  });
}

grpc::Status CoordinatorService::StreamCache(grpc::ServerContext* ctx,
                                             const v1::StreamCacheRequest* request,
                                             grpc::ServerWriter<v1::KvChunk>* writer) {
  return handler_.Handle(ctx, "StreamCache", [&](const rpc::CallInfo& call) {
    CancelWatcher watcher(ctx);
    rpc::StreamWriter<v1::KvChunk> out(call, writer, handler_.metrics());
    return coordinator_->StreamCache(Context(call, watcher.cancellation()), *request,
                                     [&](const v1::KvChunk& m) { return out.Write(m); });
  });
}

grpc::Status CoordinatorService::FetchBlocks(grpc::ServerContext* ctx,
                                             const v1::FetchBlocksRequest* request,
                                             grpc::ServerWriter<v1::KvChunk>* writer) {
  return handler_.Handle(ctx, "FetchBlocks", [&](const rpc::CallInfo& call) {
    CancelWatcher watcher(ctx);
    rpc::StreamWriter<v1::KvChunk> out(call, writer, handler_.metrics());
    return coordinator_->FetchBlocks(Context(call, watcher.cancellation()), *request,
                                     [&](const v1::KvChunk& m) { return out.Write(m); });
  });
}

grpc::Status CoordinatorService::DeleteCache(grpc::ServerContext* ctx,
                                             const v1::DeleteCacheRequest* request,
                                             v1::DeleteCacheResponse*) {
  return handler_.Handle(ctx, "DeleteCache", [&](const rpc::CallInfo& call) {
    return coordinator_->DeleteCache(Context(call, nullptr), request->cache_id());
  });
}

grpc::Status CoordinatorService::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                                            v1::ListModelsResponse* reply) {
  return handler_.Handle(ctx, "ListModels", [&]() {
    *reply = coordinator_->ListModels();
    return absl::OkStatus();
  });
}

}  // namespace sparsefill::coordinator
