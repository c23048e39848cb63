// What the coordinator needs from one worker, without transport types: the domain code calls
// this, GrpcWorker implements it over the internal Worker API. Messages are the API's own
// protobuf types (plain data); deadlines and cancellation are ours.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "services/coordinator/cancellation.h"
#include "services/coordinator/relay_chunk.h"
#include "sparsefill/kvstore/layout.h"
#include "sparsefill/v1/worker.pb.h"

namespace sparsefill::coordinator {

// How one worker call may end early: at `deadline` (DEADLINE_EXCEEDED) or when `cancel` fires
// (CANCELLED). Every call has a deadline; kNoDeadline is refused.
struct CallControl {
  Deadline deadline = kNoDeadline;
  Cancellation* cancel = nullptr;  // may be null
};

class WorkerApi {
 public:
  template <typename Msg>
  using Callback = std::function<absl::Status(const Msg&)>;
  // Mutable, so StreamCache can forward a chunk without copying its bytes.
  using ChunkCallback = std::function<absl::Status(v1::KvChunk&)>;

  virtual ~WorkerApi() = default;
  virtual const std::string& address() const = 0;

  // Errors name the worker's address and the method.
  virtual absl::StatusOr<v1::ListModelsResponse> DescribeModels(const CallControl& call) = 0;
  virtual absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& model,
                                                        const std::string& text,
                                                        const CallControl& call) = 0;
  // A non-OK callback status cancels the call and is returned.
  virtual absl::Status ExecuteShard(const v1::ShardRequest& request,
                                    const Callback<v1::ShardEvent>& on_event,
                                    const CallControl& call) = 0;
  virtual absl::Status ReadBlocks(const v1::FetchBlocksRequest& request,
                                  const ChunkCallback& on_chunk, const CallControl& call) = 0;
  // ReadBlocks for relaying: each chunk with its small fields read and its bytes left in the
  // wire message (RelayChunk). The default serializes ReadBlocks' chunks; GrpcWorker hands over
  // the messages as they arrived.
  using RelayCallback = std::function<absl::Status(RelayChunk&)>;
  virtual absl::Status ReadBlocksRelay(const v1::FetchBlocksRequest& request,
                                       const RelayCallback& on_chunk, const CallControl& call) {
    return ReadBlocks(
        request,
        [&](v1::KvChunk& chunk) {
          RelayChunk relay = RelayOf(chunk);
          return on_chunk(relay);
        },
        call);
  }
  virtual absl::StatusOr<v1::ShardManifest> GetShardManifest(const kvstore::CacheId& id,
                                                             const CallControl& call) = 0;
  virtual absl::Status DeleteShard(const kvstore::CacheId& id, const CallControl& call) = 0;
  // Registers a stream ticket for a direct StreamShard of a decode node; the reply names the
  // address the worker advertises to decode nodes (empty: address()). Workers reached without
  // the internal RPC cannot: UNIMPLEMENTED, and the coordinator relays instead.
  virtual absl::StatusOr<v1::StreamTicketAck> IssueStreamTicket(const v1::StreamTicket& /*ticket*/,
                                                                const CallControl& /*call*/) {
    return absl::UnimplementedError(
        absl::StrCat("worker ", address(), ": no direct streams over this connection"));
  }
};

}  // namespace sparsefill::coordinator
