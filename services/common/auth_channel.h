// Client channels: transport credentials plus the caller's bearer token on every call.
#pragma once

#include <memory>
#include <string_view>

#include <grpcpp/channel.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/status/statusor.h"
#include "services/common/auth_tls.h"

namespace sparsefill::auth {

// True for 127.0.0.0/8, [::1], localhost and unix: addresses ("host:port" or a gRPC target).
bool IsLoopbackAddress(std::string_view address);

// A channel to `address` secured by `security`. When `bearer_token` is not empty every call on
// the channel carries "authorization: Bearer <token>". The token travels through a client
// interceptor rather than grpc::CallCredentials because gRPC drops call credentials on
// plaintext channels, which loopback tests and the embedded mode use; over plaintext to a
// non-loopback address the token is refused (InvalidArgument) unless
// security.allow_token_over_insecure. `args` carries extra channel arguments (message sizes).
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannel(std::string_view address,
                                                             const ChannelSecurityOptions& security,
                                                             std::string_view bearer_token,
                                                             grpc::ChannelArguments args = {});

}  // namespace sparsefill::auth
