// SelectLayer: one layer's block selection on the CPU, on top of the kernels in
// kernels/selection (summaries -> scores -> top-k), plus the sparsity counters.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/selection.h"
#include "sparsefill/kernels/selection.h"

namespace sparsefill::engine {
namespace {

absl::Status ValidateInput(const LayerSelectionInput& in) {
  if (in.q_heads <= 0 || in.kv_heads <= 0 || in.q_heads % in.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("selection input: q_heads ", in.q_heads,
                                                   " must be a positive multiple of kv_heads ",
                                                   in.kv_heads));
  }
  if (in.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("selection input: head_dim ", in.head_dim));
  }
  if (in.num_q < 0 || in.q_pos0 < 0 || in.num_kv < 0 || in.q_pos0 + in.num_q > in.num_kv) {
    return absl::InvalidArgumentError(absl::StrCat("selection input: queries at q_pos0 ", in.q_pos0,
                                                   " + num_q ", in.num_q, " must lie within the ",
                                                   in.num_kv, " keys"));
  }
  if (!std::isfinite(in.scale) || in.scale == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("selection input: scale ", in.scale));
  }
  if (in.num_q > 0 && (in.q == nullptr || in.k == nullptr)) {
    return absl::InvalidArgumentError("selection input: q and k must not be null");
  }
  return absl::OkStatus();
}

// Every causal block for every query: what dense attention reads.
void FillDense(LayerSelection& out) {
  const int64_t last = out.q_pos0 + out.num_q - 1;
  out.max_blocks = out.num_q > 0 ? static_cast<int32_t>(last / out.block_size + 1) : 0;
  out.blocks.assign(static_cast<size_t>(out.kv_heads * out.num_q * out.max_blocks), -1);
  for (int32_t g = 0; g < out.kv_heads; ++g) {
    for (int64_t i = 0; i < out.num_q; ++i) {
      int32_t* row = out.blocks.data() + (g * out.num_q + i) * out.max_blocks;
      const int64_t qb = (out.q_pos0 + i) / out.block_size;
      for (int64_t b = 0; b <= qb; ++b) row[b] = static_cast<int32_t>(b);
    }
  }
}

void CountKeys(LayerSelection& out) {
  int64_t selected = 0;
  int64_t causal = 0;
  for (int32_t g = 0; g < out.kv_heads; ++g) {
    for (int64_t i = 0; i < out.num_q; ++i) {
      const int64_t t = out.q_pos0 + i;
      causal += t + 1;
      const int32_t* row = out.blocks.data() + (g * out.num_q + i) * out.max_blocks;
      for (int32_t j = 0; j < out.max_blocks && row[j] >= 0; ++j) {
        const int64_t first = int64_t{row[j]} * out.block_size;
        selected += std::clamp<int64_t>(t + 1 - first, 0, out.block_size);
      }
    }
  }
  out.selected_keys = selected;
  out.causal_keys = causal;
}

}  // namespace

absl::StatusOr<std::vector<float>> ComputeBlockImportance(const LayerSelectionInput& in,
                                                          int32_t block_size, int32_t observe) {
  SF_RETURN_IF_ERROR(ValidateInput(in));
  if (block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("importance: block_size ", block_size));
  }
  if (observe <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("importance: observe ", observe));
  }
  const int64_t n_obs = std::min<int64_t>(observe, in.num_q);
  const int64_t num_blocks = (in.num_kv + block_size - 1) / block_size;
  std::vector<float> importance(static_cast<size_t>(in.kv_heads * num_blocks));
  kernels::BlockImportanceParams p;
  p.q = in.q + (in.num_q - n_obs) * static_cast<int64_t>(in.q_heads) * in.head_dim;
  p.k = in.k;
  p.importance = importance.data();
  p.num_q = n_obs;
  p.q_pos0 = in.q_pos0 + in.num_q - n_obs;
  p.num_kv = in.num_kv;
  p.q_heads = in.q_heads;
  p.kv_heads = in.kv_heads;
  p.head_dim = in.head_dim;
  p.block_size = block_size;
  p.scale = in.scale;
  SF_RETURN_IF_ERROR(kernels::BlockImportanceRef(p));
  return importance;
}

absl::StatusOr<LayerSelection> SelectLayer(const SelectionConfig& config,
                                           const LayerSelectionInput& in) {
  SF_RETURN_IF_ERROR(config.Validate());
  SF_RETURN_IF_ERROR(ValidateInput(in));
  LayerSelection out;
  out.block_size = config.block_size;
  out.kv_heads = in.kv_heads;
  out.num_q = in.num_q;
  out.q_pos0 = in.q_pos0;
  // Refuse absurd budgets up front rather than failing inside the allocator.
  constexpr int64_t kMaxEntries = int64_t{1} << 33;
  const int64_t row_len =
      config.policy == Policy::kDense
          ? (in.num_q > 0 ? (in.q_pos0 + in.num_q - 1) / config.block_size + 1 : 0)
          : config.topk;
  if (in.num_q > 0 && in.kv_heads * row_len > kMaxEntries / in.num_q) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection: kv_heads ", in.kv_heads, " x num_q ", in.num_q, " x ", row_len,
                     " block entries is too large; use a smaller topk or shard the queries"));
  }
  if (config.policy == Policy::kDense) {
    FillDense(out);
    CountKeys(out);
    return out;
  }
  out.max_blocks = config.topk;
  out.blocks.assign(static_cast<size_t>(in.kv_heads * in.num_q * config.topk), -1);
  if (in.num_q == 0) return out;

  const bool phsa = config.policy == Policy::kPhsa;
  const float lambda = phsa ? config.lambda : 1.0f;
  if (phsa && lambda < 1.0f && in.punct == nullptr) {
    return absl::InvalidArgumentError("selection input: phsa with lambda < 1 needs punct");
  }
  // Keys after the last query cannot be selected: summarise only the ones before.
  const int64_t keys = in.q_pos0 + in.num_q;
  const kernels::ChunkRange range =
      kernels::SummaryChunkRange(0, keys, config.kernel_size, config.kernel_stride);
  std::vector<float> summaries(static_cast<size_t>(range.count * in.kv_heads * in.head_dim));
  kernels::BlockSummaryParams sp;
  sp.k = in.k;
  sp.punct = lambda < 1.0f ? in.punct : nullptr;
  sp.summaries = summaries.data();
  sp.num_kv = keys;
  sp.k_pos0 = 0;
  sp.kv_heads = in.kv_heads;
  sp.head_dim = in.head_dim;
  sp.kernel_size = config.kernel_size;
  sp.kernel_stride = config.kernel_stride;
  sp.lambda = lambda;
  SF_RETURN_IF_ERROR(kernels::BlockSummariesRef(sp));

  kernels::SelectBlocksParams p;
  p.q = in.q;
  p.summaries = summaries.data();
  p.blocks = out.blocks.data();
  p.num_q = in.num_q;
  p.q_pos0 = in.q_pos0;
  p.num_chunks = range.count;
  p.q_heads = in.q_heads;
  p.kv_heads = in.kv_heads;
  p.head_dim = in.head_dim;
  p.scale = in.scale;
  p.kernel_size = config.kernel_size;
  p.kernel_stride = config.kernel_stride;
  p.block_size = config.block_size;
  p.init_blocks = config.init_blocks;
  p.local_blocks = config.local_blocks();
  p.topk = config.topk;
  p.query_aware = config.topk;
  if (config.policy == Policy::kNosa) {
    p.query_aware = config.nosa_query_aware;
    const int64_t num_blocks = (in.num_kv + config.block_size - 1) / config.block_size;
    if (in.block_importance != nullptr) {
      if (in.importance_blocks < num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("selection input: importance_blocks ",
                                                       in.importance_blocks, " does not cover the ",
                                                       num_blocks, " blocks of the keys"));
      }
      out.block_importance.resize(static_cast<size_t>(in.kv_heads * num_blocks));
      for (int32_t g = 0; g < in.kv_heads; ++g) {
        std::copy_n(in.block_importance + g * in.importance_blocks, num_blocks,
                    out.block_importance.begin() + g * num_blocks);
      }
    } else {
      if (in.q_pos0 + in.num_q != in.num_kv) {
        return absl::InvalidArgumentError(
            "selection input: nosa needs block_importance unless the queries end the prompt "
            "(q_pos0 + num_q == num_kv)");
      }
      SF_ASSIGN_OR_RETURN(out.block_importance,
                          ComputeBlockImportance(in, config.block_size, config.nosa_observe));
    }
    p.block_importance = out.block_importance.data();
    p.importance_blocks = num_blocks;
  }
  SF_RETURN_IF_ERROR(kernels::SelectBlocksRef(p));
  CountKeys(out);
  return out;
}

}  // namespace sparsefill::engine
