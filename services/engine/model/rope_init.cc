// RoPE inverse frequencies, following transformers' ROPE_INIT_FUNCTIONS
// (modeling_rope_utils.py: default, linear, llama3, longrope) formula by formula, in double.
#include <cmath>
#include <vector>

#include "sparsefill/engine/model_config.h"

namespace sparsefill::engine {
namespace {

constexpr double kPi = 3.14159265358979323846;

// _compute_default_rope_parameters: 1 / base^(arange(0, dim, 2) / dim).
std::vector<double> DefaultInvFreq(double base, int dim) {
  std::vector<double> inv(static_cast<size_t>(dim / 2));
  for (int i = 0; i < dim / 2; ++i) {
    inv[static_cast<size_t>(i)] =
        1.0 / std::pow(base, static_cast<double>(2 * i) / static_cast<double>(dim));
  }
  return inv;
}

// _compute_llama3_parameters.
void ApplyLlama3(const RopeScaling& rs, std::vector<double>& inv) {
  const double old_context_len = static_cast<double>(rs.original_max_position_embeddings);
  const double low_freq_wavelen = old_context_len / rs.low_freq_factor;
  const double high_freq_wavelen = old_context_len / rs.high_freq_factor;
  for (double& f : inv) {
    const double wavelen = 2.0 * kPi / f;
    if (wavelen > low_freq_wavelen) {
      f = f / rs.factor;
    } else if (!(wavelen < high_freq_wavelen)) {
      // Medium frequencies blend the scaled and the original frequency.
      const double smooth = (old_context_len / wavelen - rs.low_freq_factor) /
                            (rs.high_freq_factor - rs.low_freq_factor);
      f = (1.0 - smooth) * f / rs.factor + smooth * f;
    }
  }
}

}  // namespace

std::vector<float> RopeInvFreq(const ModelConfig& config, int64_t seq_len,
                               float* attention_scaling) {
  const int dim = config.head_dim;
  const RopeScaling& rs = config.rope_scaling;
  double attention = 1.0;
  std::vector<double> inv;
  switch (rs.type) {
    case RopeScaling::Type::kNone:
      inv = DefaultInvFreq(config.rope_theta, dim);
      break;
    case RopeScaling::Type::kLinear:
      inv = DefaultInvFreq(config.rope_theta, dim);
      for (double& f : inv) f /= rs.factor;
      break;
    case RopeScaling::Type::kLlama3:
      inv = DefaultInvFreq(config.rope_theta, dim);
      ApplyLlama3(rs, inv);
      break;
    case RopeScaling::Type::kLongRope: {
      // _compute_longrope_parameters: the factor is the context extension of the config.
      const double original_max = static_cast<double>(rs.original_max_position_embeddings);
      const double factor = static_cast<double>(config.max_position_embeddings) / original_max;
      if (rs.attention_factor > 0.0) {
        attention = rs.attention_factor;
      } else if (factor > 1.0) {
        attention = std::sqrt(1.0 + std::log(factor) / std::log(original_max));
      }
      const std::vector<double>& ext =
          seq_len > rs.original_max_position_embeddings ? rs.long_factor : rs.short_factor;
      inv.resize(static_cast<size_t>(dim / 2));
      for (int i = 0; i < dim / 2; ++i) {
        const size_t k = static_cast<size_t>(i);
        // ParseModelConfig guarantees the factor lists have head_dim / 2 entries; a hand-built
        // config with fewer falls back to no extension for the missing ones.
        const double e = k < ext.size() ? ext[k] : 1.0;
        inv[k] = 1.0 / (e * std::pow(config.rope_theta,
                                     static_cast<double>(2 * i) / static_cast<double>(dim)));
      }
      break;
    }
  }
  if (attention_scaling != nullptr) *attention_scaling = static_cast<float>(attention);
  return std::vector<float>(inv.begin(), inv.end());
}

}  // namespace sparsefill::engine
