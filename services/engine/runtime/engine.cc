#include "sparsefill/engine/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <atomic>
#include "absl/strings/str_cat.h"

#include "services/engine/cpu/cpu_runner.h"

#include "sparsefill/common/status.h"
#include "sparsefill/engine/quality.h"

namespace sparsefill::engine {
namespace {

// Rows of the MLP processed at once: bounds the [rows, 2 * intermediate] buffer.
constexpr int64_t kMlpChunkTokens = 4096;

}  // namespace

namespace {
// Set once at start-up by EnableCudaBackend(), before any engine is made.
std::atomic<CudaRunnerFactory> cuda_factory{nullptr};
std::atomic<bool (*)()> cuda_available{nullptr};
}  // namespace

void SetCudaBackend(CudaRunnerFactory create, bool (*available)()) {
  cuda_factory.store(create);
  cuda_available.store(available);
}

absl::StatusOr<std::unique_ptr<ModelRunner>> CreateModelRunner(std::string_view backend,
                                                               const Checkpoint& checkpoint) {
  const CudaRunnerFactory cuda = cuda_factory.load();
  bool (*available)() = cuda_available.load();
  if (backend == "cuda" ||
      (backend == "auto" && cuda != nullptr && available != nullptr && available())) {
    if (cuda == nullptr) {
      return absl::FailedPreconditionError(
          "backend \"cuda\": this binary has no CUDA backend (the sparsefill CLI and the "
          "benchmarks have it when built with nvcc; the servers do not yet, see README)");
    }
    return cuda(checkpoint);
  }
  if (backend == "cpu" || backend == "auto") return cpu::CreateCpuRunner(checkpoint);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend \"", AsAbsl(backend), "\" (expected cpu, cuda or auto)"));
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const std::string& model_dir,
                                                       const EngineOptions& options) {
  std::unique_ptr<Engine> engine(new Engine());
  SF_ASSIGN_OR_RETURN(engine->checkpoint_, Checkpoint::Open(model_dir));
  const std::string tok_path = engine->checkpoint_->TokenizerPath();
  if (!tok_path.empty()) {
    SF_ASSIGN_OR_RETURN(engine->tokenizer_, Tokenizer::FromFile(tok_path));
    if (engine->tokenizer_->vocab_size() > engine->config().vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat(tok_path, ": tokenizer has ", engine->tokenizer_->vocab_size(),
                       " ids but the model's vocab_size is ", engine->config().vocab_size));
    }
  }
  SF_ASSIGN_OR_RETURN(engine->runner_, CreateModelRunner(options.backend, *engine->checkpoint_));
  return engine;
}

absl::StatusOr<PrefillPlan> Engine::Plan(int64_t num_tokens,
                                         const SelectionConfig& selection) const {
  const ModelConfig& c = config();
  if (num_tokens <= 0) return absl::InvalidArgumentError("empty prompt: no tokens to prefill");
  if (c.max_position_embeddings > 0 && num_tokens > c.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt has ", num_tokens, " tokens, over the model's maximum of ",
                     c.max_position_embeddings, " (max_position_embeddings)"));
  }
  SF_RETURN_IF_ERROR(selection.Validate());
  PrefillPlan plan;
  plan.num_tokens = num_tokens;
  plan.selection = selection;
  plan.num_layers = c.num_layers;
  plan.dense = UsesDense(selection, num_tokens);
  plan.num_blocks = (num_tokens + selection.block_size - 1) / selection.block_size;
  plan.blocks_per_query = plan.dense ? 0 : selection.topk;
  plan.mlp_chunk_tokens = std::min(num_tokens, kMlpChunkTokens);
  const int64_t qd = int64_t{c.num_heads} * c.head_dim, kvd = int64_t{c.num_kv_heads} * c.head_dim;
  plan.workspace_bytes = 4 * (num_tokens * (3 * c.hidden_size + 2 * qd + 2 * kvd) +
                              plan.mlp_chunk_tokens * 2 * c.intermediate_size +
                              int64_t{c.num_kv_heads} * num_tokens * plan.blocks_per_query);
  return plan;
}

absl::StatusOr<PrefillResult> Engine::Prefill(const PrefillPlan& plan,
                                              std::span<const int32_t> tokens,
                                              const PrefillOptions& options, LayerSink* sink) {
  if (static_cast<int64_t>(tokens.size()) != plan.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the plan is for ", plan.num_tokens,
                                                   " tokens but ", tokens.size(), " were given"));
  }
  // One rank of the sharded prefill: the same layer loop, the same bits.
  SF_ASSIGN_OR_RETURN(ShardLayout layout,
                      ShardLayout::FromBounds({0, plan.num_tokens}, plan.selection.block_size));
  SF_ASSIGN_OR_RETURN(std::unique_ptr<InProcessExchange> exchange,
                      InProcessExchange::Create(std::move(layout), {}));
  SF_ASSIGN_OR_RETURN(ShardPrefillResult r,
                      PrefillShard(plan, tokens, exchange->endpoint(0), options, sink));
  return std::move(r.prompt);
}

absl::StatusOr<ShardPrefillResult> Engine::PrefillShard(const PrefillPlan& plan,
                                                        std::span<const int32_t> shard_tokens,
                                                        ShardExchange& exchange,
                                                        const PrefillOptions& options,
                                                        LayerSink* sink) {
  absl::StatusOr<ShardPrefillResult> r =
      PrefillShardImpl(plan, shard_tokens, exchange, options, sink);
  // Peers blocked on this rank learn at once (naming it) rather than at their deadline.
  if (!r.ok()) exchange.Abort(r.status());
  return r;
}

absl::StatusOr<ShardPrefillResult> Engine::PrefillShardImpl(const PrefillPlan& plan,
                                                            std::span<const int32_t> shard_tokens,
                                                            ShardExchange& exchange,
                                                            const PrefillOptions& options,
                                                            LayerSink* sink) {
  const ModelConfig& c = config();
  const TokenRange mine = exchange.shard();
  if (exchange.layout().num_tokens() != plan.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the plan is for ", plan.num_tokens,
                                                   " tokens but the shard layout covers ",
                                                   exchange.layout().num_tokens()));
  }
  if (static_cast<int64_t>(shard_tokens.size()) != mine.size()) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", exchange.rank(), " holds tokens [",
                                                   mine.begin, ", ", mine.end, ") but ",
                                                   shard_tokens.size(), " were given"));
  }
  for (size_t i = 0; i < shard_tokens.size(); ++i) {
    if (shard_tokens[i] < 0 || shard_tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", shard_tokens[i], " at index ", mine.begin + static_cast<int64_t>(i),
          " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  std::vector<uint8_t> punct;
  if (!plan.dense && plan.selection.policy == Policy::kPhsa) {
    if (tokenizer_ == nullptr) {
      return absl::FailedPreconditionError(
          "policy phsa needs the checkpoint's tokenizer.json for its punctuation table");
    }
    const std::vector<uint8_t>& table = tokenizer_->PunctuationTable();
    punct.resize(shard_tokens.size());
    for (size_t i = 0; i < shard_tokens.size(); ++i) {
      const auto id = static_cast<size_t>(shard_tokens[i]);
      punct[i] = id < table.size() ? table[id] : 0;
    }
  }

  // Before the dense reference pass, which a bad value would waste.
  SF_RETURN_IF_ERROR(CheckInformationLossQueries(options.information_loss_queries));
  ModelRunner::RunOptions run;
  run.logits_positions = std::max(options.logits_positions, 0);
  run.profile_stages = options.profile_stages;
  if (!options.measure) {
    absl::StatusOr<ShardPrefillResult> r =
        runner_->RunShard(plan, shard_tokens, punct, exchange, run, sink);
    return r;
  }

  const int64_t n = plan.num_tokens;
  const int32_t kl_rows = static_cast<int32_t>(std::min<int64_t>(options.kl_positions, n));
  // The dense reference on the same input, through the same sharded code (its exchange layers
  // come after the prefill's, see ShardExchange).
  SF_ASSIGN_OR_RETURN(PrefillPlan dense_plan, Plan(n, SelectionConfig::Dense()));
  dense_plan.selection.block_size = plan.selection.block_size;  // the layout's
  std::vector<float> dense_hidden;
  ModelRunner::RunOptions dense_run;
  dense_run.logits_positions = kl_rows;
  dense_run.final_rows = static_cast<int32_t>(n);
  dense_run.final_hidden = &dense_hidden;
  dense_run.exchange_layer_offset = c.num_layers;
  SF_ASSIGN_OR_RETURN(ShardPrefillResult dense, runner_->RunShard(dense_plan, shard_tokens, {},
                                                                  exchange, dense_run, nullptr));

  std::vector<float> hidden;
  run.logits_positions = std::max(run.logits_positions, kl_rows);
  run.final_rows = static_cast<int32_t>(n);
  run.final_hidden = &hidden;
  run.information_loss = true;
  run.information_loss_queries = options.information_loss_queries;
  run.attention_sample_queries = options.attention_sample_queries;
  SF_ASSIGN_OR_RETURN(ShardPrefillResult out,
                      runner_->RunShard(plan, shard_tokens, punct, exchange, run, sink));
  PrefillResult& result = out.prompt;

  // Final hidden states: squared error and reference norm per rank, combined.
  if (hidden.size() != dense_hidden.size()) {
    return absl::InternalError(absl::StrCat("measure: ", hidden.size(), " hidden values vs ",
                                            dense_hidden.size(), " in the dense run"));
  }
  double sums[2] = {0.0, 0.0};
  for (size_t i = 0; i < hidden.size(); ++i) {
    const double diff = double(hidden[i]) - double(dense_hidden[i]);
    sums[0] += diff * diff;
    sums[1] += double(dense_hidden[i]) * dense_hidden[i];
  }
  SF_ASSIGN_OR_RETURN(
      std::vector<std::string> parts,
      exchange.AllGather(2 * c.num_layers, "hidden-l2",
                         std::string(reinterpret_cast<const char*>(sums), sizeof(sums))));
  double err2 = 0.0, ref2 = 0.0;
  for (size_t r = 0; r < parts.size(); ++r) {
    if (parts[r].size() != sizeof(sums)) {
      return absl::DataLossError(
          absl::StrCat("hidden-state error from rank ", r, ": ", parts[r].size(), " bytes"));
    }
    double got[2];
    std::memcpy(got, parts[r].data(), sizeof(got));
    err2 += got[0];
    ref2 += got[1];
  }

  Quality& q = result.quality;
  result.measured = true;
  q.dense_seconds = dense.prompt.seconds;
  q.kl_positions = kl_rows;
  q.hidden_rel_l2 = ref2 > 0 ? std::sqrt(err2 / ref2) : (err2 > 0 ? HUGE_VAL : 0.0);
  const int64_t vocab = c.vocab_size;
  auto tail = [&](const std::vector<float>& logits) {
    return std::span<const float>(logits).subspan(logits.size() - size_t(kl_rows) * vocab);
  };
  SF_ASSIGN_OR_RETURN(q.next_token_kl,
                      NextTokenKl(tail(dense.prompt.logits), tail(result.logits), kl_rows, vocab));
  double loss = 0, attn = 0;
  for (const LayerStats& s : result.layers) {
    loss += std::max(s.information_loss, 0.0);
    attn += std::max(s.attention_rel_l2, 0.0);
  }
  const double layers = std::max<size_t>(result.layers.size(), 1);
  q.information_loss = loss / layers;
  q.information_loss_queries =
      result.layers.empty() ? 0 : result.layers[0].information_loss_queries;
  q.attention_rel_l2 = attn / layers;
  // Return only the logits the caller asked for.
  const size_t keep = size_t(std::max(options.logits_positions, 0)) * vocab;
  result.logits.erase(result.logits.begin(), result.logits.end() - keep);
  return out;
}

absl::StatusOr<std::vector<float>> Engine::Decode(std::span<const LayerKvBuffer> cache,
                                                  int32_t token) {
  return runner_->Decode(cache, token);
}

}  // namespace sparsefill::engine
