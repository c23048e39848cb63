// Deadlines (DESIGN §7: every RPC has one; no stream hangs silently). Servers read the caller's
// deadline; clients always set one; a downstream call gets a child deadline that leaves the
// caller time to report the failure upstream.
#pragma once

#include <chrono>
#include <memory>
#include <optional>

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sparsefill::rpc {

using Deadline = std::chrono::system_clock::time_point;
// What gRPC reports for a call without a deadline.
inline constexpr Deadline kNoDeadline = Deadline::max();

inline Deadline Now() { return std::chrono::system_clock::now(); }

// The caller's deadline of a server call, kNoDeadline when it set none.
Deadline ServerDeadline(const grpc::ServerContext& ctx);

// Time until `deadline` (negative once passed); nullopt for kNoDeadline.
std::optional<std::chrono::milliseconds> TimeLeft(Deadline deadline, Deadline now = Now());

// DEADLINE_EXCEEDED naming `what` when `deadline` has passed, else OK.
absl::Status CheckDeadline(Deadline deadline, std::string_view what, Deadline now = Now());

// Client side: the call ends at now + timeout. InvalidArgument for a non-positive timeout.
absl::Status SetTimeout(grpc::ClientContext* ctx, std::chrono::milliseconds timeout);

struct ChildDeadlineOptions {
  // Kept back from the parent's deadline so the parent can still turn the child's failure into
  // its own answer. Default 50 ms.
  std::chrono::milliseconds margin{50};
  // Longest a child call may take, and its timeout when the parent has no deadline (a child
  // always gets one). Default 10 minutes (a long prefill shard).
  std::chrono::milliseconds max_timeout{std::chrono::minutes(10)};

  absl::Status Validate() const;  // InvalidArgument for negative margin or non-positive max
};

// min(parent - margin, now + max_timeout); DEADLINE_EXCEEDED when that is not in the future.
absl::StatusOr<Deadline> ChildDeadline(Deadline parent, const ChildDeadlineOptions& options = {},
                                       Deadline now = Now());

// A client context for a downstream call made while serving `parent`: cancelled when the parent
// is cancelled (gRPC propagation), with ChildDeadline of the parent's deadline.
absl::StatusOr<std::unique_ptr<grpc::ClientContext>> ChildContext(
    const grpc::ServerContext& parent, const ChildDeadlineOptions& options = {});

}  // namespace sparsefill::rpc
