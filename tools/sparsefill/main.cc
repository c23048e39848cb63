// sparsefill: the command-line entry point. Flags live here only; components take option structs.
#if SPARSEFILL_HAVE_CUDA_ENGINE
#include "services/engine/cuda/cuda_runner.h"
#endif
#include <cstdio>

#include "CLI/CLI.hpp"
#include "tools/sparsefill/commands.h"

int main(int argc, char** argv) {
#if SPARSEFILL_HAVE_CUDA_ENGINE
  sparsefill::engine::cuda::EnableCudaBackend();
#endif
  CLI::App app{"sparsefill: block-sparse prefill of very long prompts"};
  app.require_subcommand(1);
  sparsefill::tools::PrefillArgs prefill_args;
  CLI::App* prefill = sparsefill::tools::AddPrefillCommand(app, prefill_args);
#ifdef SPARSEFILL_HAVE_DEMO
  sparsefill::tools::DemoArgs demo_args;
  CLI::App* demo = sparsefill::tools::AddDemoCommand(app, demo_args);
#endif
  CLI11_PARSE(app, argc, argv);
  if (prefill->parsed()) return sparsefill::tools::RunPrefill(prefill_args);
#ifdef SPARSEFILL_HAVE_DEMO
  if (demo->parsed()) return sparsefill::tools::RunDemo(demo_args);
#endif
  return 2;
}
