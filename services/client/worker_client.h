// Client of the internal Worker API (coordinator -> worker, worker -> worker). Internal, so it
// speaks the proto messages directly; every call gets a deadline: the context's own when the
// caller passes one (rpc::ChildContext of the call being served), else the default timeout.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/byte_buffer.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/common/auth_tls.h"
#include "sparsefill/v1/worker.grpc.pb.h"

namespace sparsefill::client {

class WorkerClient {
 public:
  struct Options {
    // host:port of the worker. Required.
    std::string address;
    // Default: insecure (loopback tests).
    auth::ChannelSecurityOptions security;
    // Bearer token of the calling service. Default empty: none.
    std::string token;
    // Deadline of calls made without a context of their own. Default 10 minutes (a shard).
    std::chrono::milliseconds default_timeout{std::chrono::minutes(10)};
    // Largest message in either direction (KV rows go in <= 4 MiB messages). Default 64 MiB.
    int max_message_bytes = 64 << 20;
    // ReadBlocksWire calls take turns over this many connections of their own (each an HTTP/2
    // connection with its own TCP socket), so parallel block streams are not serialized on one
    // connection's transport. Default 4; in [1, 64].
    int bulk_connections = 4;

    absl::Status Validate() const;
  };

  template <typename Msg>
  using Callback = std::function<absl::Status(const Msg&)>;
  // Block chunks are handed over mutable so a relay (the coordinator) can forward them without
  // copying their bytes.
  using ChunkCallback = std::function<absl::Status(v1::KvChunk&)>;

  static absl::StatusOr<std::unique_ptr<WorkerClient>> Connect(const Options& options);

  // `ctx` may be null for every call; when given it is used as is (deadline set if it has none).
  absl::Status ExecuteShard(const v1::ShardRequest& request,
                            const Callback<v1::ShardEvent>& on_event,
                            grpc::ClientContext* ctx = nullptr);
  absl::Status PutPayload(const v1::PeerPayload& payload, grpc::ClientContext* ctx = nullptr);
  absl::Status FetchKv(const v1::FetchKvRequest& request, const Callback<v1::KvRows>& on_rows,
                       grpc::ClientContext* ctx = nullptr);
  // Chunks are passed on as received; check them with rpc::VerifyKvChunk.
  absl::Status ReadBlocks(const v1::FetchBlocksRequest& request, const ChunkCallback& on_chunk,
                          grpc::ClientContext* ctx = nullptr);
  // ReadBlocks with each chunk as it arrived: one serialized KvChunk per ByteBuffer, unparsed
  // (a relay reads what it needs with coordinator::ScanKvChunk and forwards the buffer). Runs on
  // one of the bulk connections.
  using WireCallback = std::function<absl::Status(grpc::ByteBuffer&)>;
  absl::Status ReadBlocksWire(const v1::FetchBlocksRequest& request, const WireCallback& on_chunk,
                              grpc::ClientContext* ctx = nullptr);
  absl::StatusOr<v1::ShardManifest> GetShardManifest(const v1::ShardManifestRequest& request,
                                                     grpc::ClientContext* ctx = nullptr);
  absl::Status DeleteShard(const v1::DeleteShardRequest& request,
                           grpc::ClientContext* ctx = nullptr);
  absl::StatusOr<v1::ListShardsResponse> ListShards(grpc::ClientContext* ctx = nullptr);

  const std::string& address() const { return options_.address; }
  v1::Worker::Stub* stub() const { return stub_.get(); }

 private:
  WorkerClient(Options options, std::shared_ptr<grpc::Channel> channel,
               std::vector<std::shared_ptr<grpc::Channel>> bulk);
  Options options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Worker::Stub> stub_;
  std::vector<std::shared_ptr<grpc::Channel>> bulk_;  // [bulk_connections]
  std::atomic<uint64_t> next_bulk_{0};
};

}  // namespace sparsefill::client
