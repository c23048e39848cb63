// decode-sink: a reference decode node (DESIGN §1 step 5). It streams a cache from the
// coordinator through the public client library (hot blocks first, layer by layer, then cold),
// checks every block's xxh64, reassembles the per-layer cache in fp32, loads the model itself
// and runs one decode step, printing the next-token distribution. --verify-against-local runs
// the single-process engine on the same tokens and selection and prints how far the two
// distributions are apart (0: bit-identical, which is what the engine promises).
//
// The next token fed to the decode step is --next-token (default 0): the sink is given the
// prompt, not its continuation, and does not know the prefill's last argmax.
#include "CLI/CLI.hpp"
#include "tools/decode-sink/sink.h"

int main(int argc, char** argv) {
  sparsefill::tools::SinkArgs a;
  CLI::App app{
      "decode-sink: stream a KV cache from the coordinator, verify it, and run one decode step"};
  app.add_option("--coordinator", a.coordinator, "coordinator address host:port")->required();
  app.add_option("--model", a.model_dir, "checkpoint directory (the sink loads the model itself)")
      ->required();
  app.add_option("--model-name", a.model_name,
                 "model name on the coordinator (default: its only model)");
  app.add_option("--cache", a.cache,
                 "stream this cache id (32 hex digits); without it the sink "
                 "prefills --tokens/--text on the coordinator first");
  auto* text = app.add_option("--text", a.text,
                              "prompt text file (tokenised by the sink with the "
                              "model's tokenizer.json)");
  auto* tokens =
      app.add_option("--tokens", a.tokens, "prompt token-id file (.u32 binary, or integers)");
  text->excludes(tokens);
  tokens->excludes(text);
  app.add_option("--max-tokens", a.max_tokens, "use only the first N prompt tokens (0: all)");
  app.add_option("--policy", a.policy, "dense|infllmv2|phsa|nosa")->capture_default_str();
  app.add_option("--block-size", a.block_size, "selection block size override");
  app.add_option("--topk", a.topk, "blocks per query override (forced ones included)");
  app.add_option("--dense-below", a.dense_below, "dense threshold override (tokens)");
  app.add_option("--lambda", a.lambda, "PHSA lambda override");
  app.add_option("--init-blocks", a.init_blocks, "forced initial blocks override");
  app.add_option("--local-tokens", a.local_tokens, "local window override (tokens)");
  app.add_flag("--measure", a.measure, "prefill with quality measurement (costs a dense run)");
  app.add_option("--next-token", a.next_token,
                 "token id fed to the decode step at position N (default 0: the sink does not "
                 "know the prompt's continuation)")
      ->capture_default_str();
  app.add_option("--top", a.top, "how many most likely next tokens to print")
      ->capture_default_str();
  app.add_flag("--json", a.json, "print one JSON object with every number");
  app.add_option("--dump-probs", a.dump_probs,
                 "write the whole next-token distribution here (little-endian fp32 [vocab])");
  app.add_flag("--verify-against-local", a.verify,
               "also run the single-process engine on the same tokens and print the max abs "
               "difference of the probabilities (needs --tokens or --text; exit code 3 when "
               "not bit-identical)");
  app.add_option("--token", a.token, "bearer token");
  app.add_option("--token-file", a.token_file, "file holding the bearer token (first line)");
  app.add_option("--tls-ca", a.tls_ca, "PEM roots verifying the coordinator (enables TLS)");
  app.add_option("--tls-cert", a.tls_cert, "PEM client certificate (mutual TLS)");
  app.add_option("--tls-key", a.tls_key, "PEM client key (mutual TLS)");
  app.add_option("--tls-name", a.tls_name, "name checked against the server certificate");
  app.add_flag("--tls", a.tls, "TLS with the system's roots");
  app.add_flag("!--no-direct", a.direct,
               "always stream through the coordinator's relay (default: READY caches come "
               "straight from the workers when the coordinator hands out a plan)");
  app.add_option("--worker-tls-name", a.worker_tls_name,
                 "name checked against the workers' certificates on direct streams");
  app.add_option("--timeout-s", a.timeout_s, "deadline of the prefill and of the stream")
      ->capture_default_str();
  app.add_flag("--quiet", a.quiet, "no progress lines on stderr");
  CLI11_PARSE(app, argc, argv);
  return sparsefill::tools::RunSink(a);
}
