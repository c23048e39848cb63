#include "services/coordinator/grpc_worker.h"

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "services/rpc/convert.h"
#include "services/rpc/status.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {
namespace {

// A context ending at the call's deadline; callers hook the call's Cancellation to TryCancel.
absl::StatusOr<std::unique_ptr<grpc::ClientContext>> MakeContext(const CallControl& call,
                                                                 std::string_view what) {
  if (call.deadline == kNoDeadline) {
    return absl::InternalError(absl::StrCat(AsAbsl(what), ": a worker call without a deadline"));
  }
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(call.deadline);
  return ctx;
}

absl::Status Annotate(const absl::Status& s, std::string_view method, const std::string& address) {
  if (s.ok()) return s;
  return absl::Status(s.code(),
                      absl::StrCat("worker ", address, " ", AsAbsl(method), ": ", s.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcWorker>> GrpcWorker::Connect(
    const client::WorkerClient::Options& options) {
  SF_ASSIGN_OR_RETURN(std::unique_ptr<client::WorkerClient> c,
                      client::WorkerClient::Connect(options));
  return std::unique_ptr<GrpcWorker>(new GrpcWorker(std::move(c)));
}

absl::StatusOr<v1::ListModelsResponse> GrpcWorker::DescribeModels(const CallControl& call) {
  SF_ASSIGN_OR_RETURN(auto ctx, MakeContext(call, "DescribeModels"));
  auto reg = Cancellation::OnCancel(call.cancel, [c = ctx.get()] { c->TryCancel(); });
  v1::ListModelsResponse out;
  const absl::Status s = rpc::FromGrpcStatus(
      client_->stub()->DescribeModels(ctx.get(), v1::ListModelsRequest(), &out));
  SF_RETURN_IF_ERROR(Annotate(s, "DescribeModels", address()));
  return out;
}

absl::StatusOr<std::vector<int32_t>> GrpcWorker::Tokenize(const std::string& model,
                                                          const std::string& text,
                                                          const CallControl& call) {
  SF_ASSIGN_OR_RETURN(auto ctx, MakeContext(call, "Tokenize"));
  auto reg = Cancellation::OnCancel(call.cancel, [c = ctx.get()] { c->TryCancel(); });
  v1::TokenizeRequest req;
  req.set_model(model);
  req.set_text(text);
  v1::TokenIds out;
  const absl::Status s = rpc::FromGrpcStatus(client_->stub()->Tokenize(ctx.get(), req, &out));
  SF_RETURN_IF_ERROR(Annotate(s, "Tokenize", address()));
  return std::vector<int32_t>(out.ids().begin(), out.ids().end());
}

absl::Status GrpcWorker::ExecuteShard(const v1::ShardRequest& request,
                                      const Callback<v1::ShardEvent>& on_event,
                                      const CallControl& call) {
  SF_ASSIGN_OR_RETURN(auto ctx, MakeContext(call, "ExecuteShard"));
  auto reg = Cancellation::OnCancel(call.cancel, [c = ctx.get()] { c->TryCancel(); });
  return client_->ExecuteShard(request, on_event, ctx.get());
}

absl::Status GrpcWorker::ReadBlocks(const v1::FetchBlocksRequest& request,
                                    const ChunkCallback& on_chunk, const CallControl& call) {
  SF_ASSIGN_OR_RETURN(auto ctx, MakeContext(call, "ReadBlocks"));
  auto reg = Cancellation::OnCancel(call.cancel, [c = ctx.get()] { c->TryCancel(); });
  return client_->ReadBlocks(request, on_chunk, ctx.get());
}

absl::Status GrpcWorker::ReadBlocksRelay(const v1::FetchBlocksRequest& request,
                                         const RelayCallback& on_chunk, const CallControl& call) {
  SF_ASSIGN_OR_RETURN(auto ctx, MakeContext(call, "ReadBlocks"));
  auto reg = Cancellation::OnCancel(call.cancel, [c = ctx.get()] { c->TryCancel(); });
  return client_->ReadBlocksWire(
      request,
      [&](grpc::ByteBuffer& wire) -> absl::Status {
        SF_ASSIGN_OR_RETURN(RelayChunk chunk, ScanKvChunk(std::move(wire)));
        return on_chunk(chunk);
      },
      ctx.get());
}

absl::StatusOr<v1::ShardManifest> GrpcWorker::GetShardManifest(const kvstore::CacheId& id,
                                                               const CallControl& call) {
  SF_ASSIGN_OR_RETURN(auto ctx, MakeContext(call, "GetShardManifest"));
  auto reg = Cancellation::OnCancel(call.cancel, [c = ctx.get()] { c->TryCancel(); });
  v1::ShardManifestRequest req;
  req.set_cache_id(rpc::CacheIdToBytes(id));
  return client_->GetShardManifest(req, ctx.get());
}

absl::Status GrpcWorker::DeleteShard(const kvstore::CacheId& id, const CallControl& call) {
  SF_ASSIGN_OR_RETURN(auto ctx, MakeContext(call, "DeleteShard"));
  auto reg = Cancellation::OnCancel(call.cancel, [c = ctx.get()] { c->TryCancel(); });
  v1::DeleteShardRequest req;
  req.set_cache_id(rpc::CacheIdToBytes(id));
  return client_->DeleteShard(req, ctx.get());
}

absl::StatusOr<v1::StreamTicketAck> GrpcWorker::IssueStreamTicket(const v1::StreamTicket& ticket,
                                                                  const CallControl& call) {
  SF_ASSIGN_OR_RETURN(auto ctx, MakeContext(call, "IssueStreamTicket"));
  auto reg = Cancellation::OnCancel(call.cancel, [c = ctx.get()] { c->TryCancel(); });
  v1::StreamTicketAck out;
  const absl::Status s =
      rpc::FromGrpcStatus(client_->stub()->IssueStreamTicket(ctx.get(), ticket, &out));
  SF_RETURN_IF_ERROR(Annotate(s, "IssueStreamTicket", address()));
  return out;
}

}  // namespace sparsefill::coordinator
