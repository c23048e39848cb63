#include "services/client/worker_client.h"

#include <utility>

#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/sync_stream.h>

#include "absl/strings/str_cat.h"
#include "services/client/client_call.h"
#include "services/common/auth_channel.h"
#include "services/rpc/status.h"
#include "sparsefill/common/status.h"

namespace sparsefill::client {
namespace {

using client_internal::PrepareContext;
using client_internal::ReadStream;

// Says which worker failed: the coordinator puts the cause in its own status (DESIGN §7).
absl::Status Annotate(const absl::Status& status, std::string_view method,
                      const std::string& address) {
  if (status.ok()) return status;
  return absl::Status(
      status.code(), absl::StrCat("worker ", address, " ", AsAbsl(method), ": ", status.message()));
}

}  // namespace

absl::Status WorkerClient::Options::Validate() const {
  if (address.empty()) return absl::InvalidArgumentError("address: empty");
  if (default_timeout.count() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_timeout: must be positive, got ", default_timeout.count(), " ms"));
  }
  if (max_message_bytes < (4 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("max_message_bytes: ", max_message_bytes,
                                                   " is below gRPC's default of 4 MiB"));
  }
  if (bulk_connections < 1 || bulk_connections > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("bulk_connections: ", bulk_connections, " is outside [1, 64]"));
  }
  return security.Validate();
}

WorkerClient::WorkerClient(Options options, std::shared_ptr<grpc::Channel> channel,
                           std::vector<std::shared_ptr<grpc::Channel>> bulk)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::Worker::NewStub(channel_)),
      bulk_(std::move(bulk)) {}

absl::StatusOr<std::unique_ptr<WorkerClient>> WorkerClient::Connect(const Options& options) {
  SF_RETURN_IF_ERROR(options.Validate());
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  SF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      auth::CreateChannel(options.address, options.security, options.token, args));
  std::vector<std::shared_ptr<grpc::Channel>> bulk;
  for (int i = 0; i < options.bulk_connections; ++i) {
    grpc::ChannelArguments b = args;
    // Channels with equal arguments share one connection (gRPC's global subchannel pool); a
    // local pool per channel gives each its own.
    b.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    SF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> ch,
                        auth::CreateChannel(options.address, options.security, options.token, b));
    bulk.push_back(std::move(ch));
  }
  return std::unique_ptr<WorkerClient>(
      new WorkerClient(options, std::move(channel), std::move(bulk)));
}

absl::Status WorkerClient::ExecuteShard(const v1::ShardRequest& request,
                                        const Callback<v1::ShardEvent>& on_event,
                                        grpc::ClientContext* given) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(given, &owned, options_.default_timeout);
  auto reader = stub_->ExecuteShard(ctx, request);
  return Annotate(ReadStream(ctx, reader.get(), on_event), "ExecuteShard", options_.address);
}

absl::Status WorkerClient::PutPayload(const v1::PeerPayload& payload, grpc::ClientContext* given) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(given, &owned, options_.default_timeout);
  v1::PeerAck ack;
  return Annotate(rpc::FromGrpcStatus(stub_->PutPayload(ctx, payload, &ack)), "PutPayload",
                  options_.address);
}

absl::Status WorkerClient::FetchKv(const v1::FetchKvRequest& request,
                                   const Callback<v1::KvRows>& on_rows,
                                   grpc::ClientContext* given) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(given, &owned, options_.default_timeout);
  auto reader = stub_->FetchKv(ctx, request);
  return Annotate(ReadStream(ctx, reader.get(), on_rows), "FetchKv", options_.address);
}

absl::Status WorkerClient::ReadBlocks(const v1::FetchBlocksRequest& request,
                                      const ChunkCallback& on_chunk, grpc::ClientContext* given) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(given, &owned, options_.default_timeout);
  auto reader = stub_->ReadBlocks(ctx, request);
  return Annotate(ReadStream(ctx, reader.get(), on_chunk), "ReadBlocks", options_.address);
}

absl::Status WorkerClient::ReadBlocksWire(const v1::FetchBlocksRequest& request,
                                          const WireCallback& on_chunk,
                                          grpc::ClientContext* given) {
  // The generated stub would parse every chunk; a reader of raw buffers over the same method
  // leaves that to the caller.
  static const grpc::internal::RpcMethod kMethod("/sparsefill.v1.Worker/ReadBlocks",
                                                 grpc::internal::RpcMethod::SERVER_STREAMING);
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(given, &owned, options_.default_timeout);
  grpc::Channel* channel = bulk_[next_bulk_.fetch_add(1) % bulk_.size()].get();
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel, kMethod, ctx,
                                                                    request));
  return Annotate(ReadStream(ctx, reader.get(), on_chunk), "ReadBlocks", options_.address);
}

absl::StatusOr<v1::ShardManifest> WorkerClient::GetShardManifest(
    const v1::ShardManifestRequest& request, grpc::ClientContext* given) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(given, &owned, options_.default_timeout);
  v1::ShardManifest reply;
  SF_RETURN_IF_ERROR(Annotate(rpc::FromGrpcStatus(stub_->GetShardManifest(ctx, request, &reply)),
                              "GetShardManifest", options_.address));
  return reply;
}

absl::Status WorkerClient::DeleteShard(const v1::DeleteShardRequest& request,
                                       grpc::ClientContext* given) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(given, &owned, options_.default_timeout);
  v1::DeleteShardResponse reply;
  return Annotate(rpc::FromGrpcStatus(stub_->DeleteShard(ctx, request, &reply)), "DeleteShard",
                  options_.address);
}

absl::StatusOr<v1::ListShardsResponse> WorkerClient::ListShards(grpc::ClientContext* given) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(given, &owned, options_.default_timeout);
  v1::ListShardsResponse reply;
  SF_RETURN_IF_ERROR(
      Annotate(rpc::FromGrpcStatus(stub_->ListShards(ctx, v1::ListShardsRequest(), &reply)),
               "ListShards", options_.address));
  return reply;
}

}  // namespace sparsefill::client
