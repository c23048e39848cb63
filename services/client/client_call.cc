#include "services/client/client_call.h"

namespace sparsefill::client_internal {

grpc::ClientContext* PrepareContext(grpc::ClientContext* given,
                                    std::unique_ptr<grpc::ClientContext>* owned,
                                    std::chrono::milliseconds timeout) {
  grpc::ClientContext* ctx = given;
  if (ctx == nullptr) {
    *owned = std::make_unique<grpc::ClientContext>();
    ctx = owned->get();
  }
  if (ctx->deadline() == rpc::kNoDeadline) ctx->set_deadline(rpc::Now() + timeout);
  return ctx;
}

}  // namespace sparsefill::client_internal
