// The prefill engine: plan once, run layer by layer, hand each finished layer's KV to a sink.
//
//   auto engine = Engine::Create(dir, {.backend = "cpu"});
//   auto plan = engine->Plan(tokens.size(), SelectionConfig::Phsa());
//   auto result = engine->Prefill(*plan, tokens, {.measure = true}, &sink);
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/engine/checkpoint.h"
#include "sparsefill/engine/model_config.h"
#include "sparsefill/engine/selection.h"
#include "sparsefill/engine/shard.h"
#include "sparsefill/engine/tokenizer.h"

namespace sparsefill::engine {

// The KV of one finished layer for a contiguous range of tokens. Views are valid only during
// the OnLayer call.
struct LayerKv {
  int32_t layer = 0;
  int64_t token_begin = 0;  // absolute position of k[0]
  int64_t num_tokens = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  const float* k = nullptr;  // [num_tokens, kv_heads, head_dim], after RoPE (what decode reads)
  const float* v = nullptr;  // [num_tokens, kv_heads, head_dim]
  // The same K/V as bf16, set instead of k/v (which are then null) when the backend computes in
  // bf16 and the sink says AcceptsBf16(): no widening, half the bytes to copy off the device.
  const uint16_t* k_bf16 = nullptr;  // [num_tokens, kv_heads, head_dim]
  const uint16_t* v_bf16 = nullptr;  // [num_tokens, kv_heads, head_dim]
  // Query-agnostic block ranking (DESIGN §4, NOSA): what decoding will want hot.
  int32_t block_size = 0;
  int64_t num_blocks = 0;                   // ceil(num_tokens / block_size)
  const float* block_importance = nullptr;  // [kv_heads, num_blocks]
  // This shard's counters for the layer (a worker reports them as soon as the layer is stored,
  // before the layer's closing all-gather). Never null when the runner calls the sink.
  const ShardLayerPart* part = nullptr;
};

// Receives each layer as soon as it is final (the KV store plugs in here).
class LayerSink {
 public:
  virtual ~LayerSink() = default;
  [[nodiscard]] virtual absl::Status OnLayer(const LayerKv& kv) = 0;
  // True when OnLayer takes LayerKv::k_bf16 / v_bf16 in place of fp32 k / v (a bf16 backend then
  // hands its K/V over as computed). Sinks that read k / v keep the default.
  virtual bool AcceptsBf16() const { return false; }
};

// PrefillOptions::information_loss_queries: the default sample, and "every query".
inline constexpr int32_t kDefaultInformationLossQueries = 1024;
inline constexpr int32_t kEveryQuery = -1;

// Plain data, decided once per request and logged/compared in tests.
struct PrefillPlan {
  int64_t num_tokens = 0;
  SelectionConfig selection;
  bool dense = false;            // dense attention (policy dense, or num_tokens < dense_below)
  int64_t num_blocks = 0;        // ceil(num_tokens / block_size)
  int32_t blocks_per_query = 0;  // selection list length (topk), 0 when dense
  int32_t num_layers = 0;
  int64_t mlp_chunk_tokens = 0;  // MLP runs over row chunks of this many tokens
  int64_t workspace_bytes = 0;   // activations + selection the backend allocates
  std::string ToString() const;
};

struct PrefillOptions {
  // Also run the dense model on the same input and report quality (DESIGN §4).
  bool measure = false;
  // Positions at the end of the prompt whose next-token distributions enter the KL (measure).
  int32_t kl_positions = 32;
  // Queries at the end of the prompt on which attention outputs are compared with dense
  // attention per layer (measure; a sample, because full dense attention per layer is the cost
  // we avoid).
  int32_t attention_sample_queries = 256;
  // Query positions over which the information loss is averaged (measure): a stratified sample
  // of this many spread over the whole prompt (InformationLossPositions), or kEveryQuery (-1) for
  // all of them, which costs as much as a dense attention pass's scores per layer. Every query
  // when the prompt has no more. Other values are InvalidArgument.
  int32_t information_loss_queries = kDefaultInformationLossQueries;
  // Positions at the end of the prompt whose logits are returned.
  int32_t logits_positions = 1;
  // Time every stage of every layer (the cuda backend: events between the kernels of a stage
  // and the next) into PrefillResult::stages. Other backends leave stages empty.
  bool profile_stages = false;
};

// Device time of one prefill stage, summed over the layers (PrefillOptions::profile_stages).
struct StageTime {
  std::string name;
  double seconds = 0.0;
};

struct LayerStats {
  int32_t layer = 0;
  int64_t selected_keys = 0;  // summed over KV heads and query tokens
  int64_t causal_keys = 0;
  // The cuda backend's sparse attention: token-key pairs its kernel computed, masked ones
  // included (each CTA computes the union of its tokens' lists for all of them); 0 elsewhere.
  int64_t computed_keys = 0;
  double sparsity = 0.0;  // 1 - selected / causal
  // 1 - selected / (queries x all N keys): the convention of the PHSA paper's "97.3% at 32K",
  // which divides by the context length rather than by each query's causal keys.
  double context_sparsity = 0.0;
  double information_loss = -1.0;  // mean dense mass outside the selection; -1 when unmeasured
  int64_t information_loss_queries = 0;  // query positions that mean is over (all heads of each)
  double attention_rel_l2 = -1.0;  // sparse vs dense attention output (sampled queries)
  double seconds = 0.0;
};

struct Quality {
  double information_loss = 0.0;  // mean over layers, heads and the measured query positions
  // How many query positions the information loss was measured on (the same ones in every layer,
  // PrefillOptions::information_loss_queries): num_tokens when every query was.
  int64_t information_loss_queries = 0;
  double hidden_rel_l2 = 0.0;     // final hidden states, sparse vs dense run
  double attention_rel_l2 = 0.0;  // mean over layers (sampled queries)
  double next_token_kl = 0.0;     // KL(dense || sparse), mean over kl_positions
  int32_t kl_positions = 0;
  double dense_seconds = 0.0;  // the dense reference run
};

struct PrefillResult {
  PrefillPlan plan;
  std::vector<LayerStats> layers;
  int64_t selected_keys = 0;
  int64_t causal_keys = 0;
  double sparsity = 0.0;          // 1 - selected / causal, over all layers (DESIGN §4)
  double context_sparsity = 0.0;  // 1 - selected / (queries x N), see LayerStats
  double seconds = 0.0;           // the prefill itself (not the measurement)
  double tokens_per_second = 0.0;
  std::vector<float> logits;  // [logits_positions, vocab]
  bool measured = false;
  Quality quality;
  std::vector<StageTime> stages;  // in pipeline order; empty unless profiled
};

// One rank's prefill of a sharded prompt (Engine::PrefillShard).
struct ShardPrefillResult {
  // The whole prompt, combined over the ranks through the exchange, the same on every rank but
  // for the timings: per-layer counters, sparsity, information loss, quality and logits.
  PrefillResult prompt;
  TokenRange tokens;                   // this shard
  std::vector<ShardLayerPart> layers;  // this shard's own share of each layer
};

// The K/V cache of one layer, fp32 after RoPE: [tokens, kv_heads, head_dim] each.
struct LayerKvBuffer {
  std::vector<float> k;
  std::vector<float> v;
};

// What a backend can do, asked up front (STYLE §7).
struct BackendCapabilities {
  bool sparse_attention = false;
  bool measure = false;  // can run the dense reference and quality metrics
  std::vector<DType> compute_dtypes;
};

// One model loaded on one backend. Implementations: cpu (reference), cuda (later).
class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual std::string_view backend_name() const = 0;
  virtual BackendCapabilities Capabilities() const = 0;
  // Runs the plan over `tokens` (absolute positions 0..n-1). `punct` is the per-token PHSA mask
  // [n] (may be empty for other policies). `sink` may be null. `final_hidden` gets the last
  // `final_rows` rows of the final normed hidden states [final_rows, hidden] when not null.
  struct RunOptions {
    int32_t logits_positions = 1;
    int32_t attention_sample_queries = 0;  // >0: compare with dense on that many last queries
    bool information_loss = false;
    // information_loss: over InformationLossPositions(n, this) (> 0), or every query (kEveryQuery).
    int32_t information_loss_queries = kEveryQuery;
    int32_t final_rows = 0;
    std::vector<float>* final_hidden = nullptr;
    // Added to the layer index in exchange calls: the dense reference pass of a measured run
    // uses num_layers so that its keys never meet the prefill's.
    int32_t exchange_layer_offset = 0;
    bool profile_stages = false;  // PrefillOptions::profile_stages
  };
  [[nodiscard]] virtual absl::StatusOr<PrefillResult> Run(const PrefillPlan& plan,
                                                          std::span<const int32_t> tokens,
                                                          std::span<const uint8_t> punct,
                                                          const RunOptions& options,
                                                          LayerSink* sink) = 0;
  // One rank of a sharded prefill: `tokens` and `punct` are this rank's shard
  // (exchange.shard()); the plan is the whole prompt's. Returns the whole prompt's counters and
  // logits (combined through the exchange) and this shard's own part; `final_hidden` gets this
  // shard's rows among the last `final_rows`. Run() is this with a single rank.
  [[nodiscard]] virtual absl::StatusOr<ShardPrefillResult> RunShard(
      const PrefillPlan& /*plan*/, std::span<const int32_t> /*tokens*/,
      std::span<const uint8_t> /*punct*/, ShardExchange& /*exchange*/,
      const RunOptions& /*options*/, LayerSink* /*sink*/) {
    return absl::UnimplementedError("this backend cannot run a sharded prefill");
  }
  // One decode step: logits [vocab] of `token` at position N given every layer's K/V of the N
  // tokens before it (dense attention over the cache plus the token's own key).
  [[nodiscard]] virtual absl::StatusOr<std::vector<float>> Decode(
      std::span<const LayerKvBuffer> /*cache*/, int32_t /*token*/) {
    return absl::UnimplementedError("this backend cannot decode");
  }
  // logits [rows, vocab] of final normed hidden rows [rows, hidden].
  [[nodiscard]] virtual absl::StatusOr<std::vector<float>> Logits(std::span<const float> hidden,
                                                                  int64_t rows) = 0;
};

struct EngineOptions {
  // "cpu" (default) or "auto"; "cuda" arrives with the CUDA engine.
  std::string backend = "cpu";
};

class Engine {
 public:
  // Opens the checkpoint directory (and its tokenizer.json when present) and loads the weights.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const std::string& model_dir,
                                                        const EngineOptions& options);

  const ModelConfig& config() const { return checkpoint_->config(); }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }  // null when absent
  std::string_view backend_name() const { return runner_->backend_name(); }

  // InvalidArgument for an empty prompt, more tokens than max_position_embeddings, or an
  // invalid selection config.
  [[nodiscard]] absl::StatusOr<PrefillPlan> Plan(int64_t num_tokens,
                                                 const SelectionConfig& selection) const;
  // Token ids must be < vocab_size (InvalidArgument naming the first bad one and its index).
  [[nodiscard]] absl::StatusOr<PrefillResult> Prefill(const PrefillPlan& plan,
                                                      std::span<const int32_t> tokens,
                                                      const PrefillOptions& options,
                                                      LayerSink* sink);
  // One rank of a sharded prefill (DESIGN §1 step 3): `shard_tokens` are the tokens of
  // exchange.shard(), `plan` is the whole prompt's (Plan(total tokens, ...)); the layout's block
  // size must be the plan's. Every rank calls it with the same plan and options. The sink gets
  // this shard's KV (token_begin = shard begin). Prefill() is this over one in-process rank, so
  // 1, 2 or 4 ranks give bit-identical KV, logits and counters.
  [[nodiscard]] absl::StatusOr<ShardPrefillResult> PrefillShard(
      const PrefillPlan& plan, std::span<const int32_t> shard_tokens, ShardExchange& exchange,
      const PrefillOptions& options, LayerSink* sink);
  // One decode step after a prefill: logits [vocab] of `token` at position N = cache[0] tokens,
  // given every layer's K/V (cache.size() == num_layers, [N, kv_heads, head_dim] each, e.g. what
  // a LayerSink received). InvalidArgument for a bad token, layer count or cache shape.
  [[nodiscard]] absl::StatusOr<std::vector<float>> Decode(std::span<const LayerKvBuffer> cache,
                                                          int32_t token);

 private:
  Engine() = default;
  absl::StatusOr<ShardPrefillResult> PrefillShardImpl(const PrefillPlan& plan,
                                                      std::span<const int32_t> shard_tokens,
                                                      ShardExchange& exchange,
                                                      const PrefillOptions& options,
                                                      LayerSink* sink);
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ModelRunner> runner_;
};

// Creates the runner for `backend` ("cpu"; "cuda" when this process enabled it; "auto" picks
// cuda when enabled and a device is visible, else cpu).
absl::StatusOr<std::unique_ptr<ModelRunner>> CreateModelRunner(std::string_view backend,
                                                               const Checkpoint& checkpoint);

// The cuda backend is linked only into the binaries that call
// sparsefill::engine::cuda::EnableCudaBackend() (services/engine/cuda/cuda_runner.h) at start-up:
// the CLI, the worker, the benchmarks and the GPU tests; the others stay free of the CUDA runtime.
using CudaRunnerFactory = absl::StatusOr<std::unique_ptr<ModelRunner>> (*)(const Checkpoint&);
void SetCudaBackend(CudaRunnerFactory create, bool (*available)());

}  // namespace sparsefill::engine
