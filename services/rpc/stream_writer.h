// Server-streaming writes that stop with the status saying why (DESIGN §7: no stream hangs
// silently): CANCELLED when the client cancelled or went away, DEADLINE_EXCEEDED when the call's
// deadline passed. Handlers return the first non-OK status of Write.
//
//   rpc::StreamWriter<v1::KvChunk> out(call, writer, handler_.metrics());
//   for (...) SF_RETURN_IF_ERROR(out.Write(chunk));
#pragma once

#include <cstdint>
#include <string_view>

#include <grpcpp/server_context.h>
#include <grpcpp/support/sync_stream.h>

#include "absl/status/status.h"
#include "services/rpc/call_handler.h"

namespace sparsefill::rpc {

// Why a stream of `method` cannot go on after `written` messages: DEADLINE_EXCEEDED when the
// deadline passed, CANCELLED when the client cancelled or the write failed, OK when neither.
absl::Status StreamStopStatus(const grpc::ServerContext& ctx, std::string_view method,
                              int64_t written, bool write_failed);

template <typename Msg>
class StreamWriter {
 public:
  // `writer` is the handler's grpc::ServerWriter (or its test double interface); `metrics` may be
  // null. Neither is owned.
  StreamWriter(const CallInfo& call, grpc::ServerWriterInterface<Msg>* writer,
               RpcMetrics* metrics = nullptr)
      : ctx_(call.ctx), method_(call.method), writer_(writer), metrics_(metrics) {}

  // Sends `msg`, checking cancellation and the deadline first (a blocked client must not keep
  // the handler producing). Once a write fails every later call returns the same status.
  absl::Status Write(const Msg& msg) {
    if (!stopped_.ok()) return stopped_;
    stopped_ = StreamStopStatus(*ctx_, method_, messages_, /*write_failed=*/false);
    if (!stopped_.ok()) return stopped_;
    const size_t size = msg.ByteSizeLong();
    if (!writer_->Write(msg)) {
      stopped_ = StreamStopStatus(*ctx_, method_, messages_, /*write_failed=*/true);
      return stopped_;
    }
    ++messages_;
    bytes_ += size;
    if (metrics_ != nullptr) metrics_->RecordStreamMessage(method_, size);
    return absl::OkStatus();
  }

  int64_t messages() const { return messages_; }
  uint64_t bytes() const { return bytes_; }

 private:
  grpc::ServerContext* ctx_;
  std::string_view method_;
  grpc::ServerWriterInterface<Msg>* writer_;
  RpcMetrics* metrics_;
  absl::Status stopped_;
  int64_t messages_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace sparsefill::rpc
