// WorkerApi over gRPC (client::WorkerClient): each call gets a context with the call's deadline,
// and the call's Cancellation cancels the context.
#pragma once

#include <memory>
#include <string>

#include "services/client/worker_client.h"
#include "services/coordinator/worker_api.h"

namespace sparsefill::coordinator {

class GrpcWorker final : public WorkerApi {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcWorker>> Connect(
      const client::WorkerClient::Options& options);

  const std::string& address() const override { return client_->address(); }
  absl::StatusOr<v1::ListModelsResponse> DescribeModels(const CallControl& call) override;
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& model, const std::string& text,
                                                const CallControl& call) override;
  absl::Status ExecuteShard(const v1::ShardRequest& request,
                            const Callback<v1::ShardEvent>& on_event,
                            const CallControl& call) override;
  absl::Status ReadBlocks(const v1::FetchBlocksRequest& request, const ChunkCallback& on_chunk,
                          const CallControl& call) override;
  absl::Status ReadBlocksRelay(const v1::FetchBlocksRequest& request, const RelayCallback& on_chunk,
                               const CallControl& call) override;
  absl::StatusOr<v1::ShardManifest> GetShardManifest(const kvstore::CacheId& id,
                                                     const CallControl& call) override;
  absl::Status DeleteShard(const kvstore::CacheId& id, const CallControl& call) override;
  absl::StatusOr<v1::StreamTicketAck> IssueStreamTicket(const v1::StreamTicket& ticket,
                                                        const CallControl& call) override;

 private:
  explicit GrpcWorker(std::unique_ptr<client::WorkerClient> client) : client_(std::move(client)) {}
  std::unique_ptr<client::WorkerClient> client_;
};

}  // namespace sparsefill::coordinator
