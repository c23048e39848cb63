// LaunchBlockSummaries and LaunchSelectBlocks: host-side checks, the choice between the fused
// top-k (running lists in shared memory, no block scores in device memory) and the materialised
// one, the query chunking that bounds the workspace, and the compile-time dispatch over head_dim
// and the GQA group.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/common/cuda_dtype.cuh"
#include "kernels/selection/block_summaries_kernel.cuh"
#include "kernels/selection/selection_score_kernel.cuh"
#include "kernels/selection/selection_topk_kernel.cuh"
#include "sparsefill/common/status.h"
#include "sparsefill/kernels/selection.h"

namespace sparsefill::kernels {
namespace {

// Block scores of one chunk of queries: about 1 GiB, so that 1M-token prompts fit on any card
// while each chunk still fills the GPU with CTAs.
constexpr int64_t kScoreBudgetBytes = int64_t{1} << 30;
constexpr int64_t kQueryQuantum = cuda::kSelCols;  // chunks hold whole query tiles for any G
constexpr size_t kAlign = 256;
// Shared memory of one fused pass-2 CTA: at most this much keeps two CTAs per SM (the register
// file allows no more), and what the K tiles and pooled rows leave goes to the running lists.
constexpr int kFusedSmemBudget = 113 * 1024;

size_t AlignUp(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

struct SelectPlan {
  int64_t score_stride = 0;  // blocks of the last query + 1
  int64_t chunk_q = 0;       // queries per chunk
  size_t lse_bytes = 0;
  size_t score_bytes = 0;  // 0 when fused
  bool fused = false;      // top-k inside the scoring pass
  int32_t list_cap = 0;    // fused: entries of each query's running list
};

// Longest running list that fits kFusedSmemBudget for this head_dim and group.
int32_t FusedListCap(int32_t head_dim, int32_t group) {
  const int queries = group >= 1 ? cuda::kSelCols / group : 0;
  if (queries <= 0) return 0;  // unsupported groups are rejected by the checks
  const int fixed = (head_dim == 64 ? cuda::SelectScoreSmemBytes<64>(group)
                                    : cuda::SelectScoreSmemBytes<128>(group)) +
                    cuda::SelectFusedFixedBytes(queries);
  return std::max(0, (kFusedSmemBudget - fixed) / (queries * 8));
}

SelectPlan PlanSelect(const SelectBlocksCudaParams& p) {
  SelectPlan plan;
  if (p.num_q <= 0 || p.block_size <= 0 || p.kv_heads <= 0 || p.q_heads <= 0 ||
      p.kernel_stride <= 0 || p.q_heads % p.kv_heads != 0) {
    return plan;
  }
  const int64_t last_pos = p.q_pos0 + p.num_q - 1;
  plan.score_stride = last_pos / p.block_size + 1;
  // A list must hold the blocks taken by score (all but the forced ones, where a query has any
  // candidates) plus one tile's new blocks.
  const int64_t query_aware = p.query_aware <= 0 ? p.topk : std::min(p.query_aware, p.topk);
  const int64_t by_score =
      std::max<int64_t>(0, query_aware - p.init_blocks - int64_t{p.local_blocks} - 1);
  const int64_t tile_blocks =
      std::max(1, cuda::kSelChunkTile / std::max(1, p.block_size / p.kernel_stride));
  const int32_t list_cap = FusedListCap(p.head_dim, p.q_heads / p.kv_heads);
  plan.fused = !p.materialize_scores && by_score + tile_blocks <= list_cap;
  plan.list_cap = plan.fused ? list_cap : 0;
  const int64_t per_query =
      plan.fused ? int64_t{p.q_heads} * 4 : int64_t{p.kv_heads} * plan.score_stride * 4;
  const int64_t fit = std::max<int64_t>(
      kQueryQuantum, kScoreBudgetBytes / per_query / kQueryQuantum * kQueryQuantum);
  const int64_t all = (p.num_q + kQueryQuantum - 1) / kQueryQuantum * kQueryQuantum;
  plan.chunk_q = std::min(fit, all);
  if (p.max_chunk_queries > 0) {
    const int64_t cap = (p.max_chunk_queries + kQueryQuantum - 1) / kQueryQuantum * kQueryQuantum;
    plan.chunk_q = std::min(plan.chunk_q, cap);
  }
  plan.lse_bytes = AlignUp(static_cast<size_t>(plan.chunk_q) * p.q_heads * 4);
  plan.score_bytes = plan.fused ? 0 : AlignUp(static_cast<size_t>(per_query) * plan.chunk_q);
  return plan;
}

bool PowerOfTwoUpTo(int64_t v, int64_t max) { return v >= 1 && v <= max && (v & (v - 1)) == 0; }

absl::Status CheckSelectCuda(const SelectBlocksCudaParams& p, void* workspace,
                             size_t workspace_bytes) {
  // The shape rules are the reference's; only its pointers' types differ.
  SelectBlocksParams r;
  r.q = static_cast<const float*>(p.q);
  r.summaries = static_cast<const float*>(p.summaries);
  r.block_importance = p.block_importance;
  r.blocks = p.blocks;
  r.num_q = p.num_q;
  r.q_pos0 = p.q_pos0;
  r.num_chunks = p.num_chunks;
  r.importance_blocks = p.importance_blocks;
  r.q_heads = p.q_heads;
  r.kv_heads = p.kv_heads;
  r.head_dim = p.head_dim;
  r.scale = p.scale;
  r.kernel_size = p.kernel_size;
  r.kernel_stride = p.kernel_stride;
  r.block_size = p.block_size;
  r.init_blocks = p.init_blocks;
  r.local_blocks = p.local_blocks;
  r.topk = p.topk;
  r.query_aware = p.query_aware;
  if (absl::Status s = ValidateSelectBlocks(r); !s.ok()) return s;
  if (p.head_dim != 64 && p.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchSelectBlocks: head_dim ", p.head_dim, " unsupported (64 or 128)"));
  }
  const int32_t group = p.q_heads / p.kv_heads;
  if (!PowerOfTwoUpTo(group, 16)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchSelectBlocks: q_heads / kv_heads = ", group, " unsupported (1, 2, 4, 8 or 16)"));
  }
  const int32_t pool_stride = p.block_size / p.kernel_stride;
  if (!PowerOfTwoUpTo(pool_stride, cuda::kSelChunkTile)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchSelectBlocks: block_size / kernel_stride = ", pool_stride,
                     " unsupported (a power of two up to ", cuda::kSelChunkTile, ")"));
  }
  if (p.kernel_size / p.kernel_stride - 1 > cuda::kSelHalo) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LaunchSelectBlocks: kernel_size / kernel_stride = ", p.kernel_size / p.kernel_stride,
        " unsupported (at most ", cuda::kSelHalo + 1, ")"));
  }
  if (p.topk > cuda::kTopkMax) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchSelectBlocks: topk ", p.topk,
                                                   " unsupported (at most ", cuda::kTopkMax, ")"));
  }
  if (p.num_q == 0) return absl::OkStatus();
  if (!cuda::Aligned16(p.q) || (p.summaries != nullptr && !cuda::Aligned16(p.summaries))) {
    return absl::InvalidArgumentError(
        "LaunchSelectBlocks: q and summaries must be 16-byte aligned");
  }
  const size_t need = SelectBlocksWorkspaceBytes(p);
  if (workspace == nullptr || workspace_bytes < need ||
      reinterpret_cast<uintptr_t>(workspace) % kAlign != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchSelectBlocks: workspace of ", workspace_bytes, " bytes at ",
                     reinterpret_cast<uintptr_t>(workspace), " must be non-null, ", kAlign,
                     "-byte aligned and hold SelectBlocksWorkspaceBytes = ", need, " bytes"));
  }
  return absl::OkStatus();
}

template <int kD, int kG>
absl::Status LaunchScoresT(const cuda::SelectScoreArgs& args, bool fused, cudaStream_t stream) {
  constexpr int kTq = cuda::kSelCols / kG;
  constexpr int kSmem = cuda::SelectScoreSmemBytes<kD>(kG);
  const int fused_smem = cuda::SelectFusedSmemBytes<kD>(kG, args.list_cap);
  const dim3 grid(static_cast<unsigned>((args.nq + kTq - 1) / kTq),
                  static_cast<unsigned>(args.kv_heads));
  auto* pass1 = cuda::SelectScoreKernel<kD, kG, false, false>;
  auto* pass2 = fused ? cuda::SelectScoreKernel<kD, kG, true, true>
                      : cuda::SelectScoreKernel<kD, kG, true, false>;
  const int smem2 = fused ? fused_smem : kSmem;
  if (cudaFuncSetAttribute(pass1, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) !=
          cudaSuccess ||
      cudaFuncSetAttribute(pass2, cudaFuncAttributeMaxDynamicSharedMemorySize, smem2) !=
          cudaSuccess) {
    return cuda::LaunchStatus("LaunchSelectBlocks (shared memory attribute)");
  }
  pass1<<<grid, cuda::kSelThreads, kSmem, stream>>>(args);
  SF_RETURN_IF_ERROR(cuda::LaunchStatus("LaunchSelectBlocks (pass 1: row LSE)"));
  pass2<<<grid, cuda::kSelThreads, smem2, stream>>>(args);
  return cuda::LaunchStatus(fused ? "LaunchSelectBlocks (pass 2: block scores + top-k)"
                                  : "LaunchSelectBlocks (pass 2: block scores)");
}

template <int kD>
absl::Status DispatchGroup(int32_t group, const cuda::SelectScoreArgs& args, bool fused,
                           cudaStream_t stream) {
  switch (group) {
    case 1:
      return LaunchScoresT<kD, 1>(args, fused, stream);
    case 2:
      return LaunchScoresT<kD, 2>(args, fused, stream);
    case 4:
      return LaunchScoresT<kD, 4>(args, fused, stream);
    case 8:
      return LaunchScoresT<kD, 8>(args, fused, stream);
    case 16:
      return LaunchScoresT<kD, 16>(args, fused, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("LaunchSelectBlocks: unsupported group ", group));
  }
}

}  // namespace

absl::Status LaunchBlockSummaries(const BlockSummaryCudaParams& p, cudaStream_t stream) {
  if (p.kernel_size <= 0 || p.kernel_stride <= 0 || p.kernel_size % p.kernel_stride != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchBlockSummaries: kernel_size ", p.kernel_size,
                     " must be a positive multiple of kernel_stride ", p.kernel_stride));
  }
  if (p.kv_heads <= 0 || p.head_dim <= 0 || p.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchBlockSummaries: kv_heads ", p.kv_heads,
                                                   " must be positive and ", "head_dim ",
                                                   p.head_dim, " positive and even"));
  }
  if (p.num_kv < 0 || p.k_pos0 < 0) {
    return absl::InvalidArgumentError(absl::StrCat("LaunchBlockSummaries: num_kv ", p.num_kv,
                                                   " and k_pos0 ", p.k_pos0,
                                                   " must be non-negative"));
  }
  if (!(p.lambda >= 0.0f && p.lambda <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LaunchBlockSummaries: lambda ", p.lambda, " must be in [0, 1]"));
  }
  const bool mix = p.lambda < 1.0f;
  if (mix && p.punct == nullptr) {
    return absl::InvalidArgumentError(
        "LaunchBlockSummaries: lambda < 1 needs the punctuation mask");
  }
  const ChunkRange range = SummaryChunkRange(p.k_pos0, p.num_kv, p.kernel_size, p.kernel_stride);
  if (range.count == 0) return absl::OkStatus();
  if (p.k == nullptr || p.summaries == nullptr) {
    return absl::InvalidArgumentError("LaunchBlockSummaries: k and summaries must not be null");
  }
  if (reinterpret_cast<uintptr_t>(p.k) % 4 != 0 ||
      reinterpret_cast<uintptr_t>(p.summaries) % 4 != 0) {
    return absl::InvalidArgumentError(
        "LaunchBlockSummaries: k and summaries must be 4-byte aligned");
  }
  const int64_t total = range.count * p.kv_heads * (p.head_dim / 2);
  const int64_t blocks = std::min<int64_t>(
      (total + cuda::kSummaryThreads - 1) / cuda::kSummaryThreads, int64_t{1} << 20);
  cuda::BlockSummaryKernel<<<static_cast<unsigned>(blocks), cuda::kSummaryThreads, 0, stream>>>(
      static_cast<const __nv_bfloat162*>(p.k), mix ? p.punct : nullptr,
      static_cast<__nv_bfloat162*>(p.summaries), range.first, range.count, p.k_pos0, p.kv_heads,
      p.head_dim / 2, p.kernel_size, p.kernel_stride, p.lambda);
  return cuda::LaunchStatus("LaunchBlockSummaries");
}

size_t SelectBlocksWorkspaceBytes(const SelectBlocksCudaParams& p) {
  const SelectPlan plan = PlanSelect(p);
  return plan.lse_bytes + plan.score_bytes;
}

absl::Status LaunchSelectBlocks(const SelectBlocksCudaParams& p, void* workspace,
                                size_t workspace_bytes, cudaStream_t stream) {
  SF_RETURN_IF_ERROR(CheckSelectCuda(p, workspace, workspace_bytes));
  if (p.num_q == 0) return absl::OkStatus();
  const SelectPlan plan = PlanSelect(p);
  const int32_t group = p.q_heads / p.kv_heads;

  cuda::SelectScoreArgs s{};
  s.q = static_cast<const __nv_bfloat16*>(p.q);
  s.summaries = static_cast<const __nv_bfloat16*>(p.summaries);
  s.lse = static_cast<float*>(workspace);
  s.block_scores = plan.fused
                       ? nullptr
                       : reinterpret_cast<float*>(static_cast<char*>(workspace) + plan.lse_bytes);
  s.q_pos0 = p.q_pos0;
  // Null summaries are valid when no query sees a chunk yet; the kernel then reads none.
  s.num_chunks = p.summaries == nullptr ? 0 : p.num_chunks;
  s.chunk_q = plan.chunk_q;
  s.score_stride = plan.score_stride;
  s.q_heads = p.q_heads;
  s.kv_heads = p.kv_heads;
  s.scale_log2 = p.scale * 1.4426950408889634f;
  s.kernel_size = p.kernel_size;
  s.kernel_stride = p.kernel_stride;
  s.block_size = p.block_size;
  s.list_cap = plan.list_cap;

  cuda::SelectTopkArgs t{};
  t.block_scores = s.block_scores;
  t.importance = p.block_importance;
  t.blocks = p.blocks;
  t.q_pos0 = p.q_pos0;
  t.num_q = p.num_q;
  t.chunk_q = plan.chunk_q;
  t.score_stride = plan.score_stride;
  t.importance_blocks = p.importance_blocks;
  t.kv_heads = p.kv_heads;
  t.block_size = p.block_size;
  t.init_blocks = p.init_blocks;
  t.local_blocks = p.local_blocks;
  t.topk = p.topk;
  t.query_aware = p.query_aware <= 0 ? p.topk : std::min(p.query_aware, p.topk);

  for (int64_t q0 = 0; q0 < p.num_q; q0 += plan.chunk_q) {
    const int64_t nq = std::min(plan.chunk_q, p.num_q - q0);
    s.q_begin = q0;
    s.nq = nq;
    t.q_begin = q0;
    t.nq = nq;
    s.topk = t;
    if (p.head_dim == 64) {
      SF_RETURN_IF_ERROR(DispatchGroup<64>(group, s, plan.fused, stream));
    } else {
      SF_RETURN_IF_ERROR(DispatchGroup<128>(group, s, plan.fused, stream));
    }
    if (plan.fused) continue;
    const int64_t rows = int64_t{p.kv_heads} * nq;
    const int64_t ctas = (rows + cuda::kTopkWarps - 1) / cuda::kTopkWarps;
    cuda::SelectTopkKernel<<<static_cast<unsigned>(ctas), cuda::kTopkWarps * 32, 0, stream>>>(t);
    SF_RETURN_IF_ERROR(cuda::LaunchStatus("LaunchSelectBlocks (top-k)"));
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
