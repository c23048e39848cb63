// Host side of the Hopper (wgmma) block-sparse attention kernel, in its own translation unit (nvcc
// is slow on it). Private to kernels/.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/common/flash_fwd.cuh"

namespace sparsefill::kernels::cuda::flash {

// Whether the wgmma sparse kernel takes `f` (its selection fields filled): a block size that is a
// power of two of at least 16 (whole TMA boxes gather into 64-key tiles) and tensors TMA can
// describe. The device must be compute capability 9.0 (DeviceHasWgmma).
[[nodiscard]] bool SparseWgmmaTakes(const FlashParams& f, int head_dim);

// `f` as LaunchSparse fills it (selection fields included); SparseWgmmaTakes(f, head_dim) true.
[[nodiscard]] absl::Status LaunchSparseWgmma(const char* op, FlashParams f, int head_dim,
                                             int num_seqs, int64_t max_q, cudaStream_t stream);

}  // namespace sparsefill::kernels::cuda::flash
