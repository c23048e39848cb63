// sparsefill-worker: loads the models once, serves the Worker gRPC service (shard execution,
// peer exchange, block reads) with grpc.health.v1 and reflection. Flags live here only; see
// services/worker/README.md.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/registry.h>
#if SPARSEFILL_HAVE_CUDA_ENGINE
#include "services/engine/cuda/cuda_runner.h"
#endif
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/common/auth_tokens.h"
#include "services/common/heap_release.h"

#include "services/metrics/exposer.h"
#include "services/metrics/kvstore_metrics.h"
#include "services/metrics/prefill_metrics.h"
#include "services/metrics/rpc_metrics.h"
#include "services/metrics/server_metrics.h"
#include "services/rpc/call_handler.h"
#include "services/rpc/server.h"
#include "services/worker/worker.h"
#include "services/worker/worker_service.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kvstore/fault_tier.h"

namespace sparsefill::worker {
namespace {

constexpr char kUsage[] = R"(usage: sparsefill-worker --model NAME=DIR --store DIR [flags]

  --listen HOST:PORT       address to serve on (default 127.0.0.1:0; port 0 picks a free port).
                           Prints "listening on HOST:PORT" on stdout once serving.
  --advertise-address HOST:PORT
                           where decode nodes reach this worker for direct streams (the
                           coordinator hands it out with their stream tickets; default: the
                           address the coordinator uses for this worker)
  --metrics-listen HOST:PORT
                           serve Prometheus metrics on GET /metrics there (default: none; port
                           0 picks a free port). Prints "metrics on HOST:PORT" on stdout.
  --model NAME=DIR         a Hugging Face checkpoint to serve as NAME (repeatable; at least one)
  --store DIR              worker state: KV store (DIR/kv) and shard records (DIR/shards)
  --backend NAME           engine backend: cpu, cuda (this worker's GPU; a binary built
                           without CUDA says so) or auto (cuda when a GPU is visible; default
                           cpu). The cuda backend runs unsharded prompts (one worker)
  --host-budget BYTES      host memory for hot KV blocks (default 1073741824)
  --hot-blocks N           hot blocks per (layer, KV head) of each shard (default 64)
  --ttl-seconds S          TTL of caches whose request sets none (default 86400; 0 = never)
  --deadline-ms MS         deadline of each peer call, and the longest a rank waits for its
                           peers to reach the same step (default 120000)
  --tls-cert FILE          PEM server certificate chain (enables TLS; also the client
                           certificate towards peers when --tls-client-ca is set)
  --tls-key FILE           PEM private key of --tls-cert
  --tls-client-ca FILE     PEM CA bundle: require client certificates (mutual TLS)
  --peer-ca FILE           PEM roots verifying peers' certificates (default: system roots)
  --peer-tls-name NAME     name checked against peers' certificates instead of their host
  --tokens FILE            bearer tokens of incoming calls ("token tenant [expires=RFC3339]"
                           per line); without it calls are not authenticated. Give workers a
                           file of internal tokens only, never the clients' tokens file
  --peer-token TOKEN       bearer token this worker sends to its peers
  --peer-token-file FILE   the same, read from a file (first line)
  --log-calls              one line per finished call on stderr
  --keepalive-ms MS        ping a connection silent this long and close it when no answer
                           comes within --keepalive-timeout-ms (default 60000 / 20000; 0: off)
  --keepalive-timeout-ms MS
  --max-connection-idle-ms MS
                           close connections without any call for this long (default 600000;
                           0: never)
  --max-connection-age-ms MS
                           GOAWAY to connections older than this; their running calls get
                           --max-connection-age-grace-ms more, then are cancelled (default
                           7200000 + 3600000; 0: never / unlimited grace)
  --max-connection-age-grace-ms MS
  --handshake-timeout-ms MS
                           a new connection must finish TLS and the HTTP/2 preface within this
                           (default 20000; 0: gRPC's 120 s)
  --heap-trim-ms MS        return the heap's free pages to the kernel (malloc_trim) this often,
                           so RSS follows what is in use after requests end (default 1000; 0:
                           never). See services/common/heap_release.h
  --malloc-arenas N        most glibc malloc arenas (default 4; 0: glibc's 8 x cores)
  --mmap-threshold BYTES   allocations this large are mmapped, and unmapped on free (default
                           1048576; 0: glibc's threshold, which grows up to 32 MiB)
  --inject-write-errors RATE[:SEED]
                           failure drills: each RocksDB block batch fails with probability RATE
                           (0..1) through the fault-injecting tier, like a failing disk (default
                           0: off). Also read from SPARSEFILL_INJECT_WRITE_ERRORS.
  --help                   this text
)";

struct Flags {
  std::string listen = "127.0.0.1:0";
  std::string metrics_listen;
  std::string advertise_address;
  std::vector<ModelSpec> models;
  std::string store;
  std::string backend = "cpu";
  uint64_t host_budget = 1ull << 30;
  int32_t hot_blocks = 64;
  int64_t ttl_seconds = 86400;
  int64_t deadline_ms = 120000;
  std::string tls_cert, tls_key, tls_client_ca, peer_ca, peer_tls_name;
  std::string tokens_file, peer_token, peer_token_file;
  bool log_calls = false;
  rpc::ServerOptions server;  // connection limits; defaults from rpc::ServerOptions
  double inject_write_errors = 0.0;
  uint64_t inject_seed = 0;
  HeapOptions heap;
};

absl::Status ParseInjectWriteErrors(const std::string& v, Flags& f) {
  const size_t colon = v.find(':');
  const std::string rate = v.substr(0, colon);
  if (!absl::SimpleAtod(rate, &f.inject_write_errors) || !(f.inject_write_errors >= 0.0) ||
      f.inject_write_errors > 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--inject-write-errors: \"", v, "\" is not RATE[:SEED] with RATE in [0, 1]"));
  }
  f.inject_seed = static_cast<uint64_t>(::getpid());
  if (colon != std::string::npos && !absl::SimpleAtoi(v.substr(colon + 1), &f.inject_seed)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--inject-write-errors: \"", v, "\": SEED is not an unsigned integer"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  if (const char* env = std::getenv("SPARSEFILL_INJECT_WRITE_ERRORS"); env && *env) {
    SF_RETURN_IF_ERROR(ParseInjectWriteErrors(env, f));
  }
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string name = arg, value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    auto take = [&]() -> absl::StatusOr<std::string> {
      if (has_value) return value;
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(name, ": needs a value"));
      return std::string(argv[++i]);
    };
    auto integer = [&](int64_t min) -> absl::StatusOr<int64_t> {
      SF_ASSIGN_OR_RETURN(std::string v, take());
      int64_t x = 0;
      if (!absl::SimpleAtoi(v, &x) || x < min) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": \"", v, "\" is not an integer >= ", min));
      }
      return x;
    };
    if (name == "--help" || name == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (name == "--listen") {
      SF_ASSIGN_OR_RETURN(f.listen, take());
    } else if (name == "--metrics-listen") {
      SF_ASSIGN_OR_RETURN(f.metrics_listen, take());
    } else if (name == "--model") {
      SF_ASSIGN_OR_RETURN(std::string v, take());
      const size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--model: \"", v, "\" is not NAME=DIR"));
      }
      f.models.push_back({.name = v.substr(0, eq), .dir = v.substr(eq + 1)});
    } else if (name == "--advertise-address") {
      SF_ASSIGN_OR_RETURN(f.advertise_address, take());
      const size_t colon = f.advertise_address.rfind(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == f.advertise_address.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--advertise-address: \"", f.advertise_address, "\" is not HOST:PORT"));
      }
    } else if (name == "--store") {
      SF_ASSIGN_OR_RETURN(f.store, take());
    } else if (name == "--backend") {
      SF_ASSIGN_OR_RETURN(f.backend, take());
    } else if (name == "--host-budget") {
      SF_ASSIGN_OR_RETURN(int64_t x, integer(0));
      f.host_budget = static_cast<uint64_t>(x);
    } else if (name == "--hot-blocks") {
      SF_ASSIGN_OR_RETURN(int64_t x, integer(0));
      if (x > (1 << 30)) return absl::InvalidArgumentError("--hot-blocks: too large");
      f.hot_blocks = static_cast<int32_t>(x);
    } else if (name == "--ttl-seconds") {
      SF_ASSIGN_OR_RETURN(f.ttl_seconds, integer(0));
    } else if (name == "--deadline-ms") {
      SF_ASSIGN_OR_RETURN(f.deadline_ms, integer(1));
    } else if (name == "--tls-cert") {
      SF_ASSIGN_OR_RETURN(f.tls_cert, take());
    } else if (name == "--tls-key") {
      SF_ASSIGN_OR_RETURN(f.tls_key, take());
    } else if (name == "--tls-client-ca") {
      SF_ASSIGN_OR_RETURN(f.tls_client_ca, take());
    } else if (name == "--peer-ca") {
      SF_ASSIGN_OR_RETURN(f.peer_ca, take());
    } else if (name == "--peer-tls-name") {
      SF_ASSIGN_OR_RETURN(f.peer_tls_name, take());
    } else if (name == "--tokens") {
      SF_ASSIGN_OR_RETURN(f.tokens_file, take());
    } else if (name == "--peer-token") {
      SF_ASSIGN_OR_RETURN(f.peer_token, take());
    } else if (name == "--peer-token-file") {
      SF_ASSIGN_OR_RETURN(f.peer_token_file, take());
    } else if (name == "--log-calls") {
      f.log_calls = true;
    } else if (name == "--keepalive-ms") {
      SF_ASSIGN_OR_RETURN(f.server.keepalive_time_ms, integer(0));
    } else if (name == "--keepalive-timeout-ms") {
      SF_ASSIGN_OR_RETURN(f.server.keepalive_timeout_ms, integer(0));
    } else if (name == "--max-connection-idle-ms") {
      SF_ASSIGN_OR_RETURN(f.server.max_connection_idle_ms, integer(0));
    } else if (name == "--max-connection-age-ms") {
      SF_ASSIGN_OR_RETURN(f.server.max_connection_age_ms, integer(0));
    } else if (name == "--max-connection-age-grace-ms") {
      SF_ASSIGN_OR_RETURN(f.server.max_connection_age_grace_ms, integer(0));
    } else if (name == "--handshake-timeout-ms") {
      SF_ASSIGN_OR_RETURN(f.server.handshake_timeout_ms, integer(0));
    } else if (name == "--heap-trim-ms") {
      SF_ASSIGN_OR_RETURN(int64_t x, integer(0));
      f.heap.trim_interval = std::chrono::milliseconds(x);
    } else if (name == "--malloc-arenas") {
      SF_ASSIGN_OR_RETURN(int64_t x, integer(0));
      if (x > 1024) return absl::InvalidArgumentError("--malloc-arenas: at most 1024");
      f.heap.max_arenas = static_cast<int32_t>(x);
    } else if (name == "--mmap-threshold") {
      SF_ASSIGN_OR_RETURN(int64_t x, integer(0));
      f.heap.mmap_threshold_bytes = static_cast<size_t>(x);
    } else if (name == "--inject-write-errors") {
      SF_ASSIGN_OR_RETURN(std::string v, take());
      SF_RETURN_IF_ERROR(ParseInjectWriteErrors(v, f));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag \"", arg, "\" (see --help)"));
    }
  }
  if (absl::Status s = f.heap.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--heap-trim-ms / --malloc-arenas / "
                     "--mmap-threshold: ",
                     s.message()));
  }
  if (f.models.empty()) return absl::InvalidArgumentError("--model: at least one is required");
  if (f.store.empty()) return absl::InvalidArgumentError("--store: required");
  if (!f.peer_token.empty() && !f.peer_token_file.empty()) {
    return absl::InvalidArgumentError("--peer-token and --peer-token-file: give one of them");
  }
  if (!f.peer_token_file.empty()) {
    std::ifstream in(f.peer_token_file);
    if (!in || !std::getline(in, f.peer_token) || f.peer_token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--peer-token-file: cannot read a token from ", f.peer_token_file));
    }
    while (!f.peer_token.empty() && (f.peer_token.back() == '\r' || f.peer_token.back() == ' ')) {
      f.peer_token.pop_back();
    }
  }
  return f;
}

int Run(int argc, char** argv) {
  auto flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::cerr << "sparsefill-worker: " << flags.status().message() << "\n";
    return 2;
  }
  const Flags& f = *flags;
  // Before any thread exists (mallopt is not meant to race with allocating threads).
  if (absl::Status s = ConfigureHeap(f.heap); !s.ok()) {
    std::cerr << "sparsefill-worker: " << s << "\n";
    return 1;
  }

  // Signals are taken by sigwait below; blocked before any thread starts so none gets them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  HeapTrimmer heap_trimmer(f.heap.trim_interval);

  // This process's registry (no global one, STYLE §9), served on --metrics-listen.
  auto registry = std::make_shared<prometheus::Registry>();
  metrics::RegisterBuildInfo(*registry, "worker");
  metrics::RpcMetricSet rpc_metrics(*registry);
  metrics::KvStoreMetricSet kv_metrics(*registry);
  metrics::PrefillMetricSet prefill_metrics(*registry);
  metrics::StreamMetricSet stream_metrics(*registry);

  WorkerOptions wo;
  wo.kv_metrics = &kv_metrics;
  wo.models = f.models;
  wo.backend = f.backend;
  wo.store_dir = f.store;
  wo.host_budget_bytes = f.host_budget;
  kv_metrics.SetBudget(kvstore::Tier::kHost, f.host_budget);
  wo.placement.hot_blocks = f.hot_blocks;
  // Init + local blocks are always hot, so they must fit in --hot-blocks.
  wo.placement.local_blocks = std::max<int32_t>(
      0, std::min<int32_t>(wo.placement.local_blocks, f.hot_blocks - wo.placement.init_blocks));
  if (f.hot_blocks < wo.placement.init_blocks) wo.placement.init_blocks = f.hot_blocks;
  wo.default_ttl_ms = f.ttl_seconds * 1000;
  if (f.inject_write_errors > 0.0) {
    std::cerr << "sparsefill-worker: injecting RocksDB write errors at rate "
              << f.inject_write_errors << " (seed " << f.inject_seed << ")\n";
    wo.wrap_disk_writes = [rate = f.inject_write_errors,
                           seed = f.inject_seed](std::shared_ptr<kvstore::BlockTier> disk) {
      auto faults = std::make_shared<kvstore::FaultInjectingTier>(std::move(disk));
      faults->FailPutsAtRate(rate, seed, absl::UnavailableError("injected RocksDB write error"));
      return std::shared_ptr<kvstore::BlockTier>(std::move(faults));
    };
  }
  auto worker = Worker::Create(wo);
  if (!worker.ok()) {
    std::cerr << "sparsefill-worker: " << worker.status() << "\n";
    return 1;
  }

  std::optional<auth::TokenTable> tokens;
  if (!f.tokens_file.empty()) {
    auto t = auth::TokenTable::LoadFile(f.tokens_file);
    if (!t.ok()) {
      std::cerr << "sparsefill-worker: --tokens: " << t.status() << "\n";
      return 2;
    }
    tokens = *std::move(t);
  }
  rpc::OstreamCallLogger logger(&std::cerr);
  WorkerService::Options so;
  so.handler.tokens = tokens ? &*tokens : nullptr;
  so.handler.logger = f.log_calls ? &logger : nullptr;
  so.handler.metrics = &rpc_metrics;
  so.prefill_metrics = &prefill_metrics;
  so.stream_metrics = &stream_metrics;
  so.advertise_address = f.advertise_address;
  so.exchange.peer_timeout = std::chrono::milliseconds(f.deadline_ms);
  so.peers.token = f.peer_token;
  if (!f.tls_cert.empty() || !f.tls_key.empty()) {
    so.peers.security.mode = auth::TransportSecurity::kTls;
    so.peers.security.ca_file = f.peer_ca;
    so.peers.security.target_name_override = f.peer_tls_name;
    if (!f.tls_client_ca.empty()) {
      so.peers.security.cert_file = f.tls_cert;
      so.peers.security.key_file = f.tls_key;
    }
  }
  auto service = WorkerService::Create(worker->get(), so);
  if (!service.ok()) {
    std::cerr << "sparsefill-worker: " << service.status() << "\n";
    return 2;
  }

  rpc::ServerOptions server_options = f.server;
  server_options.address = f.listen;
  if (!f.tls_cert.empty() || !f.tls_key.empty() || !f.tls_client_ca.empty()) {
    server_options.security.mode = auth::TransportSecurity::kTls;
    server_options.security.cert_file = f.tls_cert;
    server_options.security.key_file = f.tls_key;
    server_options.security.client_ca_file = f.tls_client_ca;
  }
  auto server = rpc::StartServer(server_options, {service->get()});
  if (!server.ok()) {
    std::cerr << "sparsefill-worker: " << server.status() << "\n";
    return 1;
  }
  (*server)->SetServing(true);  // the models are loaded
  const std::string host = f.listen.substr(0, f.listen.rfind(':'));
  std::cout << "listening on " << host << ":" << (*server)->port() << std::endl;
  std::unique_ptr<metrics::MetricsExposer> exposer;
  if (!f.metrics_listen.empty()) {
    auto e = metrics::MetricsExposer::Start(f.metrics_listen, registry);
    if (!e.ok()) {
      std::cerr << "sparsefill-worker: " << e.status() << "\n";
      (*server)->Shutdown(std::chrono::seconds(1));
      return 2;
    }
    exposer = *std::move(e);
    std::cout << "metrics on " << exposer->address() << std::endl;
  }

  // TTL expiry once a minute until a stop signal.
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::thread expirer([&] {
    std::unique_lock<std::mutex> lock(mu);
    while (!cv.wait_for(lock, std::chrono::minutes(1), [&] { return stopping; })) {
      lock.unlock();
      auto n = (*worker)->ExpireCaches();
      if (!n.ok()) std::cerr << "sparsefill-worker: expiring caches: " << n.status() << "\n";
      lock.lock();
    }
  });
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::cerr << "sparsefill-worker: signal " << sig << ", shutting down\n";
  (*server)->SetServing(false);
  (*server)->Shutdown(std::chrono::seconds(5));
  {
    std::lock_guard<std::mutex> lock(mu);
    stopping = true;
  }
  cv.notify_all();
  expirer.join();
  return 0;
}

}  // namespace
}  // namespace sparsefill::worker

int main(int argc, char** argv) {
#if SPARSEFILL_HAVE_CUDA_ENGINE
  // --backend cuda|auto: the cuda runner serves a whole prompt on this worker's GPU (a prompt
  // sharded over several workers needs the multi-GPU transport and is refused as Unimplemented).
  sparsefill::engine::cuda::EnableCudaBackend();
#endif
  return sparsefill::worker::Run(argc, argv);
}
