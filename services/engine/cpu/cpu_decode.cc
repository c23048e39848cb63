// One decode step on the cpu backend: the new token's Q/K/V, dense attention of its one query
// over the cached keys plus its own, o-proj and MLP, then the logits. The layer pieces are the
// prefill's (LayerOps), so a prefill of N + 1 tokens and a prefill of N plus this step agree.
#include <cmath>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/engine/cpu/cpu_layer_ops.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/engine.h"
#include "sparsefill/kernels/attention.h"

namespace sparsefill::engine::cpu {

absl::StatusOr<std::vector<float>> DecodeStep(const ModelConfig& c, const LayerOps& ops,
                                              std::span<const LayerKvBuffer> cache, int32_t token) {
  if (static_cast<int64_t>(cache.size()) != c.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode: the cache has ", cache.size(), " layers, the model ", c.num_layers));
  }
  if (token < 0 || token >= c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode: token id ", token, " is outside the vocabulary [0, ", c.vocab_size, ")"));
  }
  const int64_t hid = c.hidden_size, d = c.head_dim;
  const int32_t hq = c.num_heads, hkv = c.num_kv_heads;
  const int64_t qd = int64_t{hq} * d, kvd = int64_t{hkv} * d;
  const int64_t n = static_cast<int64_t>(cache[0].k.size()) / kvd;  // cached tokens
  for (size_t l = 0; l < cache.size(); ++l) {
    if (static_cast<int64_t>(cache[l].k.size()) != n * kvd ||
        cache[l].v.size() != cache[l].k.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("decode: layer ", l, " caches ", cache[l].k.size(), " K and ",
                       cache[l].v.size(), " V values; expected ", n, " tokens x kv_heads ", hkv,
                       " x head_dim ", d, " (as layer 0) for both"));
    }
  }
  if (c.max_position_embeddings > 0 && n + 1 > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode: position ", n, " is past max_position_embeddings ", c.max_position_embeddings));
  }
  const RopeTable rope = ops.Rope(n + 1);  // what a prefill of n + 1 tokens uses
  const int64_t position = n;
  LayerScratch scratch;
  std::vector<float> x(static_cast<size_t>(hid)), q(static_cast<size_t>(qd)),
      attn(static_cast<size_t>(qd));
  std::vector<float> k(static_cast<size_t>((n + 1) * kvd)), v(k.size());
  ops.Embed(std::span<const int32_t>(&token, 1), x.data());
  for (int32_t li = 0; li < c.num_layers; ++li) {
    const LayerKvBuffer& layer = cache[static_cast<size_t>(li)];
    std::copy(layer.k.begin(), layer.k.end(), k.begin());
    std::copy(layer.v.begin(), layer.v.end(), v.begin());
    SF_RETURN_IF_ERROR(ops.Qkv(li, x.data(), 1, &position, rope, scratch, q.data(),
                               k.data() + n * kvd, v.data() + n * kvd));
    kernels::AttentionParams ap;
    ap.q = q.data();
    ap.k = k.data();
    ap.v = v.data();
    ap.out = attn.data();
    ap.num_q = 1;
    ap.num_kv = n + 1;
    ap.q_pos0 = n;
    ap.q_heads = hq;
    ap.kv_heads = hkv;
    ap.head_dim = static_cast<int32_t>(d);
    ap.scale = 1.0f / std::sqrt(static_cast<float>(d));
    ap.dtype = DType::kF32;
    SF_RETURN_IF_ERROR(kernels::DenseAttentionRef(ap));
    SF_RETURN_IF_ERROR(ops.OutputAndMlp(li, attn.data(), 1, 1, scratch, x.data()));
  }
  std::vector<float> hidden(static_cast<size_t>(hid));
  SF_RETURN_IF_ERROR(ops.FinalNorm(x.data(), 1, hidden.data()));
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  ops.Logits(hidden.data(), 1, logits.data());
  return logits;
}

}  // namespace sparsefill::engine::cpu
