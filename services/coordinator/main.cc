// sparsefill-coordinator: the public API (DESIGN §7) in front of the workers. Flags live here
// only; everything else takes option structs.
#include <csignal>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <prometheus/registry.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "services/common/auth_tokens.h"
#include "services/common/heap_release.h"
#include "services/coordinator/coordinator.h"
#include "services/coordinator/coordinator_service.h"
#include "services/coordinator/grpc_worker.h"
#include "services/metrics/exposer.h"
#include "services/metrics/prefill_metrics.h"
#include "services/metrics/rpc_metrics.h"
#include "services/metrics/server_metrics.h"
#include "services/rpc/server.h"
#include "sparsefill/common/status.h"

namespace sc = sparsefill::coordinator;
namespace auth = sparsefill::auth;

namespace {

struct Flags {
  std::string listen = "0.0.0.0:50051";
  std::string metrics_listen;
  std::vector<std::string> workers;
  std::string registry;
  int32_t max_queue = 16;
  int64_t max_inflight_tokens = int64_t{4} << 20;
  int64_t max_tokens = int64_t{1} << 20;
  int64_t default_ttl_s = 3600;
  int64_t max_ttl_s = 7 * 24 * 3600;
  int64_t deadline_ms = 600000;
  int64_t health_timeout_ms = 2000;
  int64_t health_interval_ms = 5000;
  int64_t direct_ticket_ttl_ms = 10000;
  std::string tls_cert, tls_key, tls_client_ca;
  std::string tokens_file;
  std::string worker_token_file;
  bool worker_tls = false;
  std::string worker_ca, worker_cert, worker_key, worker_name_override;
  // Connection limits of the server (defaults from rpc::ServerOptions).
  sparsefill::rpc::ServerOptions server;
  int64_t heap_trim_ms = 1000;
  int32_t malloc_arenas = 4;
  int64_t mmap_threshold = 1 << 20;
};

absl::StatusOr<std::string> ReadSecret(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return absl::InvalidArgumentError(absl::StrCat("--worker-token-file: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (s.empty())
    return absl::InvalidArgumentError(absl::StrCat("--worker-token-file: ", path, " is empty"));
  return s;
}

absl::Status Run(const Flags& f) {
  if (f.workers.empty()) return absl::InvalidArgumentError("--worker: at least one is required");
  if (f.registry.empty()) return absl::InvalidArgumentError("--registry: required");
  // Before any thread exists (mallopt is not meant to race with allocating threads).
  sparsefill::HeapOptions heap;
  if (f.heap_trim_ms < 0 || f.malloc_arenas < 0 || f.mmap_threshold < 0) {
    return absl::InvalidArgumentError(
        "--heap-trim-ms, --malloc-arenas and --mmap-threshold must not be negative");
  }
  heap.trim_interval = std::chrono::milliseconds(f.heap_trim_ms);
  heap.max_arenas = f.malloc_arenas;
  heap.mmap_threshold_bytes = static_cast<size_t>(f.mmap_threshold);
  if (absl::Status s = heap.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--heap-trim-ms / --malloc-arenas / --mmap-threshold: ", s.message()));
  }
  SF_RETURN_IF_ERROR(sparsefill::ConfigureHeap(heap));

  // This process's registry (no global one, STYLE §9), served on --metrics-listen.
  auto registry = std::make_shared<prometheus::Registry>();
  sparsefill::metrics::RegisterBuildInfo(*registry, "coordinator");
  sparsefill::metrics::RpcMetricSet rpc_metrics(*registry);
  sparsefill::metrics::PrefillMetricSet prefill_metrics(*registry);
  sparsefill::metrics::AdmissionMetricSet admission_metrics(*registry);
  sparsefill::metrics::WorkerHealthMetricSet worker_health(*registry);
  sparsefill::metrics::StreamMetricSet stream_metrics(*registry);

  sc::CoordinatorOptions options;
  options.prefill_metrics = &prefill_metrics;
  options.admission.metrics = &admission_metrics;
  options.worker_health = &worker_health;
  options.stream_metrics = &stream_metrics;
  options.max_tokens = f.max_tokens;
  options.admission.max_queue = f.max_queue;
  options.admission.max_inflight_tokens = f.max_inflight_tokens;
  options.default_ttl_s = f.default_ttl_s;
  options.max_ttl_s = f.max_ttl_s;
  options.default_deadline = std::chrono::milliseconds(f.deadline_ms);
  options.health_timeout = std::chrono::milliseconds(f.health_timeout_ms);
  options.health_interval = std::chrono::milliseconds(f.health_interval_ms);
  options.direct_ticket_ttl = std::chrono::milliseconds(f.direct_ticket_ttl_ms);
  SF_RETURN_IF_ERROR(options.Validate());

  std::string worker_token;
  if (!f.worker_token_file.empty()) {
    SF_ASSIGN_OR_RETURN(worker_token, ReadSecret(f.worker_token_file));
  }
  std::vector<std::unique_ptr<sc::WorkerApi>> workers;
  for (const std::string& address : f.workers) {
    sparsefill::client::WorkerClient::Options wo;
    wo.address = address;
    wo.token = worker_token;
    wo.default_timeout = options.default_deadline;
    if (f.worker_tls) {
      wo.security.mode = auth::TransportSecurity::kTls;
      wo.security.ca_file = f.worker_ca;
      wo.security.cert_file = f.worker_cert;
      wo.security.key_file = f.worker_key;
      wo.security.target_name_override = f.worker_name_override;
    }
    absl::StatusOr<std::unique_ptr<sc::GrpcWorker>> w = sc::GrpcWorker::Connect(wo);
    if (!w.ok()) {
      return absl::Status(w.status().code(),
                          absl::StrCat("--worker ", address, ": ", w.status().message()));
    }
    workers.push_back(std::move(*w));
  }
  auto pool = std::make_unique<sc::WorkerPool>(std::move(workers), options.health_timeout);

  SF_ASSIGN_OR_RETURN(std::unique_ptr<sparsefill::kvstore::RecordStore> store,
                      sparsefill::kvstore::RecordStore::Open(f.registry));
  SF_ASSIGN_OR_RETURN(std::unique_ptr<sc::Coordinator> coordinator,
                      sc::Coordinator::Create(options, std::move(pool), store.get()));

  std::optional<auth::TokenTable> tokens;
  if (!f.tokens_file.empty()) {
    SF_ASSIGN_OR_RETURN(tokens, auth::TokenTable::LoadFile(f.tokens_file));
  }
  sparsefill::rpc::OstreamCallLogger logger(&std::cerr);
  sparsefill::rpc::CallHandler::Options ho;
  ho.tokens = tokens ? &*tokens : nullptr;
  ho.logger = &logger;
  ho.metrics = &rpc_metrics;
  sc::CoordinatorService service(coordinator.get(), ho);

  sparsefill::rpc::ServerOptions so = f.server;
  so.address = f.listen;
  if (!f.tls_cert.empty() || !f.tls_key.empty() || !f.tls_client_ca.empty()) {
    so.security.mode = auth::TransportSecurity::kTls;
    so.security.cert_file = f.tls_cert;
    so.security.key_file = f.tls_key;
    so.security.client_ca_file = f.tls_client_ca;
  }
  // Refuse to hand bearer tokens around in plaintext off loopback: a deployment error.
  if (tokens && so.security.mode == auth::TransportSecurity::kInsecure) {
    std::cerr << "sparsefill-coordinator: warning: --tokens without TLS; bearer tokens travel in "
                 "plaintext\n";
  }

  // Signals are blocked before any thread starts so that only sigwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  sparsefill::HeapTrimmer heap_trimmer(heap.trim_interval);

  SF_ASSIGN_OR_RETURN(std::unique_ptr<sparsefill::rpc::RunningServer> server,
                      sparsefill::rpc::StartServer(so, {&service}));
  coordinator->Start();
  server->SetServing(true);
  const std::string host = f.listen.substr(0, f.listen.rfind(':'));
  std::cout << "listening on " << host << ":" << server->port() << std::endl;
  std::unique_ptr<sparsefill::metrics::MetricsExposer> exposer;
  if (!f.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<sparsefill::metrics::MetricsExposer>> e =
        sparsefill::metrics::MetricsExposer::Start(f.metrics_listen, registry);
    if (!e.ok()) {
      server->Shutdown(std::chrono::seconds(1));
      coordinator->Stop();
      return e.status();
    }
    exposer = *std::move(e);
    std::cout << "metrics on " << exposer->address() << std::endl;
  }

  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "sparsefill-coordinator: signal " << sig << ", shutting down\n";
  server->SetServing(false);
  server->Shutdown(std::chrono::seconds(5));
  coordinator->Stop();
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app{"sparsefill-coordinator: admission, shard plans, cache registry, KV streaming"};
  app.add_option("--listen", f.listen, "host:port to serve on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--metrics-listen", f.metrics_listen,
                 "host:port of the Prometheus /metrics endpoint (port 0: any free port; default "
                 "none)");
  app.add_option("--worker", f.workers, "worker host:port (repeat for each worker)")->required();
  app.add_option("--registry", f.registry, "directory of the cache registry (RocksDB)")->required();
  app.add_option("--max-queue", f.max_queue, "requests that may wait for admission")
      ->capture_default_str();
  app.add_option("--max-inflight-tokens", f.max_inflight_tokens,
                 "prompt tokens of all running prefills together")
      ->capture_default_str();
  app.add_option("--max-tokens", f.max_tokens, "longest prompt in tokens")->capture_default_str();
  app.add_option("--default-ttl-s", f.default_ttl_s, "TTL of caches whose request says 0")
      ->capture_default_str();
  app.add_option("--max-ttl-s", f.max_ttl_s, "longest TTL a request may ask for")
      ->capture_default_str();
  app.add_option("--deadline-ms", f.deadline_ms, "deadline of requests that carry none")
      ->capture_default_str();
  app.add_option("--health-timeout-ms", f.health_timeout_ms, "worker health probe timeout")
      ->capture_default_str();
  app.add_option("--health-interval-ms", f.health_interval_ms, "worker health probe period")
      ->capture_default_str();
  app.add_option("--direct-ticket-ttl-ms", f.direct_ticket_ttl_ms,
                 "validity of the stream tickets of direct plans (StreamCache allow_direct: "
                 "decode nodes stream READY caches from the workers); 0: always relay")
      ->capture_default_str();
  app.add_option("--tls-cert", f.tls_cert, "PEM server certificate chain (enables TLS)");
  app.add_option("--tls-key", f.tls_key, "PEM server private key");
  app.add_option("--tls-client-ca", f.tls_client_ca, "PEM CA of client certificates (mTLS)");
  app.add_option("--tokens", f.tokens_file,
                 "bearer tokens file: 'token tenant [expires=RFC3339]' per line (expiry checked "
                 "on every call)");
  app.add_option("--worker-token-file", f.worker_token_file,
                 "file holding the bearer token sent to workers");
  app.add_flag("--worker-tls", f.worker_tls, "TLS to the workers");
  app.add_option("--worker-ca", f.worker_ca, "PEM roots verifying the workers");
  app.add_option("--worker-cert", f.worker_cert, "PEM client certificate for workers (mTLS)");
  app.add_option("--worker-key", f.worker_key, "PEM client key for workers (mTLS)");
  app.add_option("--worker-tls-name", f.worker_name_override,
                 "name checked against the workers' certificates");
  app.add_option("--keepalive-ms", f.server.keepalive_time_ms,
                 "ping a connection silent this long; close it when no answer comes within "
                 "--keepalive-timeout-ms (0: off)")
      ->capture_default_str();
  app.add_option("--keepalive-timeout-ms", f.server.keepalive_timeout_ms,
                 "how long a keepalive ping may go unanswered")
      ->capture_default_str();
  app.add_option("--max-connection-idle-ms", f.server.max_connection_idle_ms,
                 "close connections without any call for this long (0: never)")
      ->capture_default_str();
  app.add_option("--max-connection-age-ms", f.server.max_connection_age_ms,
                 "send GOAWAY to connections older than this; their running calls get "
                 "--max-connection-age-grace-ms more, then are cancelled (0: never)")
      ->capture_default_str();
  app.add_option("--max-connection-age-grace-ms", f.server.max_connection_age_grace_ms,
                 "time running calls keep after that GOAWAY (0: unlimited)")
      ->capture_default_str();
  app.add_option("--handshake-timeout-ms", f.server.handshake_timeout_ms,
                 "a new connection must complete TLS and the HTTP/2 preface within this (0: "
                 "gRPC's 120 s)")
      ->capture_default_str();
  app.add_option("--heap-trim-ms", f.heap_trim_ms,
                 "return the heap's free pages to the kernel (malloc_trim) this often, so RSS "
                 "follows what is in use after requests end (0: never; see "
                 "services/common/heap_release.h)")
      ->capture_default_str();
  app.add_option("--malloc-arenas", f.malloc_arenas,
                 "most glibc malloc arenas (0: glibc's 8 x cores)")
      ->capture_default_str();
  app.add_option("--mmap-threshold", f.mmap_threshold,
                 "allocations this large are mmapped and unmapped on free (0: glibc's threshold, "
                 "which grows up to 32 MiB)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const absl::Status s = Run(f);
  if (!s.ok()) {
    std::cerr << "sparsefill-coordinator: " << s << "\n";
    return 1;
  }
  return 0;
}
