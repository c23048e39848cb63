#include "services/coordinator/coordinator_service.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "services/rpc/stream_writer.h"
#include "sparsefill/common/status.h"

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

// rpc::StreamWriter for relayed chunks: the same stop statuses and metrics, the wire message
// written as it is.
template <typename Request>
class RelayWriter {
 public:
  RelayWriter(const rpc::CallInfo& call, grpc::ServerSplitStreamer<Request, grpc::ByteBuffer>* out,
              rpc::RpcMetrics* metrics)
      : ctx_(call.ctx), method_(call.method), out_(out), metrics_(metrics) {}

  absl::Status Write(const RelayChunk& chunk) {
    if (!stopped_.ok()) return stopped_;
    stopped_ = rpc::StreamStopStatus(*ctx_, method_, written_, /*write_failed=*/false);
    if (!stopped_.ok()) return stopped_;
    if (!out_->Write(chunk.wire)) {
      stopped_ = rpc::StreamStopStatus(*ctx_, method_, written_, /*write_failed=*/true);
      return stopped_;
    }
    ++written_;
    if (metrics_ != nullptr) metrics_->RecordStreamMessage(method_, chunk.wire.Length());
    return absl::OkStatus();
  }

 private:
  grpc::ServerContext* ctx_;
  std::string_view method_;
  grpc::ServerSplitStreamer<Request, grpc::ByteBuffer>* out_;
  rpc::RpcMetrics* metrics_;
  absl::Status stopped_;
  int64_t written_ = 0;
};

// The indices of the methods in the Coordinator service (coordinator.proto order), as the
// generated WithSplitStreamingMethod_* classes use them.
constexpr int kStreamCacheMethod = 2;
constexpr int kFetchBlocksMethod = 3;

}  // namespace

CoordinatorService::CoordinatorService(Coordinator* coordinator,
                                       rpc::CallHandler::Options handler_options)
    : coordinator_(coordinator), handler_(handler_options) {
  MarkMethodStreamed(
      kStreamCacheMethod,
      new grpc::internal::SplitServerStreamingHandler<v1::StreamCacheRequest, grpc::ByteBuffer>(
          [this](grpc::ServerContext* ctx, WireStream<v1::StreamCacheRequest>* out) {
            return StreamCacheWire(ctx, out);
          }));
  MarkMethodStreamed(
      kFetchBlocksMethod,
      new grpc::internal::SplitServerStreamingHandler<v1::FetchBlocksRequest, grpc::ByteBuffer>(
          [this](grpc::ServerContext* ctx, WireStream<v1::FetchBlocksRequest>* out) {
            return FetchBlocksWire(ctx, out);
          }));
}

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

grpc::Status CoordinatorService::StreamCacheWire(grpc::ServerContext* ctx,
                                                 WireStream<v1::StreamCacheRequest>* out) {
  return handler_.Handle(ctx, "StreamCache", [&](const rpc::CallInfo& call) -> absl::Status {
    v1::StreamCacheRequest request;
    if (!out->Read(&request)) {
      return absl::InvalidArgumentError("StreamCache: no request (or not a StreamCacheRequest)");
    }
    CancelWatcher watcher(ctx);
    RelayWriter<v1::StreamCacheRequest> writer(call, out, handler_.metrics());
    SF_ASSIGN_OR_RETURN(
        std::optional<v1::DirectStreamPlan> plan,
        coordinator_->PlanDirectStream(Context(call, watcher.cancellation()), request));
    if (plan.has_value()) {
      v1::KvChunk answer;
      *answer.mutable_direct_plan() = *std::move(plan);
      return writer.Write(RelayOf(answer));
    }
    return coordinator_->StreamCache(
        Context(call, watcher.cancellation()), request,
        Coordinator::RelaySink([&](const RelayChunk& c) { return writer.Write(c); }));
  });
}

grpc::Status CoordinatorService::FetchBlocksWire(grpc::ServerContext* ctx,
                                                 WireStream<v1::FetchBlocksRequest>* out) {
  return handler_.Handle(ctx, "FetchBlocks", [&](const rpc::CallInfo& call) -> absl::Status {
    v1::FetchBlocksRequest request;
    if (!out->Read(&request)) {
      return absl::InvalidArgumentError("FetchBlocks: no request (or not a FetchBlocksRequest)");
    }
    CancelWatcher watcher(ctx);
    RelayWriter<v1::FetchBlocksRequest> writer(call, out, handler_.metrics());
    return coordinator_->FetchBlocks(
        Context(call, watcher.cancellation()), request,
        Coordinator::RelaySink([&](const RelayChunk& c) { return writer.Write(c); }));
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
