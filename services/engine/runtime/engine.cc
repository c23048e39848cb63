#include "sparsefill/engine/engine.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/engine/cpu/cpu_runner.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/quality.h"

namespace sparsefill::engine {
namespace {

// Rows of the MLP processed at once: bounds the [rows, 2 * intermediate] buffer.
constexpr int64_t kMlpChunkTokens = 4096;

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRunner>> CreateModelRunner(std::string_view backend,
                                                               const Checkpoint& checkpoint) {
  if (backend == "cpu" || backend == "auto") return cpu::CreateCpuRunner(checkpoint);
  if (backend == "cuda") {
    return absl::UnimplementedError(
        "backend \"cuda\": the CUDA engine is not built yet (use --backend cpu)");
  }
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
      return absl::InvalidArgumentError(absl::StrCat(
          tok_path, ": tokenizer has ", engine->tokenizer_->vocab_size(),
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
  plan.workspace_bytes =
      4 * (num_tokens * (3 * c.hidden_size + 2 * qd + 2 * kvd) +
           plan.mlp_chunk_tokens * 2 * c.intermediate_size +
           int64_t{c.num_kv_heads} * num_tokens * plan.blocks_per_query);
  return plan;
}

absl::StatusOr<PrefillResult> Engine::Prefill(const PrefillPlan& plan,
                                              std::span<const int32_t> tokens,
                                              const PrefillOptions& options, LayerSink* sink) {
  const ModelConfig& c = config();
  if (static_cast<int64_t>(tokens.size()) != plan.num_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("the plan is for ", plan.num_tokens,
                                                   " tokens but ", tokens.size(),
                                                   " were given"));
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", tokens[i], " at index ", i,
                                                     " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  std::vector<uint8_t> punct;
  if (!plan.dense && plan.selection.policy == Policy::kPhsa) {
    if (tokenizer_ == nullptr) {
      return absl::FailedPreconditionError(
          "policy phsa needs the checkpoint's tokenizer.json for its punctuation table");
    }
    const std::vector<uint8_t>& table = tokenizer_->PunctuationTable();
    punct.resize(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      const auto id = static_cast<size_t>(tokens[i]);
      punct[i] = id < table.size() ? table[id] : 0;
    }
  }

  ModelRunner::RunOptions run;
  run.logits_positions = std::max(options.logits_positions, 0);
  if (!options.measure) return runner_->Run(plan, tokens, punct, run, sink);

  const int64_t n = plan.num_tokens;
  const int32_t kl_rows = static_cast<int32_t>(std::min<int64_t>(options.kl_positions, n));
  // The dense reference on the same input.
  SF_ASSIGN_OR_RETURN(PrefillPlan dense_plan, Plan(n, SelectionConfig::Dense()));
  std::vector<float> dense_hidden;
  ModelRunner::RunOptions dense_run;
  dense_run.logits_positions = kl_rows;
  dense_run.final_rows = static_cast<int32_t>(n);
  dense_run.final_hidden = &dense_hidden;
  SF_ASSIGN_OR_RETURN(PrefillResult dense, runner_->Run(dense_plan, tokens, {}, dense_run, nullptr));

  std::vector<float> hidden;
  run.logits_positions = std::max(run.logits_positions, kl_rows);
  run.final_rows = static_cast<int32_t>(n);
  run.final_hidden = &hidden;
  run.information_loss = true;
  run.attention_sample_queries = options.attention_sample_queries;
  SF_ASSIGN_OR_RETURN(PrefillResult result, runner_->Run(plan, tokens, punct, run, sink));

  Quality& q = result.quality;
  result.measured = true;
  q.dense_seconds = dense.seconds;
  q.kl_positions = kl_rows;
  SF_ASSIGN_OR_RETURN(q.hidden_rel_l2, RelativeL2(hidden, dense_hidden));
  const int64_t vocab = c.vocab_size;
  auto tail = [&](const std::vector<float>& logits) {
    return std::span<const float>(logits).subspan(logits.size() - size_t(kl_rows) * vocab);
  };
  SF_ASSIGN_OR_RETURN(q.next_token_kl, NextTokenKl(tail(dense.logits), tail(result.logits), kl_rows, vocab));
  double loss = 0, attn = 0;
  for (const LayerStats& s : result.layers) {
    loss += std::max(s.information_loss, 0.0);
    attn += std::max(s.attention_rel_l2, 0.0);
  }
  const double layers = std::max<size_t>(result.layers.size(), 1);
  q.information_loss = loss / layers;
  q.attention_rel_l2 = attn / layers;
  // Return only the logits the caller asked for.
  const size_t keep = size_t(std::max(options.logits_positions, 0)) * vocab;
  result.logits.erase(result.logits.begin(), result.logits.end() - keep);
  return result;
}

}  // namespace sparsefill::engine
