#include "tools/decode-sink/sink.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sparsefill/client/coordinator_client.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/engine.h"
#include "tools/decode-sink/await_layout.h"
#include "tools/decode-sink/cache_assembler.h"
#include "tools/decode-sink/local_reference.h"
#include "tools/sparsefill/token_file.h"

namespace sparsefill::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "decode-sink: %s\n", s.ToString().c_str());
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
      return 2;
    default:
      return 1;
  }
}

absl::StatusOr<SelectionChoice> ChoiceOf(const SinkArgs& a) {
  SelectionChoice c;
  SF_ASSIGN_OR_RETURN(c.policy, engine::ParsePolicy(a.policy));
  if (a.block_size >= 0) c.block_size = a.block_size;
  if (a.topk >= 0) c.topk = a.topk;
  if (a.dense_below >= 0) c.dense_below = a.dense_below;
  if (a.lambda >= 0) c.lambda = a.lambda;
  if (a.init_blocks >= 0) c.init_blocks = a.init_blocks;
  if (a.local_tokens >= 0) c.local_tokens = a.local_tokens;
  return c;
}

absl::StatusOr<client::ConnectionOptions> ConnectionOf(const SinkArgs& a) {
  client::ConnectionOptions o;
  o.address = a.coordinator;
  o.default_timeout = std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000));
  if (a.tls || !a.tls_ca.empty() || !a.tls_cert.empty() || !a.tls_key.empty()) {
    o.security = client::Security::kTls;
    o.ca_file = a.tls_ca;
    o.cert_file = a.tls_cert;
    o.key_file = a.tls_key;
    o.target_name_override = a.tls_name;
    o.worker_target_name_override = a.worker_tls_name;
  }
  o.direct_streams = a.direct;
  if (!a.token.empty() && !a.token_file.empty()) {
    return absl::InvalidArgumentError("--token and --token-file: give one of them");
  }
  o.token = a.token;
  if (!a.token_file.empty()) {
    std::ifstream in(a.token_file);
    if (!in || !std::getline(in, o.token) || o.token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token-file: cannot read a token from ", a.token_file));
    }
    while (!o.token.empty() && (o.token.back() == '\r' || o.token.back() == ' ')) {
      o.token.pop_back();
    }
  }
  return o;
}

// The prompt from --tokens or --text (tokenised with the model's own tokenizer), truncated.
absl::StatusOr<std::vector<int32_t>> PromptOf(const SinkArgs& a, const engine::Engine& e) {
  std::vector<int32_t> ids;
  if (!a.tokens.empty()) {
    SF_ASSIGN_OR_RETURN(ids, ReadTokenFile(a.tokens));
  } else {
    if (e.tokenizer() == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("--text needs a tokenizer.json in the model directory ", a.model_dir));
    }
    SF_ASSIGN_OR_RETURN(const std::string bytes, ReadFileBytes(a.text));
    SF_ASSIGN_OR_RETURN(ids, e.tokenizer()->Encode(bytes));
  }
  if (a.max_tokens > 0 && static_cast<int64_t>(ids.size()) > a.max_tokens) {
    ids.resize(static_cast<size_t>(a.max_tokens));
  }
  return ids;
}

absl::StatusOr<std::string> ModelNameOf(const SinkArgs& a, client::CoordinatorClient& c) {
  if (!a.model_name.empty()) return a.model_name;
  SF_ASSIGN_OR_RETURN(const std::vector<client::ModelInfo> models, c.ListModels());
  if (models.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model-name: the coordinator serves ", models.size(), " models; name one"));
  }
  return models[0].name;
}

absl::Status CheckModelMatches(const kvstore::CacheLayout& l, const engine::ModelConfig& m,
                               const std::string& dir) {
  if (l.num_layers != m.num_layers || l.kv_heads != m.num_kv_heads || l.head_dim != m.head_dim) {
    return absl::FailedPreconditionError(
        absl::StrCat("the cache has ", l.num_layers, " layers x ", l.kv_heads,
                     " KV heads x head_dim ", l.head_dim, " but --model ", dir, " has ",
                     m.num_layers, " x ", m.num_kv_heads, " x ", m.head_dim));
  }
  return absl::OkStatus();
}

std::string TokenText(const engine::Engine& e, int32_t id) {
  if (e.tokenizer() == nullptr) return "";
  const int32_t ids[1] = {id};
  absl::StatusOr<std::string> s = e.tokenizer()->Decode(ids);
  return s.ok() ? *s : "";
}

// Printable form of a token's bytes: control characters escaped, invalid UTF-8 kept as \xNN so
// that the JSON stays valid.
std::string Printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      const size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
      bool ok = len > 0 && i + len <= s.size();
      for (size_t j = 1; ok && j < len; ++j) {
        ok = (static_cast<unsigned char>(s[i + j]) & 0xc0) == 0x80;
      }
      if (ok) {
        out.append(s, i, len);
        i += len - 1;
      } else {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", c);
        out += buf;
      }
    }
  }
  return out;
}

nlohmann::json PrefillJson(const client::PrefillStats& s) {
  nlohmann::json layers = nlohmann::json::array();
  for (const client::LayerStats& l : s.layers) {
    layers.push_back({{"layer", l.layer},
                      {"selected_keys", l.selected_keys},
                      {"causal_keys", l.causal_keys},
                      {"information_loss", l.information_loss}});
  }
  return {{"num_tokens", s.num_tokens},
          {"seconds", s.seconds},
          {"tokens_per_second", s.tokens_per_second},
          {"sparsity", s.sparsity},
          {"selected_keys", s.selected_keys},
          {"causal_keys", s.causal_keys},
          {"information_loss", s.information_loss},
          {"information_loss_queries", s.information_loss_queries},
          {"hidden_rel_l2", s.hidden_rel_l2},
          {"next_token_kl", s.next_token_kl},
          {"workers", s.workers},
          {"hot_blocks", s.hot_blocks},
          {"cold_blocks", s.cold_blocks},
          {"policy", s.policy},
          {"layers", layers}};
}

absl::Status WriteProbs(const std::string& path, const std::vector<float>& probs) {
  static_assert(std::endian::native == std::endian::little, "--dump-probs writes the host order");
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InvalidArgumentError(absl::StrCat("--dump-probs: cannot create ", path));
  out.write(reinterpret_cast<const char*>(probs.data()),
            static_cast<std::streamsize>(probs.size() * sizeof(float)));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("--dump-probs: cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

int RunSink(const SinkArgs& a) {
  const Clock::time_point start = Clock::now();
  auto log = [&](const std::string& line) {
    if (!a.quiet) std::fprintf(stderr, "decode-sink: %s\n", line.c_str());
  };
  if (a.top < 0) return Fail(absl::InvalidArgumentError("--top must be >= 0"));
  if (a.max_tokens < 0) return Fail(absl::InvalidArgumentError("--max-tokens must be >= 0"));
  if (a.timeout_s <= 0) return Fail(absl::InvalidArgumentError("--timeout-s must be positive"));
  const bool have_prompt = !a.text.empty() || !a.tokens.empty();
  if (a.cache.empty() && !have_prompt) {
    return Fail(absl::InvalidArgumentError("give --cache ID, or --tokens/--text to prefill"));
  }
  if (a.verify && !have_prompt) {
    return Fail(absl::InvalidArgumentError(
        "--verify-against-local needs the prompt: --tokens FILE or --text FILE"));
  }
  absl::StatusOr<SelectionChoice> choice = ChoiceOf(a);
  if (!choice.ok()) return Fail(choice.status());
  absl::StatusOr<client::ConnectionOptions> conn = ConnectionOf(a);
  if (!conn.ok()) return Fail(conn.status());

  // The model first: a sink that cannot decode should not pull a cache.
  Clock::time_point t = Clock::now();
  absl::StatusOr<std::unique_ptr<engine::Engine>> eng =
      engine::Engine::Create(a.model_dir, engine::EngineOptions{});
  if (!eng.ok()) return Fail(eng.status());
  engine::Engine& e = **eng;
  const double load_s = Since(t);
  std::vector<int32_t> prompt;
  if (have_prompt) {
    absl::StatusOr<std::vector<int32_t>> p = PromptOf(a, e);
    if (!p.ok()) return Fail(p.status());
    prompt = *std::move(p);
  }

  absl::StatusOr<std::unique_ptr<client::CoordinatorClient>> client =
      client::CoordinatorClient::Connect(*conn);
  if (!client.ok()) return Fail(client.status());
  client::CoordinatorClient& c = **client;

  nlohmann::json out;
  out["coordinator"] = a.coordinator;
  out["model_dir"] = a.model_dir;
  kvstore::CacheId id;
  if (!a.cache.empty()) {
    absl::StatusOr<kvstore::CacheId> parsed = kvstore::CacheId::FromHex(a.cache);
    if (!parsed.ok()) return Fail(parsed.status());
    id = *parsed;
  } else {
    absl::StatusOr<std::string> name = ModelNameOf(a, c);
    if (!name.ok()) return Fail(name.status());
    client::PrefillRequest req;
    req.model = *name;
    req.tokens = prompt;
    req.selection = choice->ToOverrides();
    req.measure = a.measure;
    log(absl::StrCat("prefilling ", prompt.size(), " tokens on ", a.coordinator, " (model ", *name,
                     ", policy ", a.policy, ")"));
    t = Clock::now();
    absl::StatusOr<client::PrefillResult> r = c.Prefill(req, [&](const client::PrefillProgress& p) {
      if (p.kind == client::PrefillProgress::Kind::kAdmitted) {
        log(absl::StrCat("admitted as cache ", p.cache.ToHex(), " on ", p.workers, " workers"));
      } else {
        log(absl::StrCat("layer ", p.layer + 1, "/", p.layers_total, " done"));
      }
    });
    if (!r.ok()) return Fail(r.status());
    id = r->cache.id;
    out["prefill"] = PrefillJson(r->stats);
    out["prefill"]["client_seconds"] = Since(t);
  }
  out["cache_id"] = id.ToHex();

  absl::StatusOr<client::CacheInfo> info =
      AwaitCacheLayout(c, id, std::chrono::milliseconds(static_cast<int64_t>(a.timeout_s * 1000)));
  if (!info.ok()) return Fail(info.status());
  const kvstore::CacheLayout& layout = info->layout;
  if (absl::Status s = CheckModelMatches(layout, e.config(), a.model_dir); !s.ok()) return Fail(s);
  if (have_prompt && static_cast<int64_t>(prompt.size()) != layout.num_tokens) {
    return Fail(absl::FailedPreconditionError(
        absl::StrCat("cache ", id.ToHex(), " holds ", layout.num_tokens,
                     " tokens but the prompt given has ", prompt.size())));
  }
  absl::StatusOr<CacheAssembler> assembler = CacheAssembler::Create(id, layout);
  if (!assembler.ok()) return Fail(assembler.status());

  log(absl::StrCat("streaming cache ", id.ToHex(), " (", layout.num_tokens, " tokens, ",
                   layout.total_blocks(), " blocks, ", AsAbsl(DTypeName(layout.dtype)), ")"));
  assembler->StartClock();
  t = Clock::now();
  const int64_t stream_start_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count();
  absl::StatusOr<client::StreamStats> streamed = c.StreamCache(
      id, /*hot_only=*/false, [&](const client::KvChunk& chunk) { return assembler->Add(chunk); });
  const double stream_s = Since(t);
  if (!streamed.ok()) return Fail(streamed.status());
  if (absl::Status s = assembler->CheckComplete(); !s.ok()) return Fail(s);
  const AssemblyStats& as = assembler->stats();
  if (streamed->blocks != as.blocks || streamed->bytes != as.bytes) {
    return Fail(absl::DataLossError(absl::StrCat("the client counted ", streamed->blocks,
                                                 " blocks / ", streamed->bytes, " bytes, the sink ",
                                                 as.blocks, " / ", as.bytes)));
  }
  log(absl::StrCat("received ", as.blocks, " blocks in ", as.chunks, " chunks, ",
                   as.checksums_verified, " checksums verified"));

  t = Clock::now();
  const std::vector<engine::LayerKvBuffer> cache = std::move(*assembler).TakeCache();
  absl::StatusOr<std::vector<float>> logits = e.Decode(cache, a.next_token);
  if (!logits.ok()) return Fail(logits.status());
  const double decode_s = Since(t);
  const std::vector<float> probs = Softmax(*logits);

  out["model"] = info->model;
  out["policy"] = info->policy;
  out["state"] = std::string(client::CacheStateName(info->state));
  out["tokens"] = layout.num_tokens;
  out["layout"] = {{"dtype", std::string(DTypeName(layout.dtype))},
                   {"num_layers", layout.num_layers},
                   {"kv_heads", layout.kv_heads},
                   {"head_dim", layout.head_dim},
                   {"block_size", layout.block_size},
                   {"total_blocks", layout.total_blocks()},
                   {"total_bytes", layout.total_bytes()}};
  auto gbps = [](uint64_t bytes, double s) { return s > 0 ? bytes / s / 1e9 : 0.0; };
  const double cold_span = as.first_cold_s >= 0 ? as.last_cold_s - as.first_cold_s : 0.0;
  out["stream"] = {{"bytes", as.bytes},
                   {"chunks", as.chunks},
                   {"blocks", as.blocks},
                   {"hot_blocks", as.hot_blocks},
                   {"cold_blocks", as.cold_blocks},
                   {"hot_bytes", as.hot_bytes},
                   {"cold_bytes", as.cold_bytes},
                   {"checksums_verified", as.checksums_verified},
                   {"checksum_failures", as.checksum_failures},
                   {"seconds", stream_s},
                   {"started_unix_ms", stream_start_unix_ms},
                   {"gb_per_s", gbps(as.bytes, stream_s)},
                   {"first_chunk_seconds", as.first_chunk_s},
                   {"last_hot_seconds", as.last_hot_s},
                   {"cold_seconds", cold_span},
                   {"cold_gb_per_s", gbps(as.cold_bytes, cold_span)},
                   {"layer_first_chunk_seconds", as.layer_first_chunk_s},
                   {"layer_order", as.layer_order},
                   {"direct_blocks", streamed->direct_blocks},
                   {"relayed_shards", streamed->relayed_shards}};
  const std::vector<TopToken> top = TopK(probs, a.top);
  nlohmann::json top_json = nlohmann::json::array();
  for (const TopToken& tt : top) {
    top_json.push_back(
        {{"id", tt.id}, {"prob", tt.prob}, {"text", Printable(TokenText(e, tt.id))}});
  }
  out["decode"] = {{"next_token", a.next_token},
                   {"next_token_text", Printable(TokenText(e, a.next_token))},
                   {"position", layout.num_tokens},
                   {"vocab", probs.size()},
                   {"seconds", decode_s},
                   {"model_load_seconds", load_s},
                   {"top", top_json}};

  if (!a.dump_probs.empty()) {
    if (absl::Status s = WriteProbs(a.dump_probs, probs); !s.ok()) return Fail(s);
    out["decode"]["probs_file"] = a.dump_probs;
  }

  int exit_code = 0;
  if (a.verify) {
    absl::StatusOr<engine::SelectionConfig> sel = choice->ToConfig(e.config());
    if (!sel.ok()) return Fail(sel.status());
    if (info->policy != engine::PolicyName(sel->policy)) {
      return Fail(absl::FailedPreconditionError(
          absl::StrCat("cache ", id.ToHex(), " was prefilled with policy ", info->policy,
                       ", --policy says ", AsAbsl(engine::PolicyName(sel->policy)))));
    }
    log("running the single-process engine on the same tokens");
    t = Clock::now();
    absl::StatusOr<LocalReference> ref =
        RunLocalReference(e, *sel, prompt, layout.dtype, a.next_token);
    if (!ref.ok()) return Fail(ref.status());
    const std::vector<float> ref_probs = Softmax(ref->logits);
    double max_prob = 0, max_logit = 0;
    int64_t differing = 0;
    for (size_t i = 0; i < probs.size() && i < ref_probs.size(); ++i) {
      max_prob = std::max(max_prob, std::fabs(double{probs[i]} - ref_probs[i]));
      max_logit = std::max(max_logit, std::fabs(double{(*logits)[i]} - ref->logits[i]));
      differing += probs[i] != ref_probs[i] ? 1 : 0;
    }
    const bool identical = ref_probs.size() == probs.size() && differing == 0;
    out["verify"] = {{"max_abs_diff", max_prob},
                     {"max_abs_logit_diff", max_logit},
                     {"differing_entries", differing},
                     {"bit_identical", identical},
                     {"local_policy", sel->ToString()},
                     {"local_attention", ref->prefill.plan.dense ? "dense" : "sparse"},
                     {"local_sparsity", ref->prefill.sparsity},
                     {"local_seconds", Since(t)}};
    if (!identical) exit_code = 3;
  }
  out["seconds"] = Since(start);

  if (a.json) {
    std::printf("%s\n", out.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("cache      %s (%s, %lld tokens, policy %s)\n", id.ToHex().c_str(),
                info->model.c_str(), static_cast<long long>(layout.num_tokens),
                info->policy.c_str());
    std::printf(
        "streamed   %.1f MiB in %lld chunks, %.3f s (%.3f GB/s); %lld hot + %lld cold "
        "blocks\n",
        as.bytes / 1048576.0, static_cast<long long>(as.chunks), stream_s, gbps(as.bytes, stream_s),
        static_cast<long long>(as.hot_blocks), static_cast<long long>(as.cold_blocks));
    std::printf("checksums  %lld blocks verified, %lld failures\n",
                static_cast<long long>(as.checksums_verified),
                static_cast<long long>(as.checksum_failures));
    std::printf("decode     next token %d at position %lld (%.3f s)\n", a.next_token,
                static_cast<long long>(layout.num_tokens), decode_s);
    for (size_t i = 0; i < top.size(); ++i) {
      std::printf("  %2zu. id %-7d p %.6f  %s\n", i + 1, top[i].id, top[i].prob,
                  Printable(TokenText(e, top[i].id)).c_str());
    }
    if (a.verify) {
      std::printf("verify     max |p - p_local| = %.9g, max |logit diff| = %.9g (%s)\n",
                  out["verify"]["max_abs_diff"].get<double>(),
                  out["verify"]["max_abs_logit_diff"].get<double>(),
                  exit_code == 0 ? "bit-identical" : "DIFFERENT");
    }
  }
  std::fflush(stdout);
  return exit_code;
}

}  // namespace sparsefill::tools
