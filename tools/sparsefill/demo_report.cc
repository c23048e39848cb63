#include "tools/sparsefill/demo_report.h"

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "tools/sparsefill/commands.h"

namespace sparsefill::tools {
namespace {

// The sink's numbers, read without exceptions: -1 (or "") when a field is missing.
const nlohmann::json* Find(const nlohmann::json& j, const char* a, const char* b = nullptr) {
  if (!j.is_object() || !j.contains(a)) return nullptr;
  const nlohmann::json& x = j[a];
  if (b == nullptr) return &x;
  if (!x.is_object() || !x.contains(b)) return nullptr;
  return &x[b];
}
double Num(const nlohmann::json& j, const char* a, const char* b = nullptr) {
  const nlohmann::json* x = Find(j, a, b);
  return x != nullptr && x->is_number() ? x->get<double>() : -1.0;
}
std::string Str(const nlohmann::json& j, const char* a, const char* b = nullptr) {
  const nlohmann::json* x = Find(j, a, b);
  return x != nullptr && x->is_string() ? x->get<std::string>() : "";
}

double MiB(double bytes) { return bytes / (1024.0 * 1024.0); }

}  // namespace

double ContextSparsity(const client::PrefillResult& r) {
  const kvstore::CacheLayout& l = r.cache.layout;
  const double n = static_cast<double>(r.stats.num_tokens);
  const double all = double{1} * l.num_layers * l.kv_heads * n * n;
  return all > 0 ? 1.0 - static_cast<double>(r.stats.selected_keys) / all : 0.0;
}

void PrintDemoReport(const DemoReport& r, bool json) {
  const client::PrefillStats& s = r.prefill.stats;
  const client::CacheInfo& c = r.prefill.cache;
  const nlohmann::json& sink = r.sink;
  // When the sink got layer 0, against when the prefill's final message came.
  const double stream_start_ms = Num(sink, "stream", "started_unix_ms");
  double layer0_lead_s = -1;
  if (const nlohmann::json* l = Find(sink, "stream", "layer_first_chunk_seconds");
      l != nullptr && l->is_array() && !l->empty() && (*l)[0].is_number() && stream_start_ms > 0) {
    const double layer0_ms = stream_start_ms + 1000.0 * (*l)[0].get<double>();
    layer0_lead_s = (static_cast<double>(r.prefill_done_unix_ms) - layer0_ms) / 1000.0;
  }
  const double cold_gbps = Num(sink, "stream", "cold_gb_per_s");
  const double cold_s = Num(sink, "stream", "cold_seconds");

  if (json) {
    nlohmann::json layers = nlohmann::json::array();
    for (const client::LayerStats& l : s.layers) {
      layers.push_back({{"layer", l.layer},
                        {"selected_keys", l.selected_keys},
                        {"causal_keys", l.causal_keys},
                        {"information_loss", l.information_loss}});
    }
    nlohmann::json out = {{"text", r.text_source},
                          {"model_dir", r.model_dir},
                          {"workers", r.workers},
                          {"backend", r.backend},
                          {"cache_id", c.id.ToHex()},
                          {"prefill",
                           {{"tokens", s.num_tokens},
                            {"seconds", s.seconds},
                            {"tokens_per_second", s.tokens_per_second},
                            {"policy", s.policy},
                            {"sparsity", s.sparsity},
                            {"context_sparsity", ContextSparsity(r.prefill)},
                            {"selected_keys", s.selected_keys},
                            {"causal_keys", s.causal_keys},
                            {"information_loss", s.information_loss},
                            {"information_loss_queries", s.information_loss_queries},
                            {"hidden_rel_l2", s.hidden_rel_l2},
                            {"next_token_kl", s.next_token_kl},
                            {"hot_blocks", s.hot_blocks},
                            {"cold_blocks", s.cold_blocks},
                            {"layer_done_seconds", r.layer_done_seconds},
                            {"layers", layers}}},
                          {"layer0_before_prefill_end_seconds", layer0_lead_s},
                          {"sink", sink},
                          {"wall_seconds", r.wall_seconds}};
    std::printf("%s\n", out.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    std::fflush(stdout);
    return;
  }

  std::printf(
      "\nsparsefill demo: %d x sparsefill-worker, sparsefill-coordinator and decode-sink "
      "as separate processes on loopback (--backend %s)\n",
      r.workers, r.backend.c_str());
  std::printf("  text        %s\n", r.text_source.c_str());
  std::printf("  model       %s (%s): %d layers, %d KV heads x %d, cache in %s\n", c.model.c_str(),
              r.model_dir.c_str(), c.layout.num_layers, c.layout.kv_heads, c.layout.head_dim,
              std::string(DTypeName(c.layout.dtype)).c_str());
  std::printf("  prefill     %lld tokens in %.1f s on %d workers: %.0f tokens/s (policy %s%s)\n",
              static_cast<long long>(s.num_tokens), s.seconds, s.workers, s.tokens_per_second,
              s.policy.c_str(),
              s.information_loss >= 0 ? "; the time includes the dense reference pass" : "");
  std::printf(
      "  sparsity    %.2f%% of causal keys; %.2f%% of the whole context (the PHSA "
      "paper's convention)\n",
      100 * s.sparsity, 100 * ContextSparsity(r.prefill));
  if (s.information_loss >= 0) {
    const std::string over = LossQueriesWords(s.information_loss_queries, s.num_tokens);
    std::printf(
        "  info loss   %.4f (dense softmax mass outside the selected blocks; mean over "
        "layers, heads and %s)\n",
        s.information_loss, over.c_str());
    std::printf("  fidelity    final hidden rel. L2 %.4g, next-token KL(dense||sparse) %.4g\n",
                s.hidden_rel_l2, s.next_token_kl);
  } else {
    std::printf("  info loss   not measured (--no-measure)\n");
  }
  std::printf(
      "  streamed    %.1f MiB in %.0f chunks to the decode sink, over a stream open %.1f s "
      "(opened at admission, it waits for each layer)\n",
      MiB(Num(sink, "stream", "bytes")), Num(sink, "stream", "chunks"),
      Num(sink, "stream", "seconds"));
  std::printf(
      "              hot %.0f blocks (%.1f MiB) layer by layer, then cold %.0f blocks "
      "(%.1f MiB)",
      Num(sink, "stream", "hot_blocks"), MiB(Num(sink, "stream", "hot_bytes")),
      Num(sink, "stream", "cold_blocks"), MiB(Num(sink, "stream", "cold_bytes")));
  if (cold_s > 0) std::printf(" at %.3f GB/s", cold_gbps);
  std::printf("\n");
  if (layer0_lead_s > 0) {
    std::printf("              layer 0 reached the sink %.1f s before the prefill finished\n",
                layer0_lead_s);
  }
  std::printf("  checksums   %.0f blocks verified (xxh64), %.0f failures\n",
              Num(sink, "stream", "checksums_verified"), Num(sink, "stream", "checksum_failures"));
  std::printf(
      "  decode      the sink fed token %.0f (\"%s\", %s) at position %.0f; its top-5 "
      "next tokens (random weights: not language):\n",
      Num(sink, "decode", "next_token"), Str(sink, "decode", "next_token_text").c_str(),
      r.next_token_note.c_str(), Num(sink, "decode", "position"));
  if (const nlohmann::json* top = Find(sink, "decode", "top"); top != nullptr && top->is_array()) {
    int i = 0;
    for (const nlohmann::json& t : *top) {
      std::printf("              %d. id %-7.0f p %.5f  \"%s\"\n", ++i, Num(t, "id"), Num(t, "prob"),
                  Str(t, "text").c_str());
    }
  }
  std::printf(
      "  wall time   %.1f s (start-up, model loads, prefill, measurement, stream, decode)\n",
      r.wall_seconds);
  std::fflush(stdout);
}

}  // namespace sparsefill::tools
