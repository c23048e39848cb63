#include "services/rpc/server.h"

#include <limits>
#include <mutex>
#include <utility>

#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::rpc {
namespace {

// Linking gRPC's reflection library registers its plugin for every server of the process (a
// static initializer); this option makes it a per-server choice: drop that copy, add one back
// only when asked.
class ReflectionOption final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool enabled) : enabled_(enabled) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    auto reflection = std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>();
    const std::string name = reflection->name();
    std::erase_if(*plugins, [&](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
      return p != nullptr && p->name() == name;
    });
    if (enabled_) plugins->push_back(std::move(reflection));
  }

 private:
  bool enabled_;
};

}  // namespace

absl::Status ServerOptions::Validate() const {
  if (address.empty()) return absl::InvalidArgumentError("address: empty");
  if (address.find(':') == std::string::npos && address.rfind("unix:", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("address: \"", address, "\" is not host:port"));
  }
  if (max_message_bytes < (4 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("max_message_bytes: ", max_message_bytes,
                                                   " is below gRPC's default of 4 MiB"));
  }
  if (max_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_threads: must not be negative, got ", max_threads));
  }
  const std::pair<const char*, int64_t> durations[] = {
      {"keepalive_time_ms", keepalive_time_ms},
      {"keepalive_timeout_ms", keepalive_timeout_ms},
      {"max_connection_idle_ms", max_connection_idle_ms},
      {"max_connection_age_ms", max_connection_age_ms},
      {"max_connection_age_grace_ms", max_connection_age_grace_ms},
      {"handshake_timeout_ms", handshake_timeout_ms}};
  for (const auto& [field, value] : durations) {
    // gRPC takes these as int milliseconds.
    if (value < 0 || value > std::numeric_limits<int>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": must be 0 (off) or a positive number of milliseconds below 2^31, got ", value));
    }
  }
  if (keepalive_time_ms > 0 && keepalive_timeout_ms == 0) {
    return absl::InvalidArgumentError(
        "keepalive_timeout_ms: must be positive when keepalive_time_ms is set");
  }
  if (max_connection_age_grace_ms > 0 && max_connection_age_ms == 0) {
    return absl::InvalidArgumentError(
        "max_connection_age_grace_ms: set, but max_connection_age_ms is off");
  }
  return security.Validate();
}

void RunningServer::SetServing(bool serving) {
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(serving);
  }
}

void RunningServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
}

absl::StatusOr<std::unique_ptr<RunningServer>> StartServer(
    const ServerOptions& options, const std::vector<grpc::Service*>& services) {
  SF_RETURN_IF_ERROR(options.Validate());
  SF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds,
                      auth::MakeServerCredentials(options.security));
  // gRPC's own switch for its default health service: a process-wide flag read by each
  // builder, not state; servers that want no health service opt out below.
  static std::once_flag health_once;
  std::call_once(health_once, [] { grpc::EnableDefaultHealthCheckService(true); });

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.address, creds, &port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  // gRPC shares ports between servers by default (SO_REUSEPORT); two sparsefill servers on one
  // port is a misconfiguration that must fail loudly.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  const auto ms = [](int64_t v) { return static_cast<int>(v); };  // range-checked in Validate
  if (options.keepalive_time_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(options.keepalive_time_ms));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(options.keepalive_timeout_ms));
  }
  if (options.max_connection_idle_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ms(options.max_connection_idle_ms));
  }
  if (options.max_connection_age_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, ms(options.max_connection_age_ms));
    if (options.max_connection_age_grace_ms > 0) {
      builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                                 ms(options.max_connection_age_grace_ms));
    }
  }
  if (options.handshake_timeout_ms > 0) {
    builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                               ms(options.handshake_timeout_ms));
  }
  if (options.max_threads > 0) {
    grpc::ResourceQuota quota("sparsefill");
    quota.SetMaxThreads(options.max_threads);
    builder.SetResourceQuota(quota);
  }
  if (!options.health) {
    builder.SetOption(std::make_unique<grpc::HealthCheckServiceServerBuilderOption>(nullptr));
  }
  builder.SetOption(std::make_unique<ReflectionOption>(options.reflection));
  for (grpc::Service* service : services) {
    if (service == nullptr) return absl::InvalidArgumentError("services: null entry");
    builder.RegisterService(service);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on \"", options.address, "\" (address in use or invalid)"));
  }
  return std::make_unique<RunningServer>(std::move(server), port);
}

}  // namespace sparsefill::rpc
