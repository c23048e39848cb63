// SelectionConfig: presets, parsing and validation of the selection policies (DESIGN §4).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/selection.h"

namespace sparsefill::engine {
namespace {

constexpr int32_t kMaxTokensPerUnit = 1 << 16;
constexpr int32_t kMaxTopk = 1 << 24;

absl::Status FieldError(std::string_view field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("selection config: ", AsAbsl(field), " ", why));
}

}  // namespace

std::string_view PolicyName(Policy p) {
  switch (p) {
    case Policy::kDense:
      return "dense";
    case Policy::kInfLlmV2:
      return "infllmv2";
    case Policy::kPhsa:
      return "phsa";
    case Policy::kNosa:
      return "nosa";
  }
  return "unknown";
}

absl::StatusOr<Policy> ParsePolicy(std::string_view name) {
  std::string lower;
  for (char c : name) {
    if (c == '-' || c == '_') continue;  // "infllm-v2", "infllm_v2"
    lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (lower == "dense") return Policy::kDense;
  if (lower == "infllmv2") return Policy::kInfLlmV2;
  if (lower == "phsa") return Policy::kPhsa;
  if (lower == "nosa") return Policy::kNosa;
  return absl::InvalidArgumentError(absl::StrCat("unknown selection policy \"", AsAbsl(name),
                                                 "\" (expected dense, infllmv2, phsa or nosa)"));
}

SelectionConfig SelectionConfig::InfLlmV2() {
  SelectionConfig c;
  c.policy = Policy::kInfLlmV2;
  c.block_size = 64;
  c.kernel_size = 32;
  c.kernel_stride = 16;
  c.init_blocks = 1;
  c.local_tokens = 2048;
  c.topk = 64;
  c.dense_below = 8192;
  c.nosa_query_aware = 64;
  return c;
}

SelectionConfig SelectionConfig::Phsa() {
  SelectionConfig c;
  c.policy = Policy::kPhsa;
  c.block_size = 16;
  c.kernel_size = 16;
  c.kernel_stride = 16;
  c.init_blocks = 8;     // 128 tokens
  c.local_tokens = 512;  // 32 blocks + the query's own
  c.topk = 8 + 33 + 16;  // forced + 16 scored
  c.lambda = 0.5f;
  c.dense_below = 8192;
  c.nosa_query_aware = c.topk;
  return c;
}

SelectionConfig SelectionConfig::Nosa() {
  SelectionConfig c = InfLlmV2();
  c.policy = Policy::kNosa;
  c.nosa_query_aware = 48;
  c.nosa_observe = 64;
  return c;
}

SelectionConfig SelectionConfig::Dense() {
  SelectionConfig c = InfLlmV2();
  c.policy = Policy::kDense;
  c.dense_below = std::numeric_limits<int64_t>::max();
  return c;
}

SelectionConfig SelectionConfig::ForPolicy(Policy policy, const ModelConfig& model) {
  switch (policy) {
    case Policy::kDense:
      return Dense();
    case Policy::kPhsa:
      return Phsa();
    case Policy::kInfLlmV2:
    case Policy::kNosa:
      break;
  }
  SelectionConfig c = policy == Policy::kNosa ? Nosa() : InfLlmV2();
  if (!model.sparse.present) return c;
  const SparseConfig& s = model.sparse;
  c.block_size = s.block_size;
  c.kernel_size = s.kernel_size;
  c.kernel_stride = s.kernel_stride;
  c.init_blocks = s.init_blocks;
  c.local_tokens = s.window_size;
  c.topk = s.topk;
  c.dense_below = s.dense_len;
  // NOSA keeps the preset's split: a quarter of the budget for the query-agnostic ranking, but
  // never fewer query-aware blocks than the forced ones.
  c.nosa_query_aware =
      policy == Policy::kNosa ? std::max(c.forced_blocks(), c.topk - c.topk / 4) : c.topk;
  return c;
}

absl::Status SelectionConfig::Validate() const {
  if (policy != Policy::kDense && policy != Policy::kInfLlmV2 && policy != Policy::kPhsa &&
      policy != Policy::kNosa) {
    return FieldError("policy", absl::StrCat(static_cast<int>(policy), " is not a policy"));
  }
  if (block_size <= 0 || block_size > kMaxTokensPerUnit) {
    return FieldError("block_size",
                      absl::StrCat(block_size, " must be in [1, ", kMaxTokensPerUnit, "]"));
  }
  if (kernel_stride <= 0 || kernel_stride > kMaxTokensPerUnit) {
    return FieldError("kernel_stride",
                      absl::StrCat(kernel_stride, " must be in [1, ", kMaxTokensPerUnit, "]"));
  }
  if (kernel_size <= 0 || kernel_size > kMaxTokensPerUnit) {
    return FieldError("kernel_size",
                      absl::StrCat(kernel_size, " must be in [1, ", kMaxTokensPerUnit, "]"));
  }
  // Max-pooling chunk scores onto blocks needs whole chunks per block step and per kernel.
  if (block_size % kernel_stride != 0) {
    return FieldError(
        "block_size",
        absl::StrCat(block_size, " must be a multiple of kernel_stride ", kernel_stride));
  }
  if (kernel_size % kernel_stride != 0) {
    return FieldError(
        "kernel_size",
        absl::StrCat(kernel_size, " must be a multiple of kernel_stride ", kernel_stride));
  }
  if (init_blocks < 0) return FieldError("init_blocks", absl::StrCat(init_blocks, " is negative"));
  if (local_tokens < 0) {
    return FieldError("local_tokens", absl::StrCat(local_tokens, " is negative"));
  }
  if (topk <= 0 || topk > kMaxTopk) {
    return FieldError("topk", absl::StrCat(topk, " must be in [1, ", kMaxTopk, "]"));
  }
  const int64_t forced = int64_t{init_blocks} + local_blocks() + 1;
  if (topk < forced) {
    return FieldError("topk",
                      absl::StrCat(topk, " is below the forced blocks: init_blocks ", init_blocks,
                                   " + local window ", local_blocks(), " + own block = ", forced));
  }
  if (dense_below < 0) return FieldError("dense_below", absl::StrCat(dense_below, " is negative"));
  if (!(lambda >= 0.0f && lambda <= 1.0f)) {
    return FieldError("lambda", absl::StrCat(lambda, " must be in [0, 1]"));
  }
  if (policy == Policy::kPhsa && (kernel_size != block_size || kernel_stride != block_size)) {
    return FieldError("kernel_size",
                      absl::StrCat("and kernel_stride must equal block_size ", block_size,
                                   " for phsa (got ", kernel_size, ", ", kernel_stride, ")"));
  }
  if (policy == Policy::kNosa) {
    if (nosa_query_aware < forced || nosa_query_aware > topk) {
      return FieldError("nosa_query_aware",
                        absl::StrCat(nosa_query_aware, " must be in [forced blocks ", forced,
                                     ", topk ", topk, "]"));
    }
    if (nosa_observe <= 0) {
      return FieldError("nosa_observe", absl::StrCat(nosa_observe, " must be positive"));
    }
  }
  return absl::OkStatus();
}

std::string SelectionConfig::ToString() const {
  std::string s = absl::StrFormat(
      "policy=%s block_size=%d kernel_size=%d kernel_stride=%d init_blocks=%d local_tokens=%d "
      "topk=%d dense_below=%d",
      AsAbsl(PolicyName(policy)), block_size, kernel_size, kernel_stride, init_blocks, local_tokens,
      topk, dense_below);
  if (policy == Policy::kPhsa) absl::StrAppendFormat(&s, " lambda=%g", lambda);
  if (policy == Policy::kNosa) {
    absl::StrAppendFormat(&s, " nosa_query_aware=%d nosa_observe=%d", nosa_query_aware,
                          nosa_observe);
  }
  return s;
}

bool UsesDense(const SelectionConfig& config, int64_t seq_len) {
  return config.policy == Policy::kDense || seq_len < config.dense_below;
}

}  // namespace sparsefill::engine
