// The single-process answer a decode node must reproduce: Engine::Prefill on the same tokens and
// selection, a sink collecting every layer's K/V exactly as the KV store keeps it (rounded
// through the cache's dtype), then Engine::Decode of the same next token.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/client/types.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/engine/engine.h"

namespace sparsefill::tools {

// The selection a request asks for: the policy's defaults plus the set fields. The same struct
// becomes the request's overrides and the local engine's config, so both sides run one policy.
struct SelectionChoice {
  engine::Policy policy = engine::Policy::kPhsa;
  std::optional<int32_t> block_size;
  std::optional<int32_t> topk;
  std::optional<int64_t> dense_below;
  std::optional<float> lambda;
  std::optional<int32_t> init_blocks;
  std::optional<int32_t> local_tokens;

  client::SelectionOverrides ToOverrides() const;
  // SelectionConfig::ForPolicy(policy, model) with the set fields applied; InvalidArgument
  // naming the field when the result is inconsistent.
  absl::StatusOr<engine::SelectionConfig> ToConfig(const engine::ModelConfig& model) const;
};

// Collects each finished layer into contiguous [tokens, kv_heads, head_dim] buffers, each value
// rounded to `dtype` and back (what a cache stored in that dtype returns).
class CollectingSink final : public engine::LayerSink {
 public:
  CollectingSink(int32_t num_layers, int64_t num_tokens, DType dtype)
      : cache_(static_cast<size_t>(num_layers)), num_tokens_(num_tokens), dtype_(dtype) {}
  absl::Status OnLayer(const engine::LayerKv& kv) override;
  // InvalidArgument naming the first layer that never came.
  absl::Status CheckComplete() const;
  std::vector<engine::LayerKvBuffer>& cache() { return cache_; }

 private:
  std::vector<engine::LayerKvBuffer> cache_;
  int64_t num_tokens_;
  DType dtype_;
};

struct LocalReference {
  engine::PrefillResult prefill;
  std::vector<float> logits;  // [vocab] of the decode step
  double decode_seconds = 0;
};

absl::StatusOr<LocalReference> RunLocalReference(engine::Engine& engine,
                                                 const engine::SelectionConfig& selection,
                                                 std::span<const int32_t> tokens, DType kv_dtype,
                                                 int32_t next_token);

// softmax in double, rounded to fp32 per entry: the same code on both sides, so equal logits
// give bit-identical probabilities.
std::vector<float> Softmax(std::span<const float> logits);

struct TopToken {
  int32_t id = 0;
  float prob = 0;
};
// The k most likely ids, most likely first (ties: lower id first).
std::vector<TopToken> TopK(std::span<const float> probs, int32_t k);

}  // namespace sparsefill::tools
