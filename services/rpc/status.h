// absl::Status <-> grpc::Status. Both vocabularies have the same 17 canonical codes; the mapping
// is one-to-one (STYLE §8), and messages travel unchanged.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace sparsefill::rpc {

grpc::StatusCode ToGrpcCode(absl::StatusCode code);
// Codes gRPC does not define (a peer speaking a newer protocol) become kUnknown.
absl::StatusCode FromGrpcCode(grpc::StatusCode code);

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace sparsefill::rpc
