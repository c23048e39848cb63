#include "services/engine/cuda/lt_gemm.h"

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::cuda {
namespace {

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, ": ", cublasLtGetStatusName(s), " (",
                                          cublasLtGetStatusString(s), ")"));
}

#define SF_LT(expr, what) SF_RETURN_IF_ERROR(LtStatus((expr), (what)))

}  // namespace

// Column-major view of the row-major product: y^T [out, rows] = W [out, in] . x^T, i.e. cuBLAS's
// "TN" GEMM with m = out, n = rows, k = in: A = W (stored as the column-major [in, out] matrix,
// transposed), B = x (column-major [in, rows]), D = y (column-major [out, rows], ld ldy).
struct LtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

absl::StatusOr<std::unique_ptr<LtGemm>> LtGemm::Create(size_t workspace_bytes) {
  std::unique_ptr<LtGemm> g(new LtGemm());
  SF_LT(cublasLtCreate(&g->handle_), "create");
  SF_ASSIGN_OR_RETURN(g->workspace_, DeviceBuffer::Allocate(workspace_bytes, "cuBLASLt workspace"));
  return g;
}

LtGemm::~LtGemm() {
  plans_.clear();
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::StatusOr<const LtGemm::Plan*> LtGemm::PlanFor(const LinearArgs& a) {
  const Key key{a.rows, a.in, a.out, a.ldx, a.ldy, static_cast<int>(a.y_dtype), a.bias != nullptr};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  auto p = std::make_unique<Plan>();
  const cudaDataType_t ytype = a.y_dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  SF_LT(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
  const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  SF_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)),
        "transa");
  SF_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)),
        "transb");
  if (a.bias != nullptr) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    SF_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)),
          "epilogue");
    const cudaDataType_t btype = CUDA_R_16BF;
    SF_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &btype,
                                         sizeof(btype)),
          "bias type");
  }
  SF_LT(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, a.in, a.out, a.in), "layout W");
  SF_LT(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, a.in, a.rows, a.ldx), "layout x");
  SF_LT(cublasLtMatrixLayoutCreate(&p->d, ytype, a.out, a.rows, a.ldy), "layout y");

  cublasLtMatmulPreference_t pref = nullptr;
  SF_LT(cublasLtMatmulPreferenceCreate(&pref), "preference");
  const size_t ws = workspace_.bytes();
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_, p->op, p->a, p->b, p->d, p->d, pref, 1, &result,
                                        &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  SF_LT(st, "heuristic");
  if (found == 0) {
    return absl::InternalError(absl::StrCat("cuBLASLt has no algorithm for ", a.rows, " x ", a.in,
                                            " . (", a.out, " x ", a.in, ")^T"));
  }
  p->algo = result.algo;
  const Plan* raw = p.get();
  plans_.emplace(key, std::move(p));
  return raw;
}

absl::Status LtGemm::Linear(const LinearArgs& a, cudaStream_t stream) {
  if (a.x == nullptr || a.w == nullptr || a.y == nullptr) {
    return absl::InvalidArgumentError("Linear: x, w and y must be set");
  }
  if (a.rows < 0 || a.in <= 0 || a.out <= 0 || a.ldx < a.in || a.ldy < a.out) {
    return absl::InvalidArgumentError(absl::StrCat("Linear: bad shape rows ", a.rows, ", in ", a.in,
                                                   ", out ", a.out, ", ldx ", a.ldx, ", ldy ",
                                                   a.ldy));
  }
  if (a.y_dtype != DType::kBF16 && a.y_dtype != DType::kF32) {
    return absl::InvalidArgumentError("Linear: y must be bf16 or fp32");
  }
  if (a.rows == 0) return absl::OkStatus();
  SF_ASSIGN_OR_RETURN(const Plan* p, PlanFor(a));
  if (a.bias != nullptr) {
    SF_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &a.bias,
                                         sizeof(a.bias)),
          "bias pointer");
  }
  const float alpha = 1.0f, beta = 0.0f;
  SF_LT(cublasLtMatmul(handle_, p->op, &alpha, a.w, p->a, a.x, p->b, &beta, a.y, p->d, a.y, p->d,
                       &p->algo, workspace_.get(), workspace_.bytes(), stream),
        "matmul");
  return absl::OkStatus();
}

}  // namespace sparsefill::engine::cuda
