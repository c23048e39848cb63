// Host side of the Hopper (wgmma) dense attention kernel, in its own translation unit (nvcc is
// slow on it). Private to kernels/.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/common/flash_fwd.cuh"

namespace sparsefill::kernels::cuda::flash {

// Whether the current device runs the wgmma kernels (compute capability 9.0, built as sm_90a).
[[nodiscard]] absl::StatusOr<bool> DeviceHasWgmma(const char* op);

// A bf16 tensor map (cuTensorMapEncodeTiled through the runtime's driver entry point) with
// 128-byte swizzled boxes of 64 elements in dimension 0 (one Sw128 panel row); dims / strides as
// cuTensorMapEncodeTiled takes them (strides of dims 1.., in bytes). `what` names the tensor in
// the error.
[[nodiscard]] absl::Status EncodeBf16Map(const char* op, const char* what, CUtensorMap* map,
                                         const void* base, int rank, const cuuint64_t* dims,
                                         const cuuint64_t* strides, const cuuint32_t* box);

// Whether TMA can describe f's tensors: 16-byte aligned bases and row strides, coordinates inside
// int32.
[[nodiscard]] bool TmaDescribes(const FlashParams& f, int head_dim);

// How the two consumer warpgroups order their GEMMs and softmax (dense_attention_wgmma_kernel.cuh).
enum class WgmmaSchedule { kSerial, kOverlap, kPingPong };
// How the producer warpgroup loads Q, K and V: 128 threads' cp.async, or TMA boxes issued by one
// thread. kTma falls back to cp.async where TMA cannot describe the tensors (a base address not
// 16-byte aligned, a dimension over 2^31).
enum class WgmmaLoads { kCpAsync, kTma };

// `f` as FromAttention / FromVarlen fill it; head_dim 64 or 128.
[[nodiscard]] absl::Status LaunchDenseWgmma(const char* op, WgmmaSchedule schedule,
                                            WgmmaLoads loads, FlashParams f, int head_dim,
                                            int num_seqs, int64_t max_q, cudaStream_t stream);

}  // namespace sparsefill::kernels::cuda::flash
