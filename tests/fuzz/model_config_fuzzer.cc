// Fuzzes config.json parsing (sparsefill/engine/model_config.h): the first file read from every
// checkpoint directory.
// Invariants of a config that parses: the shape is self-consistent (heads divide, head_dim even,
// LongRoPE factor lists of head_dim / 2), the parameter counts are positive (no overflow), the
// config survives ModelConfigToJson -> ParseModelConfig unchanged, and RoPE frequencies of a
// short sequence are never NaN (and LongRoPE's attention scaling is finite).
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "sparsefill/engine/model_config.h"
#include "tests/fuzz/fuzz_check.h"

using sparsefill::engine::ModelConfig;
using sparsefill::engine::ModelConfigToJson;
using sparsefill::engine::ParseModelConfig;
using sparsefill::engine::RopeScaling;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = ParseModelConfig(text, "fuzz/config.json");
  if (!parsed.ok()) {
    SF_FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument, "code %d: %s",
                  static_cast<int>(parsed.status().code()),
                  std::string(parsed.status().message()).c_str());
    SF_FUZZ_CHECK(std::string(parsed.status().message()).starts_with("fuzz/config.json"),
                  "error does not name the file: %s",
                  std::string(parsed.status().message()).c_str());
    return 0;
  }
  const ModelConfig& c = *parsed;
  SF_FUZZ_CHECK(c.num_heads > 0 && c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
                "heads %d kv %d", c.num_heads, c.num_kv_heads);
  SF_FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, "head_dim %d", c.head_dim);
  SF_FUZZ_CHECK(c.num_layers > 0 && c.hidden_size > 0 && c.vocab_size > 0 &&
                    c.intermediate_size > 0 && c.max_position_embeddings > 0,
                "non-positive size");
  SF_FUZZ_CHECK(c.NonEmbeddingParams() > 0 && c.TotalParams() >= c.NonEmbeddingParams(),
                "parameter count overflowed: %lld", (long long)c.NonEmbeddingParams());
  SF_FUZZ_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0, "rope_theta");
  SF_FUZZ_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0, "rms_norm_eps");
  if (c.rope_scaling.type == RopeScaling::Type::kLongRope) {
    SF_FUZZ_CHECK(c.rope_scaling.short_factor.size() == static_cast<size_t>(c.head_dim / 2) &&
                      c.rope_scaling.long_factor.size() == static_cast<size_t>(c.head_dim / 2),
                  "longrope factor lists");
  }
  SF_FUZZ_CHECK(std::isfinite(c.ResidualScale()) && std::isfinite(c.FinalHiddenScale()) &&
                    std::isfinite(c.EmbeddingScale()),
                "scales");

  const std::string json = ModelConfigToJson(c);
  auto again = ParseModelConfig(json, "roundtrip/config.json");
  SF_FUZZ_CHECK(again.ok(), "written config does not parse: %s\n%s",
                std::string(again.status().message()).c_str(), json.c_str());
  SF_FUZZ_CHECK(*again == c, "config changed across ModelConfigToJson:\n%s", json.c_str());

  // Bounded cost: head_dim is at most 65536.
  float attention_scaling = 0;
  const auto inv_freq = sparsefill::engine::RopeInvFreq(c, 64, &attention_scaling);
  SF_FUZZ_CHECK(inv_freq.size() == static_cast<size_t>(c.head_dim / 2), "inv_freq size %zu",
                inv_freq.size());
  SF_FUZZ_CHECK(std::isfinite(attention_scaling), "attention_scaling %f", attention_scaling);
  // Extreme (valid) rope_theta values may round to 0 or inf in float; NaN is always a bug.
  for (float f : inv_freq) SF_FUZZ_CHECK(!std::isnan(f) && f >= 0, "inv_freq %f", f);
  return 0;
}
