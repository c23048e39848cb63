// k8s-health-probe: one grpc.health.v1 Check, as a Kubernetes gRPC probe makes it (plaintext, no
// metadata, the probe's service name, a timeout), so the deployment tests can prove the rendered
// probes answer. Exit 0: SERVING; 1: answered but not SERVING, or the call failed; 2: bad usage.
//   k8s-health-probe --addr HOST:PORT [--service NAME] [--timeout-ms MS]
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace {

constexpr char kUsage[] =
    "usage: k8s-health-probe --addr HOST:PORT [--service NAME] [--timeout-ms MS]\n"
    "  --addr        the gRPC server to ask\n"
    "  --service     the service name to check (default \"\": the server as a whole, as\n"
    "                Kubernetes' grpc probe without `service` asks)\n"
    "  --timeout-ms  deadline of the call (default 1000, as the probe's timeoutSeconds: 1)\n";

struct Flags {
  std::string addr;
  std::string service;
  int64_t timeout_ms = 1000;
};

// Returns an empty string on success, else what was wrong.
std::string ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    if (const size_t eq = arg.find('='); eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (arg != "--help" && arg != "-h") {
      if (i + 1 >= argc) return std::string(arg) + ": needs a value";
      value = argv[++i];
    }
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--addr") {
      f->addr = std::string(value);
    } else if (arg == "--service") {
      f->service = std::string(value);
    } else if (arg == "--timeout-ms") {
      if (!absl::SimpleAtoi(std::string(value), &f->timeout_ms) || f->timeout_ms < 1) {
        return "--timeout-ms: \"" + std::string(value) + "\" is not an integer >= 1";
      }
    } else {
      return "unknown flag \"" + std::string(arg) + "\"";
    }
  }
  if (f->addr.empty()) return "--addr: required";
  if (f->addr.find(':') == std::string::npos) {
    return "--addr: \"" + f->addr + "\" is not HOST:PORT";
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  if (const std::string err = ParseFlags(argc, argv, &f); !err.empty()) {
    std::cerr << "k8s-health-probe: " << err << "\n" << kUsage;
    return 2;
  }
  auto channel = grpc::CreateChannel(f.addr, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(f.timeout_ms));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(f.service);
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) {
    std::cout << "error: " << f.addr << ": code " << s.error_code() << ": " << s.error_message()
              << "\n";
    return 1;
  }
  const std::string status =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
  std::cout << status << "\n";
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}
