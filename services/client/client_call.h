// What every client call of sparsefill does: a context with a deadline, and server streams read
// until their end, a callback's error, or the deadline.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include <grpcpp/client_context.h>
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
