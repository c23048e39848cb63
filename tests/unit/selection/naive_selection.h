// Naive reimplementations for the selection tests, written straight from the spec (DESIGN §4 and
// MiniCPM4's InfLLM-V2: compress -> masked softmax -> sum over the group -> max_pool1d with
// padding -> forced blocks -> top-k), in double precision, with no code shared with the library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "sparsefill/common/rng.h"
#include "sparsefill/engine/selection.h"

namespace sparsefill::testing {

struct Problem {
  int64_t num_kv = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  std::vector<float> q;        // [num_kv, q_heads, head_dim]: one query per key position
  std::vector<float> k;        // [num_kv, kv_heads, head_dim]
  std::vector<uint8_t> punct;  // [num_kv]
  float scale = 0.0f;

  // Input for the queries [a, b) of the prompt.
  engine::LayerSelectionInput Input(int64_t a, int64_t b) const {
    engine::LayerSelectionInput in;
    in.q = q.data() + a * q_heads * head_dim;
    in.k = k.data();
    in.punct = punct.data();
    in.num_q = b - a;
    in.q_pos0 = a;
    in.num_kv = num_kv;
    in.q_heads = q_heads;
    in.kv_heads = kv_heads;
    in.head_dim = head_dim;
    in.scale = scale;
    return in;
  }
  engine::LayerSelectionInput Input() const { return Input(0, num_kv); }
};

inline Problem MakeProblem(Rng& rng, int64_t n, int32_t q_heads, int32_t kv_heads, int32_t d,
                           double punct_rate = 0.1) {
  Problem p;
  p.num_kv = n;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.head_dim = d;
  p.scale = 1.0f / std::sqrt(static_cast<float>(d));
  p.q.resize(n * q_heads * d);
  p.k.resize(n * kv_heads * d);
  p.punct.resize(n);
  for (float& x : p.q) x = 1.5f * rng.Normal();
  for (float& x : p.k) x = rng.Normal();
  for (auto& x : p.punct) x = rng.Uniform() < punct_rate ? 1 : 0;
  return p;
}

// Chunk m's representative in double: mean of keys [s*m, s*m+k); with lambda < 1 (PHSA, k = s),
// mixed with the mean of the chunk's punctuation keys when it has any.
inline std::vector<double> NaiveSummaries(const Problem& p, int32_t k, int32_t s, double lambda) {
  const int64_t chunks = p.num_kv >= k ? (p.num_kv - k) / s + 1 : 0;
  const int32_t d = p.head_dim;
  std::vector<double> out(chunks * p.kv_heads * d, 0.0);
  for (int64_t m = 0; m < chunks; ++m) {
    for (int32_t h = 0; h < p.kv_heads; ++h) {
      std::vector<double> mean(d, 0.0), pm(d, 0.0);
      int n_p = 0;
      for (int64_t j = s * m; j < s * m + k; ++j) {
        for (int32_t c = 0; c < d; ++c) mean[c] += p.k[(j * p.kv_heads + h) * d + c] / k;
        if (p.punct[j]) {
          ++n_p;
          for (int32_t c = 0; c < d; ++c) pm[c] += p.k[(j * p.kv_heads + h) * d + c];
        }
      }
      for (int32_t c = 0; c < d; ++c) {
        out[(m * p.kv_heads + h) * d + c] =
            (lambda < 1.0 && n_p > 0) ? lambda * mean[c] + (1.0 - lambda) * pm[c] / n_p : mean[c];
      }
    }
  }
  return out;
}

// Block scores of query t for KV head g: +inf forced, -inf invalid (after the query's block).
inline std::vector<double> NaiveBlockScores(const Problem& p, const engine::SelectionConfig& cfg,
                                            const std::vector<double>& kc, int32_t g, int64_t t) {
  const int32_t k = cfg.kernel_size, s = cfg.kernel_stride, B = cfg.block_size;
  const int32_t d = p.head_dim;
  const int32_t group = p.q_heads / p.kv_heads;
  const int64_t total_chunks = p.num_kv >= k ? (p.num_kv - k) / s + 1 : 0;
  const double inf = std::numeric_limits<double>::infinity();
  // Chunk scores, masked chunks contribute probability 0 (MiniCPM4 replaces NaN/masked by 0).
  std::vector<double> prob(total_chunks, 0.0);
  std::vector<int64_t> visible;
  for (int64_t m = 0; m < total_chunks; ++m) {
    if (s * m + k - 1 <= t) visible.push_back(m);
  }
  for (int32_t j = 0; j < group && !visible.empty(); ++j) {
    const int32_t h = g * group + j;
    std::vector<double> logit(visible.size());
    double mx = -inf;
    for (size_t v = 0; v < visible.size(); ++v) {
      double dot = 0.0;
      for (int32_t c = 0; c < d; ++c) {
        dot += static_cast<double>(p.q[(t * p.q_heads + h) * d + c]) *
               kc[(visible[v] * p.kv_heads + g) * d + c];
      }
      logit[v] = dot * p.scale;
      mx = std::max(mx, logit[v]);
    }
    double sum = 0.0;
    for (double x : logit) sum += std::exp(x - mx);
    for (size_t v = 0; v < visible.size(); ++v) prob[visible[v]] += std::exp(logit[v] - mx) / sum;
  }
  // torch.nn.functional.max_pool1d(prob, kernel_size=window, stride=B/s, padding=k/s-1).
  const int32_t stride = B / s, pad = k / s - 1, window = B / s + k / s - 1;
  const int64_t qb = t / B;
  const int64_t num_blocks = (p.num_kv + B - 1) / B;
  std::vector<double> score(num_blocks, -inf);
  for (int64_t b = 0; b < num_blocks; ++b) {
    double best = -inf;  // padding is -inf
    for (int32_t w = 0; w < window; ++w) {
      const int64_t m = b * stride - pad + w;
      if (m >= 0 && m < total_chunks) best = std::max(best, prob[m]);
    }
    score[b] = best;
    if (b < cfg.init_blocks) score[b] = inf;
    if (b >= qb - cfg.local_blocks() && b <= qb) score[b] = inf;
    if (b > qb) score[b] = -inf;
  }
  return score;
}

// Top-k of the valid blocks (<= the query's block), ties to the lower index, ascending.
inline std::vector<int32_t> TopBlocks(const std::vector<double>& score, int64_t qb, int32_t topk) {
  std::vector<int32_t> idx;
  for (int64_t b = 0; b <= qb; ++b) idx.push_back(static_cast<int32_t>(b));
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int32_t a, int32_t b) { return score[a] > score[b]; });
  idx.resize(std::min<size_t>(idx.size(), topk));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Valid entries of one selection row.
inline std::vector<int32_t> RowOf(const engine::LayerSelection& sel, int32_t g, int64_t i) {
  std::vector<int32_t> r;
  const int32_t* row = sel.blocks.data() + (g * sel.num_q + i) * sel.max_blocks;
  for (int32_t j = 0; j < sel.max_blocks && row[j] >= 0; ++j) r.push_back(row[j]);
  return r;
}

// Naive NOSA importance: causal softmax mass per block from the last `observe` queries.
inline std::vector<double> NaiveImportance(const Problem& p, int32_t B, int32_t observe) {
  const int64_t n_blocks = (p.num_kv + B - 1) / B;
  const int32_t group = p.q_heads / p.kv_heads, d = p.head_dim;
  std::vector<double> imp(p.kv_heads * n_blocks, 0.0);
  for (int64_t t = std::max<int64_t>(0, p.num_kv - observe); t < p.num_kv; ++t) {
    for (int32_t h = 0; h < p.q_heads; ++h) {
      const int32_t g = h / group;
      std::vector<double> logit(t + 1);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0.0;
        for (int32_t c = 0; c < d; ++c) {
          dot += static_cast<double>(p.q[(t * p.q_heads + h) * d + c]) *
                 p.k[(j * p.kv_heads + g) * d + c];
        }
        logit[j] = dot * p.scale;
        mx = std::max(mx, logit[j]);
      }
      double sum = 0.0;
      for (double x : logit) sum += std::exp(x - mx);
      for (int64_t j = 0; j <= t; ++j) imp[g * n_blocks + j / B] += std::exp(logit[j] - mx) / sum;
    }
  }
  return imp;
}

}  // namespace sparsefill::testing
