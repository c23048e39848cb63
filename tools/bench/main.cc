// bench: the project's benchmarks. Speed targets are met here, with results written as JSON
// under bench/results/ (device, date, command, commit), never in timed unit tests.
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "tools/bench/commands.h"

int main(int argc, char** argv) {
  namespace sb = sparsefill::bench;
  CLI::App app{"bench: sparsefill benchmarks (results as JSON under bench/results/)"};
  app.require_subcommand(1);
  const std::vector<std::string> args(argv, argv + argc);

  sb::DiskArgs disk_args;
  disk_args.common.argv = args;
  CLI::App* disk = sb::AddDiskCommand(app, disk_args);
#if SPARSEFILL_BENCH_KVSTORE
  sb::KvStoreArgs kv_args;
  kv_args.common.argv = args;
  CLI::App* kvstore = sb::AddKvStoreCommand(app, kv_args);
#endif
#if SPARSEFILL_BENCH_STREAM
  sb::StreamArgs stream_args;
  stream_args.common.argv = args;
  CLI::App* stream = sb::AddStreamCommand(app, stream_args);
#endif
#if SPARSEFILL_BENCH_ATTENTION
  sb::AttentionArgs attention_args;
  attention_args.common.argv = args;
  CLI::App* attention = sb::AddAttentionCommand(app, attention_args);
#endif
#if SPARSEFILL_BENCH_LOAD
  sb::LoadArgs load_args;
  load_args.common.argv = args;
  CLI::App* load = sb::AddLoadCommand(app, load_args);
  sb::SoakArgs soak_args;
  soak_args.common.argv = args;
  CLI::App* soak = sb::AddSoakCommand(app, soak_args);
#endif
#if SPARSEFILL_BENCH_PREFILL
  sb::PrefillArgs prefill_args;
  prefill_args.common.argv = args;
  CLI::App* prefill = sb::AddPrefillCommand(app, prefill_args);
#endif

  CLI11_PARSE(app, argc, argv);
  if (disk->parsed()) return sb::RunDisk(disk_args);
#if SPARSEFILL_BENCH_KVSTORE
  if (kvstore->parsed()) return sb::RunKvStore(kv_args);
#endif
#if SPARSEFILL_BENCH_STREAM
  if (stream->parsed()) return sb::RunStream(stream_args);
#endif
#if SPARSEFILL_BENCH_ATTENTION
  if (attention->parsed()) return sb::RunAttention(attention_args);
#endif
#if SPARSEFILL_BENCH_LOAD
  if (load->parsed()) return sb::RunLoad(load_args);
  if (soak->parsed()) return sb::RunSoak(soak_args);
#endif
#if SPARSEFILL_BENCH_PREFILL
  if (prefill->parsed()) return sb::RunPrefill(prefill_args);
#endif
  return 2;
}
