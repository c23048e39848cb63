// The cpu backend: the reference forward pass, fp32 everywhere, GEMMs through the BLAS,
// attention and selection through the kernels' references.
#include "services/engine/cpu/cpu_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/engine/cpu/cpu_weights.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/quality.h"
#include "sparsefill/engine/selection.h"
#include "sparsefill/kernels/activation.h"
#include "sparsefill/kernels/attention.h"
#include "sparsefill/kernels/gemm.h"
#include "sparsefill/kernels/norm.h"
#include "sparsefill/kernels/rope.h"

namespace sparsefill::engine::cpu {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// y[rows, out] = x[rows, in] (row stride ldx) . W[out, in]^T (+ b)
void Linear(const float* x, int64_t ldx, int64_t rows, const std::vector<float>& w, int64_t in,
            int64_t out, const std::vector<float>& bias, float* y) {
  kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, rows, out, in, 1.0f, x, ldx,
                   w.data(), in, 0.0f, y, out);
  if (!bias.empty()) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y + r * out;
      for (int64_t j = 0; j < out; ++j) yr[j] += bias[static_cast<size_t>(j)];
    }
  }
}

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

class CpuRunner final : public ModelRunner {
 public:
  CpuRunner(ModelConfig config, Weights weights)
      : config_(std::move(config)), weights_(std::move(weights)) {}

  std::string_view backend_name() const override { return "cpu"; }

  BackendCapabilities Capabilities() const override {
    BackendCapabilities caps;
    caps.sparse_attention = true;
    caps.measure = true;
    caps.compute_dtypes = {DType::kF32};
    return caps;
  }

  absl::StatusOr<PrefillResult> Run(const PrefillPlan& plan, std::span<const int32_t> tokens,
                                    std::span<const uint8_t> punct, const RunOptions& options,
                                    LayerSink* sink) override;

  absl::StatusOr<std::vector<float>> Logits(std::span<const float> hidden,
                                            int64_t rows) override {
    const int64_t h = config_.hidden_size, vocab = config_.vocab_size;
    if (static_cast<int64_t>(hidden.size()) != rows * h) {
      return absl::InvalidArgumentError(absl::StrCat("Logits: hidden has ", hidden.size(),
                                                     " values, expected rows * hidden = ",
                                                     rows * h));
    }
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, rows, vocab, h, 1.0f,
                     hidden.data(), h, weights_.head().data(), h, 0.0f, logits.data(), vocab);
    return logits;
  }

 private:
  ModelConfig config_;
  Weights weights_;
};

absl::StatusOr<PrefillResult> CpuRunner::Run(const PrefillPlan& plan,
                                             std::span<const int32_t> tokens,
                                             std::span<const uint8_t> punct,
                                             const RunOptions& options, LayerSink* sink) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n != plan.num_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan is for ", plan.num_tokens, " tokens, got ", n));
  }
  const int64_t hid = c.hidden_size, d = c.head_dim, inter = c.intermediate_size;
  const int32_t hq = c.num_heads, hkv = c.num_kv_heads;
  const int64_t qd = int64_t{hq} * d, kvd = int64_t{hkv} * d;
  const float residual_scale =
      c.scale_depth > 0 ? static_cast<float>(c.scale_depth / std::sqrt(double(c.num_layers)))
                        : 1.0f;

  PrefillResult result;
  result.plan = plan;
  const auto t_start = Clock::now();
  double measure_seconds = 0;

  // Embedding (MiniCPM scales it).
  std::vector<float> x(static_cast<size_t>(n * hid));
  const float emb_scale = static_cast<float>(c.scale_emb);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    const float* src = weights_.embed.data() + int64_t{tokens[static_cast<size_t>(t)]} * hid;
    float* dst = x.data() + t * hid;
    for (int64_t j = 0; j < hid; ++j) dst[j] = src[j] * emb_scale;
  }

  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) positions[static_cast<size_t>(t)] = t;
  float attention_scaling = 1.0f;
  const std::vector<float> inv_freq = RopeInvFreq(c, n, &attention_scaling);

  std::vector<float> h(static_cast<size_t>(n * hid));
  std::vector<float> q(static_cast<size_t>(n * qd)), k(static_cast<size_t>(n * kvd)),
      v(static_cast<size_t>(n * kvd)), attn(static_cast<size_t>(n * qd));
  const int64_t chunk = std::max<int64_t>(1, std::min(n, plan.mlp_chunk_tokens));
  std::vector<float> gate_up(static_cast<size_t>(chunk * 2 * inter));
  std::vector<float> delta(static_cast<size_t>(n * hid));

  kernels::AttentionParams ap;
  ap.q = q.data();
  ap.k = k.data();
  ap.v = v.data();
  ap.out = attn.data();
  ap.num_q = n;
  ap.num_kv = n;
  ap.q_pos0 = 0;
  ap.q_heads = hq;
  ap.kv_heads = hkv;
  ap.head_dim = static_cast<int32_t>(d);
  ap.scale = 1.0f / std::sqrt(static_cast<float>(d));
  ap.dtype = DType::kF32;

  const int64_t dense_causal = int64_t{hkv} * n * (n + 1) / 2;

  for (int32_t li = 0; li < c.num_layers; ++li) {
    const LayerWeights& w = weights_.layers[static_cast<size_t>(li)];
    const auto t_layer = Clock::now();
    double layer_measure = 0;
    LayerStats stats;
    stats.layer = li;

    // Attention block.
    SF_RETURN_IF_ERROR(RmsNorm(x.data(), h.data(), n, hid, w.input_norm, c.rms_norm_eps));
    Linear(h.data(), hid, n, w.wq, hid, qd, w.bq, q.data());
    Linear(h.data(), hid, n, w.wk, hid, kvd, w.bk, k.data());
    Linear(h.data(), hid, n, w.wv, hid, kvd, w.bv, v.data());
    if (c.qk_norm) {
      SF_RETURN_IF_ERROR(RmsNorm(q.data(), q.data(), n * hq, d, w.q_norm, c.rms_norm_eps));
      SF_RETURN_IF_ERROR(RmsNorm(k.data(), k.data(), n * hkv, d, w.k_norm, c.rms_norm_eps));
    }
    for (auto [buf, heads] : {std::pair{q.data(), hq}, std::pair{k.data(), hkv}}) {
      kernels::RopeParams rp;
      rp.x = buf;
      rp.positions = positions.data();
      rp.inv_freq = inv_freq.data();
      rp.tokens = n;
      rp.heads = heads;
      rp.head_dim = static_cast<int32_t>(d);
      rp.rotary_dim = static_cast<int32_t>(d);
      rp.attention_scaling = attention_scaling;
      rp.dtype = DType::kF32;
      SF_RETURN_IF_ERROR(kernels::RopeRef(rp));
    }

    LayerSelectionInput in;
    in.q = q.data();
    in.k = k.data();
    in.num_q = n;
    in.num_kv = n;
    in.q_pos0 = 0;
    in.q_heads = hq;
    in.kv_heads = hkv;
    in.head_dim = static_cast<int32_t>(d);
    in.scale = ap.scale;
    in.punct = punct.empty() ? nullptr : punct.data();
    std::vector<float> importance;  // query-agnostic block ranking (NOSA computes it anyway)

    if (plan.dense) {
      SF_RETURN_IF_ERROR(kernels::DenseAttentionRef(ap));
      stats.selected_keys = stats.causal_keys = dense_causal;
      if (options.information_loss) stats.information_loss = 0.0;
      if (options.attention_sample_queries > 0) stats.attention_rel_l2 = 0.0;
    } else {
      SF_ASSIGN_OR_RETURN(LayerSelection sel, SelectLayer(plan.selection, in));
      importance = std::move(sel.block_importance);
      SF_RETURN_IF_ERROR(kernels::SparseAttentionRef(ap, sel.view()));
      stats.selected_keys = sel.selected_keys;
      stats.causal_keys = sel.causal_keys;

      const auto t_measure = Clock::now();
      if (options.information_loss) {
        SF_ASSIGN_OR_RETURN(InformationLossSum loss, InformationLoss(ap, sel.view()));
        stats.information_loss = loss.mean();
      }
      if (options.attention_sample_queries > 0) {
        const int64_t s = std::min<int64_t>(options.attention_sample_queries, n);
        std::vector<float> ref(static_cast<size_t>(s * qd));
        kernels::AttentionParams dp = ap;
        dp.q = q.data() + (n - s) * qd;
        dp.out = ref.data();
        dp.num_q = s;
        dp.q_pos0 = n - s;
        SF_RETURN_IF_ERROR(kernels::DenseAttentionRef(dp));
        SF_ASSIGN_OR_RETURN(
            stats.attention_rel_l2,
            RelativeL2(std::span<const float>(attn).subspan(static_cast<size_t>((n - s) * qd)),
                       ref));
      }
      layer_measure = SecondsSince(t_measure);
    }
    stats.sparsity = stats.causal_keys > 0
                         ? 1.0 - double(stats.selected_keys) / double(stats.causal_keys)
                         : 0.0;
    stats.context_sparsity = 1.0 - double(stats.selected_keys) / (double(hkv) * n * n);

    Linear(attn.data(), qd, n, w.wo, qd, hid, {}, delta.data());
    AddScaled(x.data(), delta.data(), n * hid, residual_scale);

    // MLP block over row chunks, so the [rows, 2 * intermediate] buffer stays bounded.
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
      const int64_t rows = std::min(chunk, n - r0);
      SF_RETURN_IF_ERROR(RmsNorm(x.data() + r0 * hid, h.data() + r0 * hid, rows, hid,
                                 w.post_norm, c.rms_norm_eps));
      Linear(h.data() + r0 * hid, hid, rows, w.w_gate_up, hid, 2 * inter, {}, gate_up.data());
      kernels::SwiGluParams sp;
      sp.gate = gate_up.data();
      sp.up = gate_up.data() + inter;
      sp.out = gate_up.data();  // in place over the gate half
      sp.rows = rows;
      sp.dim = static_cast<int32_t>(inter);
      sp.gate_stride = sp.up_stride = sp.out_stride = 2 * inter;
      sp.dtype = DType::kF32;
      SF_RETURN_IF_ERROR(kernels::SwiGluRef(sp));
      kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, rows, hid, inter, 1.0f,
                       gate_up.data(), 2 * inter, w.w_down.data(), inter, 0.0f,
                       delta.data() + r0 * hid, hid);
    }
    AddScaled(x.data(), delta.data(), n * hid, residual_scale);

    if (sink != nullptr) {
      const int32_t bs = plan.selection.block_size;
      LayerKv kv;
      kv.layer = li;
      kv.token_begin = 0;
      kv.num_tokens = n;
      kv.kv_heads = hkv;
      kv.head_dim = static_cast<int32_t>(d);
      kv.k = k.data();
      kv.v = v.data();
      kv.block_size = bs;
      kv.num_blocks = (n + bs - 1) / bs;
      if (importance.empty()) {
        SF_ASSIGN_OR_RETURN(importance, ComputeBlockImportance(in, bs, plan.selection.nosa_observe));
      }
      kv.block_importance = importance.data();
      SF_RETURN_IF_ERROR(sink->OnLayer(kv));
    }
    measure_seconds += layer_measure;
    stats.seconds = SecondsSince(t_layer) - layer_measure;
    result.selected_keys += stats.selected_keys;
    result.causal_keys += stats.causal_keys;
    result.layers.push_back(stats);
  }

  // Final norm (MiniCPM divides by hidden / dim_model_base), then logits of the last positions.
  const int64_t out_rows = std::min<int64_t>(
      n, std::max<int64_t>(options.logits_positions, options.final_rows));
  std::vector<float> last(static_cast<size_t>(out_rows * hid));
  SF_RETURN_IF_ERROR(RmsNorm(x.data() + (n - out_rows) * hid, last.data(), out_rows, hid,
                             weights_.final_norm, c.rms_norm_eps));
  if (c.dim_model_base > 0) {
    const float s = static_cast<float>(double(c.dim_model_base) / double(hid));
    for (auto& e : last) e *= s;
  }
  const int64_t lrows = std::min<int64_t>(out_rows, std::max(options.logits_positions, 0));
  SF_ASSIGN_OR_RETURN(result.logits,
                      Logits(std::span<const float>(last).subspan(
                                 static_cast<size_t>((out_rows - lrows) * hid)),
                             lrows));
  if (options.final_hidden != nullptr) {
    const int64_t fr = std::min<int64_t>(options.final_rows, out_rows);
    options.final_hidden->assign(last.end() - fr * hid, last.end());
  }

  result.seconds = SecondsSince(t_start) - measure_seconds;
  result.tokens_per_second = result.seconds > 0 ? double(n) / result.seconds : 0.0;
  result.sparsity = result.causal_keys > 0
                        ? 1.0 - double(result.selected_keys) / double(result.causal_keys)
                        : 0.0;
  result.context_sparsity =
      1.0 - double(result.selected_keys) / (double(hkv) * n * n * c.num_layers);
  return result;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRunner>> CreateCpuRunner(const Checkpoint& checkpoint) {
  SF_ASSIGN_OR_RETURN(Weights weights, LoadWeights(checkpoint));
  return std::unique_ptr<ModelRunner>(new CpuRunner(checkpoint.config(), std::move(weights)));
}

}  // namespace sparsefill::engine::cpu
