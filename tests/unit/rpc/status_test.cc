#include "services/rpc/status.h"

#include <gtest/gtest.h>

#include <set>

namespace sparsefill::rpc {
namespace {

TEST(StatusMapping, EveryCodeRoundTripsOneToOne) {
  std::set<int> grpc_codes;
  for (int c = 0; c <= 16; ++c) {
    const auto code = static_cast<absl::StatusCode>(c);
    SCOPED_TRACE(absl::StatusCodeToString(code));
    const grpc::StatusCode g = ToGrpcCode(code);
    // gRPC and absl number their canonical codes alike; the mapping must keep the meaning.
    EXPECT_EQ(static_cast<int>(g), c);
    grpc_codes.insert(static_cast<int>(g));
    EXPECT_EQ(FromGrpcCode(g), code);

    const absl::Status s = c == 0 ? absl::OkStatus() : absl::Status(code, "why: layer 3");
    const grpc::Status gs = ToGrpcStatus(s);
    EXPECT_EQ(gs.error_code(), g);
    EXPECT_EQ(gs.error_message(), c == 0 ? "" : "why: layer 3");
    EXPECT_EQ(FromGrpcStatus(gs), s);
  }
  EXPECT_EQ(grpc_codes.size(), 17u);  // injective
}

TEST(StatusMapping, CodesOutsideTheVocabularyBecomeUnknownNeverOk) {
  EXPECT_EQ(ToGrpcCode(static_cast<absl::StatusCode>(42)), grpc::StatusCode::UNKNOWN);
  // grpc::StatusCode has no fixed underlying type: its values (-1 .. 16) make -32 .. 31 the
  // codes a peer can put there without undefined behaviour (UBSan checks the range).
  for (const int code : {17, 31}) {
    EXPECT_EQ(FromGrpcCode(static_cast<grpc::StatusCode>(code)), absl::StatusCode::kUnknown);
  }
  const absl::Status s = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(31), "odd"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "odd");
}

}  // namespace
}  // namespace sparsefill::rpc
