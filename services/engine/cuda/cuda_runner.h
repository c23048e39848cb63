// The cuda backend's ModelRunner: bf16 weights and activations on one device, cuBLASLt GEMMs,
// the CUDA RMSNorm / RoPE / SwiGLU kernels, the CUDA selection and attention kernels, and each
// finished layer's K/V handed to the sink from pinned host memory while the next layer computes
// (so the device holds the weights, the activations and two layers' K/V, whatever the prompt).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "sparsefill/engine/checkpoint.h"
#include "sparsefill/engine/engine.h"

namespace sparsefill::engine::cuda {

// True when this process sees a CUDA device (the "auto" backend's choice).
bool CudaAvailable();

// FailedPrecondition when no device is present; ResourceExhausted when the weights do not fit.
absl::StatusOr<std::unique_ptr<ModelRunner>> CreateCudaRunner(const Checkpoint& checkpoint);

// Makes "cuda" (and "auto" on a GPU machine) available to Engine::Create in this process
// (engine.h, SetCudaBackend). Call once at start-up.
void EnableCudaBackend();

}  // namespace sparsefill::engine::cuda
