// `sparsefill prefill`: in-process prefill of one prompt, with optional quality measurement.
#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/engine.h"
#include "tools/sparsefill/commands.h"
#include "tools/sparsefill/token_file.h"

namespace sparsefill::tools {
namespace {

using engine::Engine;
using engine::PrefillResult;
using engine::SelectionConfig;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "sparsefill prefill: %s\n", s.ToString().c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ||
                 s.code() == absl::StatusCode::kNotFound ||
                 s.code() == absl::StatusCode::kFailedPrecondition
             ? 2
             : 1;
}

nlohmann::json ToJson(const PrefillResult& r, const std::string& source, const Engine& e) {
  nlohmann::json j;
  j["model"] = {{"architecture", std::string(engine::ArchitectureName(e.config().arch))},
                {"layers", e.config().num_layers},
                {"hidden_size", e.config().hidden_size},
                {"q_heads", e.config().num_heads},
                {"kv_heads", e.config().num_kv_heads},
                {"head_dim", e.config().head_dim}};
  j["backend"] = std::string(e.backend_name());
  j["input"] = source;
  j["tokens"] = r.plan.num_tokens;
  j["policy"] = std::string(engine::PolicyName(r.plan.selection.policy));
  j["attention"] = r.plan.dense ? "dense" : "sparse";
  j["selection"] = r.plan.selection.ToString();
  j["seconds"] = r.seconds;
  j["tokens_per_second"] = r.tokens_per_second;
  j["sparsity"] = r.sparsity;
  j["context_sparsity"] = r.context_sparsity;
  j["selected_keys"] = r.selected_keys;
  j["causal_keys"] = r.causal_keys;
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : r.layers) {
    nlohmann::json jl = {{"layer", l.layer},
                         {"sparsity", l.sparsity},
                         {"context_sparsity", l.context_sparsity},
                         {"selected_keys", l.selected_keys},
                         {"causal_keys", l.causal_keys},
                         {"seconds", l.seconds}};
    if (r.measured) {
      jl["information_loss"] = l.information_loss;
      jl["attention_rel_l2"] = l.attention_rel_l2;
    }
    layers.push_back(jl);
  }
  j["layers"] = layers;
  if (r.measured) {
    j["quality"] = {{"information_loss", r.quality.information_loss},
                    {"information_loss_queries", r.quality.information_loss_queries},
                    {"hidden_rel_l2", r.quality.hidden_rel_l2},
                    {"attention_rel_l2_sampled", r.quality.attention_rel_l2},
                    {"next_token_kl", r.quality.next_token_kl},
                    {"kl_positions", r.quality.kl_positions},
                    {"dense_seconds", r.quality.dense_seconds}};
  }
  return j;
}

void PrintText(const PrefillResult& r, const std::string& source, const Engine& e) {
  std::printf("input     %s\n", source.c_str());
  std::printf("model     %s, %d layers, backend %s\n",
              std::string(engine::ArchitectureName(e.config().arch)).c_str(),
              e.config().num_layers, std::string(e.backend_name()).c_str());
  std::printf("policy    %s (%s attention)\n",
              std::string(engine::PolicyName(r.plan.selection.policy)).c_str(),
              r.plan.dense ? "dense" : "sparse");
  std::printf("tokens    %lld\n", static_cast<long long>(r.plan.num_tokens));
  std::printf("seconds   %.3f\n", r.seconds);
  std::printf("tokens/s  %.1f\n", r.tokens_per_second);
  std::printf("sparsity  %.4f of causal keys (%.4f of the whole context, the PHSA paper's "
              "convention)\n",
              r.sparsity, r.context_sparsity);
  std::printf("\nlayer  sparsity  %s  seconds\n", r.measured ? "info_loss  attn_rel_l2" : "");
  for (const auto& l : r.layers) {
    if (r.measured) {
      std::printf("%5d  %8.4f  %9.4f  %11.4g  %7.3f\n", l.layer, l.sparsity, l.information_loss,
                  l.attention_rel_l2, l.seconds);
    } else {
      std::printf("%5d  %8.4f  %7.3f\n", l.layer, l.sparsity, l.seconds);
    }
  }
  if (r.measured) {
    const auto& q = r.quality;
    std::printf("\nquality against dense attention on the same input\n");
    std::printf("  information loss          %.6f (over %s)\n", q.information_loss,
                LossQueriesWords(q.information_loss_queries, r.plan.num_tokens).c_str());
    std::printf("  final hidden rel. L2       %.6g\n", q.hidden_rel_l2);
    std::printf("  attention out rel. L2      %.6g (last queries of each layer)\n",
                q.attention_rel_l2);
    std::printf("  next-token KL(dense||ours) %.6g (last %d positions)\n", q.next_token_kl,
                q.kl_positions);
    std::printf("  dense run seconds          %.3f\n", q.dense_seconds);
  }
}

}  // namespace

CLI::App* AddPrefillCommand(CLI::App& app, PrefillArgs& a) {
  CLI::App* cmd = app.add_subcommand("prefill", "prefill one prompt in-process and report");
  cmd->add_option("--model", a.model, "checkpoint directory (config.json, *.safetensors)")
      ->required();
  auto* text = cmd->add_option("--text", a.text, "text file, tokenised with the model's tokenizer");
  auto* tokens = cmd->add_option("--tokens", a.tokens,
                                 "token-id file (.u32 little-endian binary, or text integers)");
  text->excludes(tokens);
  tokens->excludes(text);
  cmd->add_option("--policy", a.policy, "dense|infllmv2|phsa|nosa")->capture_default_str();
  cmd->add_option("--backend", a.backend, "cpu|cuda|auto")->capture_default_str();
  cmd->add_option("--max-tokens", a.max_tokens, "use only the first N tokens (0: all)");
  cmd->add_flag("--measure", a.measure,
                "also run dense attention and report information loss and fidelity");
  cmd->add_option("--loss-queries", a.loss_queries,
                  "--measure: average the information loss over a stratified sample of N query "
                  "positions spread over the prompt, or over every query with 'all' (-1; as "
                  "costly as dense attention scores again)")
      ->capture_default_str();
  cmd->add_flag("--json", a.json, "print one JSON object");
  cmd->add_option("--block-size", a.block_size, "override the selection block size");
  cmd->add_option("--topk", a.topk, "override the blocks per query (forced ones included)");
  cmd->add_option("--dense-below", a.dense_below, "override the dense threshold (tokens)");
  cmd->add_option("--lambda", a.lambda, "override PHSA's lambda");
  return cmd;
}

std::string LossQueriesWords(int64_t queries, int64_t num_tokens) {
  if (queries <= 0) return "queries (how many: not reported)";
  if (queries >= num_tokens) return absl::StrCat("all ", num_tokens, " queries");
  return absl::StrCat("a stratified sample of ", queries, " of the ", num_tokens, " queries");
}

absl::StatusOr<int32_t> ParseLossQueries(const std::string& value) {
  int32_t n = 0;
  if (value == "all") return engine::kEveryQuery;
  if (!absl::SimpleAtoi(value, &n) || (n <= 0 && n != engine::kEveryQuery)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--loss-queries ", value,
                     ": give a positive number of query positions, or all (-1) for every query"));
  }
  return n;
}

int RunPrefill(const PrefillArgs& a) {
  if (a.text.empty() == a.tokens.empty()) {
    return Fail(absl::InvalidArgumentError("give exactly one of --text FILE or --tokens FILE"));
  }
  if (a.max_tokens < 0) return Fail(absl::InvalidArgumentError("--max-tokens must be >= 0"));
  const absl::StatusOr<int32_t> loss_queries = ParseLossQueries(a.loss_queries);
  if (!loss_queries.ok()) return Fail(loss_queries.status());
  auto policy = engine::ParsePolicy(a.policy);
  if (!policy.ok()) return Fail(policy.status());

  engine::EngineOptions eo;
  eo.backend = a.backend;
  auto eng = Engine::Create(a.model, eo);
  if (!eng.ok()) return Fail(eng.status());
  Engine& e = **eng;

  std::vector<int32_t> ids;
  std::string source;
  if (!a.text.empty()) {
    if (e.tokenizer() == nullptr) {
      return Fail(absl::FailedPreconditionError(
          "--text needs a tokenizer.json in the model directory " + a.model));
    }
    auto bytes = ReadFileBytes(a.text);
    if (!bytes.ok()) return Fail(bytes.status());
    auto enc = e.tokenizer()->Encode(*bytes);
    if (!enc.ok()) return Fail(enc.status());
    ids = std::move(*enc);
    source = a.text;
  } else {
    auto t = ReadTokenFile(a.tokens);
    if (!t.ok()) return Fail(t.status());
    ids = std::move(*t);
    source = a.tokens;
  }
  if (a.max_tokens > 0 && static_cast<int64_t>(ids.size()) > a.max_tokens) {
    ids.resize(static_cast<size_t>(a.max_tokens));
  }

  SelectionConfig sel = SelectionConfig::ForPolicy(*policy, e.config());
  if (a.block_size > 0) sel.block_size = a.block_size;
  if (a.topk > 0) sel.topk = a.topk;
  if (a.dense_below >= 0) sel.dense_below = a.dense_below;
  if (a.lambda >= 0) sel.lambda = a.lambda;

  auto plan = e.Plan(static_cast<int64_t>(ids.size()), sel);
  if (!plan.ok()) return Fail(plan.status());
  engine::PrefillOptions po;
  po.measure = a.measure;
  po.information_loss_queries = *loss_queries;
  auto result = e.Prefill(*plan, ids, po, nullptr);
  if (!result.ok()) return Fail(result.status());

  if (a.json) {
    std::printf("%s\n", ToJson(*result, source, e).dump(1).c_str());
  } else {
    PrintText(*result, source, e);
  }
  return 0;
}

}  // namespace sparsefill::tools
