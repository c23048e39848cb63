// The model's weights as bf16 device tensors for the cuda backend (the gate and up projections
// stacked into one [2 * intermediate, hidden] matrix, as the cpu backend does).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "services/engine/cuda/cuda_resources.h"
#include "sparsefill/engine/checkpoint.h"

namespace sparsefill::engine::cuda {

struct DeviceLayerWeights {
  DeviceBuffer input_norm, post_norm;  // [hidden]
  DeviceBuffer q_norm, k_norm;         // [head_dim] (Qwen3), else empty
  DeviceBuffer wq, wk, wv;             // [out, hidden]
  DeviceBuffer bq, bk, bv;             // [out] (Qwen2), else empty
  DeviceBuffer wo;                     // [hidden, q_heads * head_dim]
  DeviceBuffer w_gate_up;              // [2 * intermediate, hidden]
  DeviceBuffer w_down;                 // [hidden, intermediate]
};

struct DeviceWeights {
  DeviceBuffer embed;       // [vocab, hidden]
  DeviceBuffer final_norm;  // [hidden]
  DeviceBuffer lm_head;     // [vocab, hidden]; empty when tied to embed
  std::vector<DeviceLayerWeights> layers;
  const DeviceBuffer& head() const { return lm_head.bytes() == 0 ? embed : lm_head; }
  size_t bytes = 0;  // all of the above
};

// Reads every tensor the config needs (any checkpoint dtype), rounds it to bf16 and uploads it.
absl::StatusOr<DeviceWeights> UploadWeights(const Checkpoint& checkpoint);

}  // namespace sparsefill::engine::cuda
