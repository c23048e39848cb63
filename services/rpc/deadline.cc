#include "services/rpc/deadline.h"

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::rpc {

Deadline ServerDeadline(const grpc::ServerContext& ctx) { return ctx.deadline(); }

std::optional<std::chrono::milliseconds> TimeLeft(Deadline deadline, Deadline now) {
  if (deadline == kNoDeadline) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
}

absl::Status CheckDeadline(Deadline deadline, std::string_view what, Deadline now) {
  if (deadline == kNoDeadline || now < deadline) return absl::OkStatus();
  const auto late = std::chrono::duration_cast<std::chrono::milliseconds>(now - deadline);
  return absl::DeadlineExceededError(
      absl::StrCat(AsAbsl(what), ": deadline passed ", late.count(), " ms ago"));
}

absl::Status SetTimeout(grpc::ClientContext* ctx, std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must be positive, got ", timeout.count(), " ms"));
  }
  ctx->set_deadline(Now() + timeout);
  return absl::OkStatus();
}

absl::Status ChildDeadlineOptions::Validate() const {
  if (margin.count() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("margin must not be negative, got ", margin.count(), " ms"));
  }
  if (max_timeout.count() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_timeout must be positive, got ", max_timeout.count(), " ms"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Deadline> ChildDeadline(Deadline parent, const ChildDeadlineOptions& options,
                                       Deadline now) {
  SF_RETURN_IF_ERROR(options.Validate());
  Deadline child = now + options.max_timeout;
  if (parent != kNoDeadline) {
    // gRPC carries deadlines as timeouts relative to now, so `parent` is near now: no wrap.
    const Deadline kept_back = parent - options.margin;
    if (kept_back < child) child = kept_back;
  }
  if (child <= now) {
    return absl::DeadlineExceededError(
        absl::StrCat("no time left for a downstream call (parent deadline minus ",
                     options.margin.count(), " ms margin has passed)"));
  }
  return child;
}

absl::StatusOr<std::unique_ptr<grpc::ClientContext>> ChildContext(
    const grpc::ServerContext& parent, const ChildDeadlineOptions& options) {
  SF_ASSIGN_OR_RETURN(const Deadline deadline, ChildDeadline(parent.deadline(), options));
  std::unique_ptr<grpc::ClientContext> ctx = grpc::ClientContext::FromServerContext(parent);
  ctx->set_deadline(deadline);
  return ctx;
}

}  // namespace sparsefill::rpc
