// What every client call of sparsefill does: a context with a deadline, and server streams read
// until their end, a callback's error, or the deadline.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include <grpcpp/client_context.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>

#include "absl/status/status.h"
#include "services/rpc/deadline.h"
#include "services/rpc/status.h"

namespace sparsefill::client_internal {

// `given` when not null (e.g. rpc::ChildContext of the server call being handled), else a fresh
// context in `owned`; either way the call ends at a deadline: `given`'s own, or now + timeout.
grpc::ClientContext* PrepareContext(grpc::ClientContext* given,
                                    std::unique_ptr<grpc::ClientContext>* owned,
                                    std::chrono::milliseconds timeout);

// Starts the server-streaming call `method` with `request`, its replies read as the bytes gRPC
// received (e.g. into rpc::KvChunkFrame, without protobuf's copy of bulk fields): the same call
// as the generated stub's, on the same channel. `method` is the full name as a string literal
// ("/package.Service/Method"), which gRPC keeps pointing to.
template <typename Request>
std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> OpenByteStream(
    grpc::ChannelInterface* channel, const char* method, grpc::ClientContext* ctx,
    const Request& request) {
  // The call copies the method's name when it is created; `rpc` need not outlive it.
  const grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::SERVER_STREAMING);
  return std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>>(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel, rpc, ctx, request));
}

// Reads `reader` to its end, passing every message to `on_message`. When the callback fails the
// call is cancelled and its status returned; otherwise the server's final status.
template <typename Msg, typename Callback>
absl::Status ReadStream(grpc::ClientContext* ctx, grpc::ClientReaderInterface<Msg>* reader,
                        Callback&& on_message) {
  Msg msg;
  absl::Status callback_status;
  while (reader->Read(&msg)) {
    callback_status = on_message(msg);
    if (!callback_status.ok()) {
      ctx->TryCancel();
      // Drain what is already in flight so Finish does not wait on unread messages.
      while (reader->Read(&msg)) {
      }
      break;
    }
  }
  const absl::Status server_status = rpc::FromGrpcStatus(reader->Finish());
  return callback_status.ok() ? server_status : callback_status;
}

}  // namespace sparsefill::client_internal
