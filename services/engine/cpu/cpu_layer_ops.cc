#include "services/engine/cpu/cpu_layer_ops.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "sparsefill/common/status.h"
#include "sparsefill/kernels/activation.h"
#include "sparsefill/kernels/gemm.h"
#include "sparsefill/kernels/norm.h"
#include "sparsefill/kernels/rope.h"

namespace sparsefill::engine::cpu {
namespace {

absl::Status RmsNorm(const float* x, float* out, int64_t rows, int64_t dim,
                     const std::vector<float>& weight, double eps) {
  kernels::RmsNormParams p;
  p.x = x;
  p.weight = weight.data();
  p.out = out;
  p.rows = rows;
  p.dim = static_cast<int32_t>(dim);
  p.x_stride = dim;
  p.out_stride = dim;
  p.eps = static_cast<float>(eps);
  p.dtype = DType::kF32;
  return kernels::RmsNormRef(p);
}

// x += scale * delta over n elements.
void AddScaled(float* x, const float* delta, int64_t n, float scale) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] += scale * delta[i];
}

void Grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace

void Linear(const float* x, int64_t ldx, int64_t rows, const std::vector<float>& w, int64_t in,
            int64_t out, const std::vector<float>& bias, float* y) {
  kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, rows, out, in, 1.0f, x, ldx, w.data(),
                   in, 0.0f, y, out);
  if (!bias.empty()) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y + r * out;
      for (int64_t j = 0; j < out; ++j) yr[j] += bias[static_cast<size_t>(j)];
    }
  }
}

RopeTable LayerOps::Rope(int64_t seq_len) const {
  RopeTable t;
  t.inv_freq = RopeInvFreq(c_, seq_len, &t.attention_scaling);
  return t;
}

void LayerOps::Embed(std::span<const int32_t> tokens, float* x) const {
  const int64_t hid = c_.hidden_size;
  const float emb_scale = static_cast<float>(c_.scale_emb);
  const int64_t n = static_cast<int64_t>(tokens.size());
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    const float* src = w_.embed.data() + int64_t{tokens[static_cast<size_t>(t)]} * hid;
    float* dst = x + t * hid;
    for (int64_t j = 0; j < hid; ++j) dst[j] = src[j] * emb_scale;
  }
}

absl::Status LayerOps::Qkv(int32_t layer, const float* x, int64_t rows, const int64_t* positions,
                           const RopeTable& rope, LayerScratch& s, float* q, float* k,
                           float* v) const {
  const LayerWeights& w = w_.layers[static_cast<size_t>(layer)];
  const int64_t hid = c_.hidden_size, d = c_.head_dim;
  const int32_t hq = c_.num_heads, hkv = c_.num_kv_heads;
  const int64_t qd = int64_t{hq} * d, kvd = int64_t{hkv} * d;
  Grow(s.h, rows * hid);
  SF_RETURN_IF_ERROR(RmsNorm(x, s.h.data(), rows, hid, w.input_norm, c_.rms_norm_eps));
  Linear(s.h.data(), hid, rows, w.wq, hid, qd, w.bq, q);
  Linear(s.h.data(), hid, rows, w.wk, hid, kvd, w.bk, k);
  Linear(s.h.data(), hid, rows, w.wv, hid, kvd, w.bv, v);
  if (c_.qk_norm) {
    SF_RETURN_IF_ERROR(RmsNorm(q, q, rows * hq, d, w.q_norm, c_.rms_norm_eps));
    SF_RETURN_IF_ERROR(RmsNorm(k, k, rows * hkv, d, w.k_norm, c_.rms_norm_eps));
  }
  for (auto [buf, heads] : {std::pair{q, hq}, std::pair{k, hkv}}) {
    kernels::RopeParams rp;
    rp.x = buf;
    rp.positions = positions;
    rp.inv_freq = rope.inv_freq.data();
    rp.tokens = rows;
    rp.heads = heads;
    rp.head_dim = static_cast<int32_t>(d);
    rp.rotary_dim = static_cast<int32_t>(d);
    rp.attention_scaling = rope.attention_scaling;
    rp.dtype = DType::kF32;
    SF_RETURN_IF_ERROR(kernels::RopeRef(rp));
  }
  return absl::OkStatus();
}

absl::Status LayerOps::OutputAndMlp(int32_t layer, const float* attn, int64_t rows, int64_t chunk,
                                    LayerScratch& s, float* x) const {
  const LayerWeights& w = w_.layers[static_cast<size_t>(layer)];
  const int64_t hid = c_.hidden_size, inter = c_.intermediate_size;
  const int64_t qd = int64_t{c_.num_heads} * c_.head_dim;
  const float residual_scale = static_cast<float>(c_.ResidualScale());
  chunk = std::max<int64_t>(1, std::min(chunk, rows));
  Grow(s.h, rows * hid);
  Grow(s.delta, rows * hid);
  Grow(s.gate_up, chunk * 2 * inter);

  Linear(attn, qd, rows, w.wo, qd, hid, {}, s.delta.data());
  AddScaled(x, s.delta.data(), rows * hid, residual_scale);

  // MLP over row chunks, so the [rows, 2 * intermediate] buffer stays bounded.
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    SF_RETURN_IF_ERROR(
        RmsNorm(x + r0 * hid, s.h.data() + r0 * hid, n, hid, w.post_norm, c_.rms_norm_eps));
    Linear(s.h.data() + r0 * hid, hid, n, w.w_gate_up, hid, 2 * inter, {}, s.gate_up.data());
    kernels::SwiGluParams sp;
    sp.gate = s.gate_up.data();
    sp.up = s.gate_up.data() + inter;
    sp.out = s.gate_up.data();  // in place over the gate half
    sp.rows = n;
    sp.dim = static_cast<int32_t>(inter);
    sp.gate_stride = sp.up_stride = sp.out_stride = 2 * inter;
    sp.dtype = DType::kF32;
    SF_RETURN_IF_ERROR(kernels::SwiGluRef(sp));
    kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, n, hid, inter, 1.0f,
                     s.gate_up.data(), 2 * inter, w.w_down.data(), inter, 0.0f,
                     s.delta.data() + r0 * hid, hid);
  }
  AddScaled(x, s.delta.data(), rows * hid, residual_scale);
  return absl::OkStatus();
}

absl::Status LayerOps::FinalNorm(const float* x, int64_t rows, float* out) const {
  const int64_t hid = c_.hidden_size;
  SF_RETURN_IF_ERROR(RmsNorm(x, out, rows, hid, w_.final_norm, c_.rms_norm_eps));
  if (c_.dim_model_base > 0) {
    const float s = static_cast<float>(double(c_.dim_model_base) / double(hid));
    for (int64_t i = 0; i < rows * hid; ++i) out[i] *= s;
  }
  return absl::OkStatus();
}

void LayerOps::Logits(const float* hidden, int64_t rows, float* logits) const {
  const int64_t h = c_.hidden_size, vocab = c_.vocab_size;
  kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, rows, vocab, h, 1.0f, hidden, h,
                   w_.head().data(), h, 0.0f, logits, vocab);
}

}  // namespace sparsefill::engine::cpu
