#include "services/rpc/call_handler.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/rpc/status.h"
#include "sparsefill/common/status.h"

namespace sparsefill::rpc {

std::string FormatCallRecord(const CallRecord& r) {
  std::string line = absl::StrFormat("rpc %s peer=%s tenant=%s status=%s %.6fs", AsAbsl(r.method),
                                     AsAbsl(r.peer), r.tenant.empty() ? "-" : AsAbsl(r.tenant),
                                     absl::StatusCodeToString(r.code), r.seconds);
  if (r.code != absl::StatusCode::kOk) absl::StrAppend(&line, ": ", AsAbsl(r.message));
  return line;
}

void OstreamCallLogger::LogCall(const CallRecord& record) {
  const std::string line = FormatCallRecord(record);
  std::lock_guard<std::mutex> lock(mu_);
  *out_ << line << '\n';
  out_->flush();
}

absl::Status CallHandler::Admit(CallInfo* call) const {
  call->deadline = ServerDeadline(*call->ctx);
  if (options_.tokens != nullptr) {
    SF_ASSIGN_OR_RETURN(call->tenant,
                        auth::AuthenticateCall(*call->ctx, *options_.tokens, options_.clock));
  }
  // A call whose deadline passed while it waited for a thread is not worth starting.
  return CheckDeadline(call->deadline, call->method);
}

grpc::Status CallHandler::Finish(const CallInfo& call, const absl::Status& status,
                                 std::chrono::steady_clock::time_point start) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int code = static_cast<int>(status.code());
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = counts_.find(call.method);
    if (it == counts_.end())
      it = counts_.emplace(std::string(call.method), std::array<int64_t, kNumCodes>{}).first;
    if (code >= 0 && code < kNumCodes) ++it->second[code];
  }
  if (options_.metrics != nullptr)
    options_.metrics->RecordCall(call.method, status.code(), seconds);
  if (options_.logger != nullptr) {
    const std::string peer = call.ctx->peer();
    CallRecord record;
    record.method = call.method;
    record.peer = peer;
    record.tenant = call.tenant;
    record.code = status.code();
    record.message = std::string_view(status.message().data(), status.message().size());
    record.seconds = seconds;
    options_.logger->LogCall(record);
  }
  return ToGrpcStatus(status);
}

int64_t CallHandler::CallCount(std::string_view method, absl::StatusCode code) const {
  const int c = static_cast<int>(code);
  if (c < 0 || c >= kNumCodes) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = counts_.find(method);
  return it == counts_.end() ? 0 : it->second[c];
}

}  // namespace sparsefill::rpc
