#include "services/common/auth_channel.h"

#include <string>
#include <utility>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/auth_tokens.h"
#include "sparsefill/common/status.h"

namespace sparsefill::auth {
namespace {

class BearerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(std::string(kAuthorizationKey), *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;  // owned by the factory, which the channel keeps past every call
};

class BearerInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(std::string token)
      : header_(absl::StrCat(std::string(kBearerPrefix), token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new BearerInterceptor(&header_);
  }

 private:
  const std::string header_;
};

}  // namespace

bool IsLoopbackAddress(std::string_view address) {
  std::string_view a = address;
  if (absl::StartsWith(AsAbsl(a), "unix:") || absl::StartsWith(AsAbsl(a), "unix-abstract:")) {
    return true;
  }
  if (absl::StartsWith(AsAbsl(a), "dns:///")) a.remove_prefix(7);
  if (absl::StartsWith(AsAbsl(a), "ipv4:") || absl::StartsWith(AsAbsl(a), "ipv6:")) {
    a.remove_prefix(5);
  }
  return absl::StartsWith(AsAbsl(a), "127.") || absl::StartsWith(AsAbsl(a), "[::1]") ||
         a == "localhost" || absl::StartsWith(AsAbsl(a), "localhost:");
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannel(std::string_view address,
                                                             const ChannelSecurityOptions& security,
                                                             std::string_view bearer_token,
                                                             grpc::ChannelArguments args) {
  if (address.empty()) return absl::InvalidArgumentError("address: empty");
  SF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> creds,
                      MakeChannelCredentials(security));
  if (security.mode == TransportSecurity::kTls && !security.target_name_override.empty()) {
    args.SetSslTargetNameOverride(security.target_name_override);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  if (!bearer_token.empty()) {
    if (!ParseBearer(absl::StrCat(std::string(kBearerPrefix), AsAbsl(bearer_token)))) {
      return absl::InvalidArgumentError("token: must not be blank");
    }
    for (char c : bearer_token) {
      if (c <= 0x20 || c >= 0x7f) {
        return absl::InvalidArgumentError("token: holds a space or a non-printable character");
      }
    }
    if (security.mode == TransportSecurity::kInsecure && !IsLoopbackAddress(address) &&
        !security.allow_token_over_insecure) {
      return absl::InvalidArgumentError(
          absl::StrCat("token: refusing to send a bearer token in plaintext to \"", AsAbsl(address),
                       "\"; use TLS or set allow_token_over_insecure"));
    }
    factories.push_back(std::make_unique<BearerInterceptorFactory>(std::string(bearer_token)));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(std::string(address), creds, args,
                                                                 std::move(factories));
}

}  // namespace sparsefill::auth
