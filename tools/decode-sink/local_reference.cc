#include "tools/decode-sink/local_reference.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::tools {

client::SelectionOverrides SelectionChoice::ToOverrides() const {
  client::SelectionOverrides o;
  o.policy = policy;
  o.block_size = block_size;
  o.topk = topk;
  o.dense_below = dense_below;
  o.lambda = lambda;
  o.init_blocks = init_blocks;
  o.local_tokens = local_tokens;
  return o;
}

absl::StatusOr<engine::SelectionConfig> SelectionChoice::ToConfig(
    const engine::ModelConfig& model) const {
  engine::SelectionConfig c = engine::SelectionConfig::ForPolicy(policy, model);
  if (block_size) c.block_size = *block_size;
  if (topk) c.topk = *topk;
  if (dense_below) c.dense_below = *dense_below;
  if (lambda) c.lambda = *lambda;
  if (init_blocks) c.init_blocks = *init_blocks;
  if (local_tokens) c.local_tokens = *local_tokens;
  SF_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::Status CollectingSink::OnLayer(const engine::LayerKv& kv) {
  if (kv.layer < 0 || kv.layer >= static_cast<int32_t>(cache_.size())) {
    return absl::InternalError(absl::StrCat("layer ", kv.layer, " of ", cache_.size()));
  }
  if (kv.token_begin != 0 || kv.num_tokens != num_tokens_) {
    return absl::InternalError(absl::StrCat("layer ", kv.layer, " covers tokens [", kv.token_begin,
                                            ", ", kv.token_begin + kv.num_tokens,
                                            "), the prompt has ", num_tokens_));
  }
  const size_t n = static_cast<size_t>(kv.num_tokens) * kv.kv_heads * kv.head_dim;
  std::vector<uint16_t> half(dtype_ == DType::kF32 ? 0 : n);
  auto round = [&](const float* src, std::vector<float>& dst) {
    dst.resize(n);
    if (dtype_ == DType::kF32) {
      std::copy(src, src + n, dst.begin());
      return;
    }
    ConvertFromF32(src, dtype_, half.data(), n);
    ConvertToF32(half.data(), dtype_, dst.data(), n);
  };
  engine::LayerKvBuffer& out = cache_[static_cast<size_t>(kv.layer)];
  round(kv.k, out.k);
  round(kv.v, out.v);
  return absl::OkStatus();
}

absl::Status CollectingSink::CheckComplete() const {
  for (size_t l = 0; l < cache_.size(); ++l) {
    if (cache_[l].k.empty()) {
      return absl::InternalError(absl::StrCat("the local prefill never finished layer ", l));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LocalReference> RunLocalReference(engine::Engine& engine,
                                                 const engine::SelectionConfig& selection,
                                                 std::span<const int32_t> tokens, DType kv_dtype,
                                                 int32_t next_token) {
  SF_ASSIGN_OR_RETURN(const engine::PrefillPlan plan,
                      engine.Plan(static_cast<int64_t>(tokens.size()), selection));
  CollectingSink sink(engine.config().num_layers, static_cast<int64_t>(tokens.size()), kv_dtype);
  LocalReference ref;
  SF_ASSIGN_OR_RETURN(ref.prefill, engine.Prefill(plan, tokens, engine::PrefillOptions{}, &sink));
  SF_RETURN_IF_ERROR(sink.CheckComplete());
  const auto t0 = std::chrono::steady_clock::now();
  SF_ASSIGN_OR_RETURN(ref.logits, engine.Decode(sink.cache(), next_token));
  ref.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return ref;
}

std::vector<float> Softmax(std::span<const float> logits) {
  std::vector<float> probs(logits.size());
  if (logits.empty()) return probs;
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  for (size_t i = 0; i < logits.size(); ++i) {
    probs[i] = static_cast<float>(std::exp(static_cast<double>(logits[i]) - max) / sum);
  }
  return probs;
}

std::vector<TopToken> TopK(std::span<const float> probs, int32_t k) {
  std::vector<int32_t> ids(probs.size());
  std::iota(ids.begin(), ids.end(), 0);
  const size_t n = std::min(ids.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(
      ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end(),
      [&](int32_t a, int32_t b) {
        return probs[static_cast<size_t>(a)] > probs[static_cast<size_t>(b)] ||
               (probs[static_cast<size_t>(a)] == probs[static_cast<size_t>(b)] && a < b);
      });
  std::vector<TopToken> out;
  for (size_t i = 0; i < n; ++i) out.push_back({ids[i], probs[static_cast<size_t>(ids[i])]});
  return out;
}

}  // namespace sparsefill::tools
