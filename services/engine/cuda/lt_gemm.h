// The cuda backend's linear layers through cuBLASLt: y = x . W^T (+ bias), bf16 inputs, fp32
// accumulation, bf16 or fp32 output. Row-major, as the weights are stored ([out, in]).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"
#include "services/engine/cuda/cuda_resources.h"
#include "sparsefill/common/dtype.h"

namespace sparsefill::engine::cuda {

struct LinearArgs {
  const void* x = nullptr;     // [rows, in] bf16, row i at x + i * ldx elements
  const void* w = nullptr;     // [out, in] bf16
  const void* bias = nullptr;  // [out] bf16; optional
  void* y = nullptr;           // [rows, out], row i at y + i * ldy elements; y_dtype
  int64_t rows = 0;
  int64_t in = 0;
  int64_t out = 0;
  int64_t ldx = 0;  // >= in
  int64_t ldy = 0;  // >= out
  DType y_dtype = DType::kBF16;
};

class LtGemm {
 public:
  // One handle and one workspace per stream that runs the GEMMs.
  static absl::StatusOr<std::unique_ptr<LtGemm>> Create(size_t workspace_bytes = 64u << 20);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // InvalidArgument for bad shapes (before any CUDA call), Internal naming cuBLASLt's status.
  [[nodiscard]] absl::Status Linear(const LinearArgs& a, cudaStream_t stream);

 private:
  LtGemm() = default;
  // The algorithm cuBLASLt's heuristic picks for a shape, asked once per shape.
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, bool>;
  struct Plan;
  absl::StatusOr<const Plan*> PlanFor(const LinearArgs& a);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace sparsefill::engine::cuda
