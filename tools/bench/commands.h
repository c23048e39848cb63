// Subcommands of `bench`. Each one registers its flags on the CLI11 app and runs from a plain
// args struct; they share the harness (timing, device probe, result documents).
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "tools/bench/harness/device_info.h"
#include "tools/bench/harness/report.h"

namespace sparsefill::bench {

// Flags every subcommand takes.
struct CommonArgs {
  std::string out_dir;            // --out: results directory (default <source>/bench/results)
  bool no_save = false;           // --no-save: print only
  std::vector<std::string> argv;  // the exact command line, for the result document
};
void AddCommonFlags(CLI::App& sub, CommonArgs& common);

// Builds the document, writes it (unless --no-save) and prints the table and the path.
// Returns the process exit code.
int Publish(const Report& report, const DeviceInfo& device, const CommonArgs& common,
            const std::string& date, const std::string& table);

// Prints "bench <name>: <status>" and maps the code to an exit code (2: bad input, 1: failure).
int Fail(const std::string& name, const absl::Status& status);

// `bench disk`: the plain sequential write/read of a file (the physical limit on its own).
struct DiskArgs {
  CommonArgs common;
  std::string dir;      // --dir (default <build>/bench-data)
  double size_gib = 4;  // --size-gib
  int chunk_mib = 16;   // --chunk-mib
  int repeats = 1;      // --repeats
};
CLI::App* AddDiskCommand(CLI::App& app, DiskArgs& args);
int RunDisk(const DiskArgs& args);

#if SPARSEFILL_BENCH_KVSTORE
// `bench kvstore`: KV-cache write/read throughput of each KV store tier against the plain file.
struct KvStoreArgs {
  CommonArgs common;
  std::string dir;          // --dir (default <build>/bench-data)
  int64_t tokens = 65536;   // --tokens
  int32_t layers = 36;      // --layers (qwen3-8b)
  int32_t kv_heads = 8;     // --kv-heads
  int32_t head_dim = 128;   // --head-dim
  int32_t block_size = 64;  // --block-size (tokens per block)
  int repeats = 1;          // --repeats
  int chunk_mib = 16;       // --chunk-mib (plain file write()/read() size)
  bool skip_host = false;   // --skip-host
  int read_threads = 4;     // --read-threads (disk tier: also read with this many readers)
  int blob_file_mib = 0;    // --blob-file-mib (0: the store's default)
  uint64_t seed = 1;        // --seed
};
CLI::App* AddKvStoreCommand(CLI::App& app, KvStoreArgs& args);
int RunKvStore(const KvStoreArgs& args);
#endif

#if SPARSEFILL_BENCH_STREAM
// `bench stream`: StreamCache throughput over loopback (1 and N streams) against a raw TCP copy
// of the same bytes, on a synthetic cache installed into in-process Worker/Coordinator services.
struct StreamArgs {
  CommonArgs common;
  std::string dir;              // --dir (default <build>/bench-data)
  int64_t tokens = 131072;      // --tokens
  int32_t layers = 36;          // --layers (qwen3-8b)
  int32_t kv_heads = 8;         // --kv-heads
  int32_t head_dim = 128;       // --head-dim
  int32_t block_size = 64;      // --block-size (tokens per block)
  int streams = 4;              // --streams (the second measurement; the first is 1)
  int workers = 1;              // --workers
  std::string tier = "host";    // --tier: host (every block hot), disk, or both (host, then disk)
  int64_t host_tokens = 32768;  // --host-tokens: the host-tier cache's tokens under --tier both
  int chunk_kib = 1024;         // --chunk-kib (the workers' ReadBlocks chunk size)
  int raw_buffer_kib = 1024;    // --raw-buffer-kib
  int warmup = 1;               // --warmup
  int repeats = 3;              // --repeats
  uint64_t seed = 1;            // --seed
  std::string note;             // --note: added to the JSON's notes (e.g. the machine's load)
};
CLI::App* AddStreamCommand(CLI::App& app, StreamArgs& args);
int RunStream(const StreamArgs& args);
#endif

}  // namespace sparsefill::bench

// Subcommands that live in their own folder declare their args and entry points there.
#if SPARSEFILL_BENCH_ATTENTION
#include "tools/bench/attention/attention_command.h"
#endif
#if SPARSEFILL_BENCH_LOAD
#include "tools/bench/load/load_command.h"
#endif
#if SPARSEFILL_BENCH_PREFILL
#include "tools/bench/prefill/prefill_command.h"
#endif
