// Which engine runs the CUDA dense attention. Tests and benchmarks force each one to compare
// them on one device. Private to kernels/ (and its tests and benchmarks).
#pragma once

#include <cuda_runtime.h>

#include <string_view>

#include "absl/status/status.h"
#include "sparsefill/kernels/attention.h"

namespace sparsefill::kernels {

enum class DenseEngine {
  kAuto,     // see LaunchDense in dense_attention.cu: kWgmmaTmaPingPong on sm_90, else mma.sync
  kMmaSync,  // the FlashAttention-2 style engine (kernels/common/flash_fwd.cuh)
  // Hopper warpgroup MMA (dense_attention_wgmma_kernel.cuh), FailedPrecondition on a device
  // other than compute capability 9.0, in three consumer schedules:
  kWgmma,          // intra-warpgroup overlap (softmax of tile j under P V of tile j - 1)
  kWgmmaSerial,    // each warpgroup waits for every GEMM (the simplest order)
  kWgmmaPingPong,  // overlap, and the two consumer warpgroups take turns issuing GEMMs
  // The same two schedules with Q, K and V loaded by TMA (one producer thread) instead of
  // cp.async (cp.async where TMA cannot describe the tensors):
  kWgmmaTma,
  kWgmmaTmaPingPong,
};

// What LaunchDenseAttention (kAuto) runs from now on, process-wide: benchmarks time a whole
// prefill on each engine. kAuto restores the built-in choice.
void SetAutoDenseEngine(DenseEngine engine);
// "auto", "mma.sync", "wgmma", "wgmma-serial", "wgmma-pingpong", "wgmma-tma",
// "wgmma-tma-pingpong"; false for anything else.
[[nodiscard]] bool ParseDenseEngine(std::string_view name, DenseEngine* engine);

[[nodiscard]] absl::Status LaunchDenseAttentionOn(DenseEngine engine, const AttentionParams& p,
                                                  cudaStream_t stream);
[[nodiscard]] absl::Status LaunchVarlenDenseAttentionOn(DenseEngine engine,
                                                        const VarlenAttentionParams& p,
                                                        cudaStream_t stream);

}  // namespace sparsefill::kernels
