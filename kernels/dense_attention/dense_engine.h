// Which engine runs the CUDA dense attention. Tests and benchmarks force each one to compare
// them on one device. Private to kernels/ (and its tests and benchmarks).
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "sparsefill/kernels/attention.h"

namespace sparsefill::kernels {

enum class DenseEngine {
  kAuto,     // see LaunchDense in dense_attention.cu: mma.sync until wgmma is verified on sm_90
  kMmaSync,  // the FlashAttention-2 style engine (kernels/common/flash_fwd.cuh)
  // Hopper warpgroup MMA (dense_attention_wgmma_kernel.cuh), FailedPrecondition on a device
  // other than compute capability 9.0, in three consumer schedules:
  kWgmma,          // intra-warpgroup overlap (softmax of tile j under P V of tile j - 1)
  kWgmmaSerial,    // each warpgroup waits for every GEMM (the simplest order)
  kWgmmaPingPong,  // overlap, and the two consumer warpgroups take turns issuing GEMMs
};

[[nodiscard]] absl::Status LaunchDenseAttentionOn(DenseEngine engine, const AttentionParams& p,
                                                  cudaStream_t stream);
[[nodiscard]] absl::Status LaunchVarlenDenseAttentionOn(DenseEngine engine,
                                                        const VarlenAttentionParams& p,
                                                        cudaStream_t stream);

}  // namespace sparsefill::kernels
