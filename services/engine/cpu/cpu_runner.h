// The cpu backend's ModelRunner: the reference engine (fp32, BLAS GEMMs, OpenMP).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "sparsefill/engine/checkpoint.h"
#include "sparsefill/engine/engine.h"

namespace sparsefill::engine::cpu {

absl::StatusOr<std::unique_ptr<ModelRunner>> CreateCpuRunner(const Checkpoint& checkpoint);

}  // namespace sparsefill::engine::cpu
