#include "services/rpc/stream_writer.h"

#include "absl/strings/str_cat.h"
#include "services/rpc/deadline.h"
#include "sparsefill/common/status.h"

namespace sparsefill::rpc {

absl::Status StreamStopStatus(const grpc::ServerContext& ctx, std::string_view method,
                              int64_t written, bool write_failed) {
  const Deadline deadline = ctx.deadline();
  if (deadline != kNoDeadline && Now() >= deadline) {
    return absl::DeadlineExceededError(
        absl::StrCat(AsAbsl(method), ": deadline passed after ", written, " streamed messages"));
  }
  if (ctx.IsCancelled()) {
    return absl::CancelledError(
        absl::StrCat(AsAbsl(method), ": client cancelled after ", written, " streamed messages"));
  }
  if (write_failed) {
    return absl::CancelledError(
        absl::StrCat(AsAbsl(method), ": client went away after ", written, " streamed messages"));
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::rpc
