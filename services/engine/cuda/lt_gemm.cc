#include "services/engine/cuda/lt_gemm.h"

#include <dlfcn.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::cuda {
namespace {

// cuBLASLt is opened when the first cuda runner is made, not linked: a library loaded at start-up
// puts its thread-local storage (94 KiB for cuBLASLt) in every thread's static TLS, which glibc
// carves out of each thread's stack; threads started with small fixed stacks (Debian's civetweb
// used 100 KiB, see services/metrics/exposer.h) then fail to start. Opened later, its TLS is
// allocated on demand instead, and processes that never make a cuda runner never load it.
// Only these entry points are used.
struct LtApi {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtDestroy) destroy = nullptr;
  decltype(&cublasLtGetStatusName) status_name = nullptr;
  decltype(&cublasLtGetStatusString) status_string = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
};

const LtApi* Api(std::string* error) {
  static LtApi api;
  static std::string failure;
  static std::once_flag once;
  std::call_once(once, [] {
    void* h = nullptr;
    for (const char* name : {"libcublasLt.so.13", "libcublasLt.so"}) {
      h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (h != nullptr) break;
    }
    if (h == nullptr) {
      const char* e = dlerror();
      failure = absl::StrCat("cannot open libcublasLt.so.13: ", e != nullptr ? e : "?");
      return;
    }
    auto get = [&](auto& fn, const char* sym) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, sym));
      if (fn == nullptr && failure.empty()) failure = absl::StrCat("libcublasLt has no ", sym);
    };
    get(api.create, "cublasLtCreate");
    get(api.destroy, "cublasLtDestroy");
    get(api.status_name, "cublasLtGetStatusName");
    get(api.status_string, "cublasLtGetStatusString");
    get(api.desc_create, "cublasLtMatmulDescCreate");
    get(api.desc_destroy, "cublasLtMatmulDescDestroy");
    get(api.desc_set, "cublasLtMatmulDescSetAttribute");
    get(api.layout_create, "cublasLtMatrixLayoutCreate");
    get(api.layout_destroy, "cublasLtMatrixLayoutDestroy");
    get(api.pref_create, "cublasLtMatmulPreferenceCreate");
    get(api.pref_destroy, "cublasLtMatmulPreferenceDestroy");
    get(api.pref_set, "cublasLtMatmulPreferenceSetAttribute");
    get(api.heuristic, "cublasLtMatmulAlgoGetHeuristic");
    get(api.matmul, "cublasLtMatmul");
  });
  if (!failure.empty()) {
    if (error != nullptr) *error = failure;
    return nullptr;
  }
  return &api;
}

// Only called once Api() succeeded (an LtGemm exists).
const LtApi& Lt() { return *Api(nullptr); }

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("cuBLASLt ", what, ": ", Lt().status_name(s), " (", Lt().status_string(s), ")"));
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
    if (d) Lt().layout_destroy(d);
    if (b) Lt().layout_destroy(b);
    if (a) Lt().layout_destroy(a);
    if (op) Lt().desc_destroy(op);
  }
};

absl::StatusOr<std::unique_ptr<LtGemm>> LtGemm::Create(size_t workspace_bytes) {
  std::string error;
  if (Api(&error) == nullptr) return absl::FailedPreconditionError(error);
  std::unique_ptr<LtGemm> g(new LtGemm());
  SF_LT(Lt().create(&g->handle_), "create");
  SF_ASSIGN_OR_RETURN(g->workspace_, DeviceBuffer::Allocate(workspace_bytes, "cuBLASLt workspace"));
  return g;
}

LtGemm::~LtGemm() {
  plans_.clear();
  if (handle_ != nullptr) Lt().destroy(handle_);
}

absl::StatusOr<const LtGemm::Plan*> LtGemm::PlanFor(const LinearArgs& a) {
  const Key key{a.rows, a.in, a.out, a.ldx, a.ldy, static_cast<int>(a.y_dtype), a.bias != nullptr};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  auto p = std::make_unique<Plan>();
  const cudaDataType_t ytype = a.y_dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  SF_LT(Lt().desc_create(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
  const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  SF_LT(Lt().desc_set(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)), "transa");
  SF_LT(Lt().desc_set(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)), "transb");
  if (a.bias != nullptr) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    SF_LT(Lt().desc_set(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)), "epilogue");
    const cudaDataType_t btype = CUDA_R_16BF;
    SF_LT(Lt().desc_set(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &btype, sizeof(btype)),
          "bias type");
  }
  SF_LT(Lt().layout_create(&p->a, CUDA_R_16BF, a.in, a.out, a.in), "layout W");
  SF_LT(Lt().layout_create(&p->b, CUDA_R_16BF, a.in, a.rows, a.ldx), "layout x");
  SF_LT(Lt().layout_create(&p->d, ytype, a.out, a.rows, a.ldy), "layout y");

  cublasLtMatmulPreference_t pref = nullptr;
  SF_LT(Lt().pref_create(&pref), "preference");
  const size_t ws = workspace_.bytes();
  cublasStatus_t st =
      Lt().pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = Lt().heuristic(handle_, p->op, p->a, p->b, p->d, p->d, pref, 1, &result, &found);
  }
  Lt().pref_destroy(pref);
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
    SF_LT(Lt().desc_set(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &a.bias, sizeof(a.bias)),
          "bias pointer");
  }
  const float alpha = 1.0f, beta = 0.0f;
  SF_LT(Lt().matmul(handle_, p->op, &alpha, a.w, p->a, a.x, p->b, &beta, a.y, p->d, a.y, p->d,
                    &p->algo, workspace_.get(), workspace_.bytes(), stream),
        "matmul");
  return absl::OkStatus();
}

}  // namespace sparsefill::engine::cuda
