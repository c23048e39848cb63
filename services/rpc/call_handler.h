// One helper per gRPC handler call (STYLE §9): authenticates the caller, checks the deadline,
// runs the transport-free domain code, maps its absl::Status onto grpc::Status, and records
// latency, counts by status code and a log line. Owners inject the logger and metrics; there are
// no singletons.
//
//   grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
//                        grpc::ServerWriter<v1::PrefillProgress>* out) override {
//     return handler_.Handle(ctx, "Prefill", [&](const rpc::CallInfo& call) -> absl::Status {
//       ... call.tenant ...
//     });
//   }
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "services/common/auth_tokens.h"
#include "services/rpc/deadline.h"

namespace sparsefill::rpc {

// What one finished call looked like. Views are valid only during the callback.
struct CallRecord {
  std::string_view method;
  std::string_view peer;    // "ipv4:127.0.0.1:51234"
  std::string_view tenant;  // empty when the server does not authenticate
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string_view message;
  double seconds = 0.0;
};

// "rpc Prefill peer=ipv4:... tenant=acme status=OK 0.012s" (+ ": message" when not OK).
std::string FormatCallRecord(const CallRecord& record);

class CallLogger {
 public:
  virtual ~CallLogger() = default;
  // Called once per call, from the handler's thread; must be thread-safe.
  virtual void LogCall(const CallRecord& record) = 0;
};

// Writes FormatCallRecord lines to a stream (serialized). For mains and tests.
class OstreamCallLogger final : public CallLogger {
 public:
  explicit OstreamCallLogger(std::ostream* out) : out_(out) {}
  void LogCall(const CallRecord& record) override;

 private:
  std::mutex mu_;
  std::ostream* out_;
};

// The metrics component implements this (sparsefill_rpc_* names); thread-safe.
class RpcMetrics {
 public:
  virtual ~RpcMetrics() = default;
  virtual void RecordCall(std::string_view method, absl::StatusCode code, double seconds) = 0;
  // One message written on a server stream, `bytes` serialized.
  virtual void RecordStreamMessage(std::string_view method, size_t bytes) = 0;
};

// What a handler knows about its call.
struct CallInfo {
  std::string_view method;
  std::string tenant;  // from the bearer token; empty when the server does not authenticate
  Deadline deadline = kNoDeadline;
  grpc::ServerContext* ctx = nullptr;
};

class CallHandler {
 public:
  struct Options {
    // Every call must carry "authorization: Bearer <token>" known to this table, else
    // UNAUTHENTICATED before the handler runs. Default null: no authentication (loopback tests,
    // internal servers behind mutual TLS). Not owned; must outlive the handler.
    const auth::TokenTable* tokens = nullptr;
    // Token expiry is judged on this clock. Default null: real time. Not owned.
    const Clock* clock = nullptr;
    // Default null: no log line. Not owned.
    CallLogger* logger = nullptr;
    // Default null: no metrics. Not owned.
    RpcMetrics* metrics = nullptr;
  };

  CallHandler() = default;
  explicit CallHandler(Options options) : options_(options) {}

  // Runs `fn` (callable as fn(const CallInfo&) or fn(), returning absl::Status) unless the caller
  // is not authenticated or the deadline has already passed. An exception escaping `fn` becomes
  // INTERNAL naming the method instead of terminating the server.
  template <typename Fn>
  grpc::Status Handle(grpc::ServerContext* ctx, std::string_view method, Fn&& fn);

  // Finished calls of `method` with `code` since construction.
  int64_t CallCount(std::string_view method, absl::StatusCode code) const;
  RpcMetrics* metrics() const { return options_.metrics; }

 private:
  absl::Status Admit(CallInfo* call) const;
  grpc::Status Finish(const CallInfo& call, const absl::Status& status,
                      std::chrono::steady_clock::time_point start);

  static constexpr int kNumCodes = 17;  // absl's canonical codes 0..16
  Options options_;
  mutable std::mutex mu_;
  std::map<std::string, std::array<int64_t, kNumCodes>, std::less<>> counts_;
};

template <typename Fn>
grpc::Status CallHandler::Handle(grpc::ServerContext* ctx, std::string_view method, Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  CallInfo call;
  call.method = method;
  call.ctx = ctx;
  absl::Status status = Admit(&call);
  if (status.ok()) {
    try {
      if constexpr (std::is_invocable_v<Fn&, const CallInfo&>) {
        status = fn(std::as_const(call));
      } else {
        status = fn();
      }
    } catch (const std::exception& e) {
      status = absl::InternalError(
          std::string(method).append(": unexpected exception: ").append(e.what()));
    } catch (...) {
      status = absl::InternalError(std::string(method).append(": unexpected exception"));
    }
  }
  return Finish(call, status, start);
}

}  // namespace sparsefill::rpc
