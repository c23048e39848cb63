// The cuda backend. One rank per process (a sharded prefill over several GPUs arrives with the
// multi-GPU transport); per layer, on the compute stream:
//   input norm -> Q/K/V GEMMs (+ bias) -> q/k norm -> RoPE -> attention (dense, or block
//   summaries -> [NOSA importance] -> selection -> sparse attention) -> o-proj + residual ->
//   MLP in row chunks (norm, gate/up GEMM, SwiGLU, down GEMM, residual);
// then, on the copy stream, the layer's K/V (two device slots, alternating) is widened to fp32
// and copied to pinned host memory with the block importance and the key counters, and the host
// hands it to the sink while the device computes the next layer. The host never waits for the
// layer it just queued, only for the one before it.
#include "services/engine/cuda/cuda_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/engine/cuda/cuda_resources.h"
#include "services/engine/cuda/cuda_weights.h"
#include "services/engine/cuda/engine_kernels.h"
#include "services/engine/cuda/lt_gemm.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/selection.h"
#include "sparsefill/kernels/activation.h"
#include "sparsefill/kernels/attention.h"
#include "sparsefill/kernels/norm.h"
#include "sparsefill/kernels/rope.h"
#include "sparsefill/kernels/selection.h"

namespace sparsefill::engine::cuda {
namespace {

using Clock = std::chrono::steady_clock;

// Rows per MLP chunk on the device: large enough for full-rate GEMMs, small enough that the
// [chunk, 2 * intermediate] buffer stays under a GiB for 8B-class models.
constexpr int64_t kDeviceMlpChunk = 16384;

struct Sizes {
  int64_t n = 0, hid = 0, d = 0, qd = 0, kvd = 0, inter = 0, chunk = 0;
  int32_t hq = 0, hkv = 0;
  float rope_scaling = 1.0f;  // LongRoPE's mscale (RopeInvFreq)
};

// PrefillOptions::profile_stages: an event on the compute stream at the end of each stage; once
// the stream has finished, the time between consecutive events is charged to the stage that
// ended at the later one and summed per stage name.
class StageTimer {
 public:
  absl::Status Mark(const char* stage, cudaStream_t st) {
    SF_ASSIGN_OR_RETURN(Event e, Event::Create(/*timing=*/true));
    SF_CUDA_RETURN_IF_ERROR(cudaEventRecord(e.get(), st), "stage event");
    marks_.push_back({stage, std::move(e)});
    return absl::OkStatus();
  }
  // Seconds per stage in first-seen order (the first mark only starts the clock).
  absl::StatusOr<std::vector<StageTime>> Collect() const {
    std::vector<StageTime> out;
    for (size_t i = 1; i < marks_.size(); ++i) {
      float ms = 0;
      SF_CUDA_RETURN_IF_ERROR(
          cudaEventElapsedTime(&ms, marks_[i - 1].event.get(), marks_[i].event.get()),
          "stage timing");
      auto it = std::find_if(out.begin(), out.end(),
                             [&](const StageTime& t) { return t.name == marks_[i].stage; });
      if (it == out.end()) it = out.insert(out.end(), StageTime{marks_[i].stage, 0.0});
      it->seconds += ms / 1e3;
    }
    return out;
  }

 private:
  struct MarkRecord {
    const char* stage;
    Event event;
  };
  std::vector<MarkRecord> marks_;
};

// Everything one prefill allocates on the device and in pinned host memory.
struct RunBuffers {
  DeviceBuffer tokens, positions, inv_freq, punct;
  DeviceBuffer x, h, q, attn, gate_up, down;
  DeviceBuffer k[2], v[2];
  DeviceBuffer summaries, blocks, select_ws;
  DeviceBuffer importance[2], importance_ws;
  DeviceBuffer counters;  // [2 slots][selected, computed] u64
  DeviceBuffer kv_f32;    // [2, n, kvd] fp32: K then V, widened for the sink
  PinnedBuffer host_kv[2];
  PinnedBuffer host_importance[2];
  PinnedBuffer host_counters;  // [2 slots][selected, computed] u64
  size_t device_bytes = 0;
};

class CudaRunner final : public ModelRunner {
 public:
  CudaRunner(ModelConfig config, DeviceWeights weights, std::unique_ptr<LtGemm> gemm,
             Stream compute, Stream copy)
      : config_(std::move(config)),
        residual_scale_(static_cast<float>(config_.ResidualScale())),
        weights_(std::move(weights)),
        gemm_(std::move(gemm)),
        compute_(std::move(compute)),
        copy_(std::move(copy)) {}

  std::string_view backend_name() const override { return "cuda"; }

  BackendCapabilities Capabilities() const override {
    BackendCapabilities caps;
    caps.sparse_attention = true;
    caps.measure = false;
    caps.compute_dtypes = {DType::kBF16};
    return caps;
  }

  absl::StatusOr<PrefillResult> Run(const PrefillPlan& plan, std::span<const int32_t> tokens,
                                    std::span<const uint8_t> punct, const RunOptions& options,
                                    LayerSink* sink) override {
    SF_ASSIGN_OR_RETURN(ShardPrefillResult r, RunOne(plan, tokens, punct, options, sink));
    return std::move(r.prompt);
  }

  absl::StatusOr<ShardPrefillResult> RunShard(const PrefillPlan& plan,
                                              std::span<const int32_t> tokens,
                                              std::span<const uint8_t> punct,
                                              ShardExchange& exchange, const RunOptions& options,
                                              LayerSink* sink) override {
    if (exchange.world_size() != 1) {
      absl::Status s = absl::UnimplementedError(
          absl::StrCat("the cuda backend runs a prompt on one rank; this prefill has ",
                       exchange.world_size(), " (use one worker per prompt, or --backend cpu)"));
      exchange.Abort(s);
      return s;
    }
    return RunOne(plan, tokens, punct, options, sink);
  }

  absl::StatusOr<std::vector<float>> Logits(std::span<const float> hidden, int64_t rows) override {
    const int64_t h = config_.hidden_size, vocab = config_.vocab_size;
    if (static_cast<int64_t>(hidden.size()) != rows * h) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Logits: hidden has ", hidden.size(), " values, expected rows * hidden = ", rows * h));
    }
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    if (rows == 0) return logits;
    std::vector<uint16_t> bf(hidden.size());
    ConvertFromF32(hidden.data(), DType::kBF16, bf.data(), bf.size());
    SF_ASSIGN_OR_RETURN(DeviceBuffer x, DeviceBuffer::Allocate(bf.size() * 2, "logits input"));
    SF_ASSIGN_OR_RETURN(DeviceBuffer y, DeviceBuffer::Allocate(logits.size() * 4, "logits"));
    SF_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(x.get(), bf.data(), bf.size() * 2, cudaMemcpyHostToDevice, compute_.get()),
        "logits upload");
    SF_RETURN_IF_ERROR(LmHead(x.get(), rows, y.as<float>()));
    SF_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.data(), y.get(), logits.size() * 4,
                                            cudaMemcpyDeviceToHost, compute_.get()),
                            "logits download");
    SF_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(compute_.get()), "logits");
    return logits;
  }

 private:
  absl::StatusOr<ShardPrefillResult> RunOne(const PrefillPlan& plan,
                                            std::span<const int32_t> tokens,
                                            std::span<const uint8_t> punct,
                                            const RunOptions& options, LayerSink* sink);
  // The buffers whose size depends on the prompt length only.
  absl::StatusOr<RunBuffers> Allocate(const Sizes& s);
  // The policy's own (selection lists, summaries, importance), grown when a plan needs more.
  absl::Status EnsurePolicyBuffers(const PrefillPlan& plan, const Sizes& s, bool importance,
                                   RunBuffers& b);
  absl::Status Layer(int32_t li, const PrefillPlan& plan, const Sizes& s, RunBuffers& b, int slot,
                     bool want_importance, float lambda, StageTimer* timer);
  absl::Status Mlp(int32_t li, const Sizes& s, RunBuffers& b);
  absl::Status LmHead(const void* normed, int64_t rows, float* logits) {
    LinearArgs a;
    a.x = normed;
    a.w = weights_.head().get();
    a.y = logits;
    a.rows = rows;
    a.in = config_.hidden_size;
    a.out = config_.vocab_size;
    a.ldx = a.in;
    a.ldy = a.out;
    a.y_dtype = DType::kF32;
    return gemm_->Linear(a, compute_.get());
  }
  absl::Status Linear(const void* x, int64_t ldx, int64_t rows, const DeviceBuffer& w, int64_t in,
                      int64_t out, const DeviceBuffer& bias, void* y, int64_t ldy) {
    LinearArgs a;
    a.x = x;
    a.w = w.get();
    a.bias = bias.bytes() > 0 ? bias.get() : nullptr;
    a.y = y;
    a.rows = rows;
    a.in = in;
    a.out = out;
    a.ldx = ldx;
    a.ldy = ldy;
    return gemm_->Linear(a, compute_.get());
  }
  absl::Status Norm(const void* x, int64_t rows, int64_t dim, int64_t x_stride,
                    const DeviceBuffer& w, void* out, int64_t out_stride) {
    kernels::RmsNormParams p;
    p.x = x;
    p.weight = w.get();
    p.out = out;
    p.rows = rows;
    p.dim = static_cast<int32_t>(dim);
    p.x_stride = x_stride;
    p.out_stride = out_stride;
    p.eps = static_cast<float>(config_.rms_norm_eps);
    p.dtype = DType::kBF16;
    return kernels::LaunchRmsNorm(p, compute_.get());
  }

  ModelConfig config_;
  const float residual_scale_;  // MiniCPM's scale_depth / sqrt(layers); 1 for the others
  DeviceWeights weights_;
  std::unique_ptr<LtGemm> gemm_;
  Stream compute_, copy_;
  std::unique_ptr<RunBuffers> cached_;
  int64_t cached_tokens_ = -1;
};

absl::StatusOr<RunBuffers> CudaRunner::Allocate(const Sizes& s) {
  RunBuffers b;
  auto dev = [&](DeviceBuffer& buf, size_t bytes, const char* what) -> absl::Status {
    SF_ASSIGN_OR_RETURN(buf, DeviceBuffer::Allocate(bytes, what));
    b.device_bytes += bytes;
    return absl::OkStatus();
  };
  const size_t n = size_t(s.n);
  SF_RETURN_IF_ERROR(dev(b.tokens, n * 4, "tokens"));
  SF_RETURN_IF_ERROR(dev(b.positions, n * 8, "positions"));
  SF_RETURN_IF_ERROR(dev(b.inv_freq, size_t(s.d / 2) * 4, "rope table"));
  SF_RETURN_IF_ERROR(dev(b.x, n * s.hid * 2, "hidden states"));
  SF_RETURN_IF_ERROR(dev(b.h, n * s.hid * 2, "normed hidden states"));
  SF_RETURN_IF_ERROR(dev(b.q, n * s.qd * 2, "queries"));
  SF_RETURN_IF_ERROR(dev(b.attn, n * s.qd * 2, "attention output"));
  SF_RETURN_IF_ERROR(dev(b.gate_up, size_t(s.chunk) * 2 * s.inter * 2, "MLP gate/up"));
  SF_RETURN_IF_ERROR(dev(b.down, size_t(s.chunk) * s.hid * 2, "MLP output"));
  for (int i = 0; i < 2; ++i) {
    SF_RETURN_IF_ERROR(dev(b.k[i], n * s.kvd * 2, "keys"));
    SF_RETURN_IF_ERROR(dev(b.v[i], n * s.kvd * 2, "values"));
  }
  SF_RETURN_IF_ERROR(dev(b.counters, 32, "key counters"));
  SF_RETURN_IF_ERROR(dev(b.kv_f32, n * s.kvd * 2 * 4, "fp32 K/V for the sink"));
  for (int i = 0; i < 2; ++i) {
    SF_ASSIGN_OR_RETURN(b.host_kv[i], PinnedBuffer::Allocate(n * s.kvd * 2 * 4, "host K/V"));
  }
  SF_ASSIGN_OR_RETURN(b.host_counters, PinnedBuffer::Allocate(32, "host counters"));
  return b;
}

absl::Status CudaRunner::EnsurePolicyBuffers(const PrefillPlan& plan, const Sizes& s,
                                             bool importance, RunBuffers& b) {
  const SelectionConfig& sel = plan.selection;
  auto grow = [&](DeviceBuffer& buf, size_t bytes, const char* what) -> absl::Status {
    if (buf.bytes() >= bytes) return absl::OkStatus();
    buf = DeviceBuffer();  // free first
    SF_ASSIGN_OR_RETURN(buf, DeviceBuffer::Allocate(bytes, what));
    return absl::OkStatus();
  };
  const int64_t blocks = (s.n + sel.block_size - 1) / sel.block_size;
  if (importance) {
    for (int i = 0; i < 2; ++i) {
      SF_RETURN_IF_ERROR(grow(b.importance[i], size_t(s.hkv * blocks) * 4, "block importance"));
      if (b.host_importance[i].bytes() < size_t(s.hkv * blocks) * 4) {
        SF_ASSIGN_OR_RETURN(b.host_importance[i],
                            PinnedBuffer::Allocate(size_t(s.hkv * blocks) * 4, "host importance"));
      }
    }
    const int64_t obs = std::min<int64_t>(std::max(sel.nosa_observe, 1), s.n);
    SF_RETURN_IF_ERROR(grow(b.importance_ws, size_t(ImportanceWorkspaceFloats(obs, s.hq, s.n)) * 4,
                            "importance workspace"));
  }
  if (!plan.dense) {
    const int64_t chunks = kernels::NumCompressedChunks(s.n, sel.kernel_size, sel.kernel_stride);
    SF_RETURN_IF_ERROR(
        grow(b.summaries, size_t(std::max<int64_t>(chunks, 1) * s.kvd) * 2, "block summaries"));
    SF_RETURN_IF_ERROR(grow(b.blocks, size_t(s.hkv) * size_t(s.n) * sel.topk * 4, "block lists"));
  }
  return absl::OkStatus();
}

absl::Status CudaRunner::Mlp(int32_t li, const Sizes& s, RunBuffers& b) {
  const DeviceLayerWeights& w = weights_.layers[static_cast<size_t>(li)];
  const float rs = residual_scale_;
  uint16_t* x = b.x.as<uint16_t>();
  uint16_t* h = b.h.as<uint16_t>();
  uint16_t* gu = b.gate_up.as<uint16_t>();
  uint16_t* down = b.down.as<uint16_t>();
  for (int64_t r0 = 0; r0 < s.n; r0 += s.chunk) {
    const int64_t rows = std::min(s.chunk, s.n - r0);
    SF_RETURN_IF_ERROR(Norm(x + r0 * s.hid, rows, s.hid, s.hid, w.post_norm, h, s.hid));
    SF_RETURN_IF_ERROR(
        Linear(h, s.hid, rows, w.w_gate_up, s.hid, 2 * s.inter, {}, gu, 2 * s.inter));
    kernels::SwiGluParams sp;
    sp.gate = gu;
    sp.up = gu + s.inter;
    sp.out = gu;  // in place over the gate half
    sp.rows = rows;
    sp.dim = static_cast<int32_t>(s.inter);
    sp.gate_stride = sp.up_stride = sp.out_stride = 2 * s.inter;
    sp.dtype = DType::kBF16;
    SF_RETURN_IF_ERROR(kernels::LaunchSwiGlu(sp, compute_.get()));
    SF_RETURN_IF_ERROR(Linear(gu, 2 * s.inter, rows, w.w_down, s.inter, s.hid, {}, down, s.hid));
    SF_RETURN_IF_ERROR(LaunchAddScaled(x + r0 * s.hid, down, rows * s.hid, rs, compute_.get()));
  }
  return absl::OkStatus();
}

absl::Status CudaRunner::Layer(int32_t li, const PrefillPlan& plan, const Sizes& s, RunBuffers& b,
                               int slot, bool want_importance, float lambda, StageTimer* timer) {
  const DeviceLayerWeights& w = weights_.layers[static_cast<size_t>(li)];
  const SelectionConfig& sel = plan.selection;
  cudaStream_t st = compute_.get();
  uint16_t* x = b.x.as<uint16_t>();
  uint16_t* h = b.h.as<uint16_t>();
  uint16_t* q = b.q.as<uint16_t>();
  uint16_t* k = b.k[slot].as<uint16_t>();
  uint16_t* v = b.v[slot].as<uint16_t>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.d));
  const auto mark = [&](const char* stage) {
    return timer != nullptr ? timer->Mark(stage, st) : absl::OkStatus();
  };

  SF_RETURN_IF_ERROR(Norm(x, s.n, s.hid, s.hid, w.input_norm, h, s.hid));
  SF_RETURN_IF_ERROR(Linear(h, s.hid, s.n, w.wq, s.hid, s.qd, w.bq, q, s.qd));
  SF_RETURN_IF_ERROR(Linear(h, s.hid, s.n, w.wk, s.hid, s.kvd, w.bk, k, s.kvd));
  SF_RETURN_IF_ERROR(Linear(h, s.hid, s.n, w.wv, s.hid, s.kvd, w.bv, v, s.kvd));
  if (config_.qk_norm) {
    SF_RETURN_IF_ERROR(Norm(q, s.n * s.hq, s.d, s.d, w.q_norm, q, s.d));
    SF_RETURN_IF_ERROR(Norm(k, s.n * s.hkv, s.d, s.d, w.k_norm, k, s.d));
  }
  for (auto [buf, heads] : {std::pair{q, s.hq}, std::pair{k, s.hkv}}) {
    kernels::RopeParams rp;
    rp.x = buf;
    rp.positions = b.positions.as<int64_t>();
    rp.inv_freq = b.inv_freq.as<float>();
    rp.tokens = s.n;
    rp.heads = heads;
    rp.head_dim = static_cast<int32_t>(s.d);
    rp.rotary_dim = static_cast<int32_t>(s.d);
    rp.attention_scaling = s.rope_scaling;
    rp.dtype = DType::kBF16;
    SF_RETURN_IF_ERROR(kernels::LaunchRope(rp, st));
  }
  SF_RETURN_IF_ERROR(mark("norm + qkv + rope"));

  const int64_t num_blocks = (s.n + sel.block_size - 1) / sel.block_size;
  if (want_importance) {
    const int64_t obs = std::min<int64_t>(std::max(sel.nosa_observe, 1), s.n);
    DeviceImportanceParams ip;
    ip.q = q + (s.n - obs) * s.qd;
    ip.k = k;
    ip.importance = b.importance[slot].as<float>();
    ip.workspace = b.importance_ws.as<float>();
    ip.num_q = obs;
    ip.q_pos0 = s.n - obs;
    ip.num_kv = s.n;
    ip.q_heads = s.hq;
    ip.kv_heads = s.hkv;
    ip.head_dim = static_cast<int32_t>(s.d);
    ip.block_size = sel.block_size;
    ip.scale = scale;
    SF_RETURN_IF_ERROR(LaunchBlockImportance(ip, st));
    SF_RETURN_IF_ERROR(mark("block importance"));
  }

  kernels::AttentionParams ap;
  ap.q = q;
  ap.k = k;
  ap.v = v;
  ap.out = b.attn.get();
  ap.num_q = s.n;
  ap.num_kv = s.n;
  ap.q_pos0 = 0;
  ap.q_heads = s.hq;
  ap.kv_heads = s.hkv;
  ap.head_dim = static_cast<int32_t>(s.d);
  ap.scale = scale;
  ap.dtype = DType::kBF16;
  if (plan.dense) {
    SF_RETURN_IF_ERROR(kernels::LaunchDenseAttention(ap, st));
    SF_RETURN_IF_ERROR(mark("dense attention"));
  } else {
    kernels::BlockSummaryCudaParams sp;
    sp.k = k;
    sp.punct = lambda < 1.0f ? b.punct.as<uint8_t>() : nullptr;
    sp.summaries = b.summaries.get();
    sp.num_kv = s.n;
    sp.k_pos0 = 0;
    sp.kv_heads = s.hkv;
    sp.head_dim = static_cast<int32_t>(s.d);
    sp.kernel_size = sel.kernel_size;
    sp.kernel_stride = sel.kernel_stride;
    sp.lambda = lambda;
    SF_RETURN_IF_ERROR(kernels::LaunchBlockSummaries(sp, st));
    SF_RETURN_IF_ERROR(mark("block summaries"));
    kernels::SelectBlocksCudaParams p;
    p.q = q;
    p.summaries = b.summaries.get();
    p.blocks = b.blocks.as<int32_t>();
    p.num_q = s.n;
    p.q_pos0 = 0;
    p.num_chunks = kernels::NumCompressedChunks(s.n, sel.kernel_size, sel.kernel_stride);
    p.q_heads = s.hq;
    p.kv_heads = s.hkv;
    p.head_dim = static_cast<int32_t>(s.d);
    p.scale = scale;
    p.kernel_size = sel.kernel_size;
    p.kernel_stride = sel.kernel_stride;
    p.block_size = sel.block_size;
    p.init_blocks = sel.init_blocks;
    p.local_blocks = sel.local_blocks();
    p.topk = sel.topk;
    p.query_aware = sel.topk;
    if (sel.policy == Policy::kNosa) {
      p.query_aware = sel.nosa_query_aware;
      p.block_importance = b.importance[slot].as<float>();
      p.importance_blocks = num_blocks;
    }
    const size_t ws = kernels::SelectBlocksWorkspaceBytes(p);
    if (b.select_ws.bytes() < ws) {
      SF_ASSIGN_OR_RETURN(b.select_ws, DeviceBuffer::Allocate(ws, "selection workspace"));
    }
    SF_RETURN_IF_ERROR(kernels::LaunchSelectBlocks(p, b.select_ws.get(), b.select_ws.bytes(), st));
    SF_RETURN_IF_ERROR(LaunchCountSelectedKeys(b.blocks.as<int32_t>(), s.hkv, s.n, sel.topk, 0,
                                               sel.block_size,
                                               b.counters.as<unsigned long long>() + 2 * slot, st));
    SF_RETURN_IF_ERROR(mark("selection"));
    SF_RETURN_IF_ERROR(kernels::LaunchSparseAttention(
        ap,
        kernels::BlockSelection{b.blocks.as<int32_t>(), sel.topk, sel.block_size,
                                b.counters.as<unsigned long long>() + 2 * slot + 1},
        st));
    SF_RETURN_IF_ERROR(mark("sparse attention"));
  }

  const float rs = residual_scale_;
  SF_RETURN_IF_ERROR(Linear(b.attn.get(), s.qd, s.n, w.wo, s.qd, s.hid, {}, h, s.hid));
  SF_RETURN_IF_ERROR(LaunchAddScaled(x, h, s.n * s.hid, rs, st));
  SF_RETURN_IF_ERROR(mark("o-proj + residual"));
  SF_RETURN_IF_ERROR(Mlp(li, s, b));
  return mark("mlp");
}

absl::StatusOr<ShardPrefillResult> CudaRunner::RunOne(const PrefillPlan& plan,
                                                      std::span<const int32_t> tokens,
                                                      std::span<const uint8_t> punct,
                                                      const RunOptions& options, LayerSink* sink) {
  const ModelConfig& c = config_;
  const SelectionConfig& sel = plan.selection;
  Sizes s;
  s.n = static_cast<int64_t>(tokens.size());
  s.hid = c.hidden_size;
  s.d = c.head_dim;
  s.hq = c.num_heads;
  s.hkv = c.num_kv_heads;
  s.qd = int64_t{s.hq} * s.d;
  s.kvd = int64_t{s.hkv} * s.d;
  s.inter = c.intermediate_size;
  s.chunk = std::min(s.n, std::max<int64_t>(plan.mlp_chunk_tokens, kDeviceMlpChunk));
  if (s.n != plan.num_tokens || s.n == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan is for ", plan.num_tokens, " tokens, got ", s.n));
  }
  if (plan.num_layers != c.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("the plan has ", plan.num_layers, " layers, the model ", c.num_layers));
  }
  if (options.information_loss || options.attention_sample_queries > 0) {
    return absl::UnimplementedError(
        "the cuda backend does not measure information loss or attention error yet; "
        "measure with --backend cpu");
  }
  if (!punct.empty() && punct.size() != tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat("punctuation mask has ", punct.size(),
                                                   " entries for ", tokens.size(), " tokens"));
  }
  const bool nosa = !plan.dense && sel.policy == Policy::kNosa;
  const bool want_importance = nosa || sink != nullptr;
  const float lambda = !plan.dense && sel.policy == Policy::kPhsa ? sel.lambda : 1.0f;
  if (lambda < 1.0f && punct.empty()) {
    return absl::InvalidArgumentError("phsa with lambda < 1 needs the punctuation mask");
  }
  const bool bf16_sink = sink != nullptr && sink->AcceptsBf16();
  const auto t_start = Clock::now();
  // A failed earlier run may have left copies queued on the buffers about to be reused.
  SF_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(copy_.get()), "earlier copies");
  SF_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(compute_.get()), "earlier prefill");
  // Buffers are kept for the next prefill of the same shape (a server sees the same lengths
  // again; pinning host memory costs about as much as a short prefill).
  if (cached_ == nullptr || cached_tokens_ != s.n) {
    cached_.reset();  // free the old ones first
    SF_ASSIGN_OR_RETURN(RunBuffers fresh, Allocate(s));
    cached_ = std::make_unique<RunBuffers>(std::move(fresh));
    cached_tokens_ = s.n;
  }
  RunBuffers& b = *cached_;
  SF_RETURN_IF_ERROR(EnsurePolicyBuffers(plan, s, want_importance, b));
  cudaStream_t st = compute_.get();

  // Inputs.
  std::vector<int64_t> positions(static_cast<size_t>(s.n));
  for (int64_t t = 0; t < s.n; ++t) positions[static_cast<size_t>(t)] = t;
  const std::vector<float> inv_freq = RopeInvFreq(c, s.n, &s.rope_scaling);
  SF_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(b.tokens.get(), tokens.data(), tokens.size() * 4, cudaMemcpyHostToDevice, st),
      "token upload");
  SF_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(b.positions.get(), positions.data(), positions.size() * 8,
                                          cudaMemcpyHostToDevice, st),
                          "position upload");
  SF_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(b.inv_freq.get(), inv_freq.data(), inv_freq.size() * 4,
                                          cudaMemcpyHostToDevice, st),
                          "rope upload");
  if (lambda < 1.0f) {
    if (b.punct.bytes() != punct.size()) {
      SF_ASSIGN_OR_RETURN(b.punct, DeviceBuffer::Allocate(punct.size(), "punctuation mask"));
    }
    SF_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(b.punct.get(), punct.data(), punct.size(), cudaMemcpyHostToDevice, st),
        "punctuation upload");
  }
  SF_RETURN_IF_ERROR(LaunchEmbedRows(b.tokens.as<int32_t>(), weights_.embed.as<uint16_t>(),
                                     b.x.as<uint16_t>(), s.n, s.hid,
                                     static_cast<float>(c.scale_emb), st));

  std::vector<Event> start(static_cast<size_t>(c.num_layers)), end(start.size());
  Event copied[2];
  for (size_t i = 0; i < start.size(); ++i) {
    SF_ASSIGN_OR_RETURN(start[i], Event::Create(/*timing=*/true));
    SF_ASSIGN_OR_RETURN(end[i], Event::Create(/*timing=*/true));
  }
  for (Event& e : copied) {
    SF_ASSIGN_OR_RETURN(e, Event::Create());
  }

  ShardPrefillResult out;
  out.tokens = {0, s.n};
  PrefillResult& result = out.prompt;
  result.plan = plan;
  const int64_t num_blocks = (s.n + sel.block_size - 1) / sel.block_size;
  int64_t causal_per_layer = 0;
  for (int64_t t = 0; t < s.n; ++t) causal_per_layer += int64_t{s.hkv} * (t + 1);

  // Hands layer `li` (its copies queued on the copy stream) to the sink and records its stats.
  auto finish = [&](int32_t li) -> absl::Status {
    const int slot = li % 2;
    SF_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(copied[slot].get()), absl::StrCat("layer ", li));
    float ms = 0;
    SF_CUDA_RETURN_IF_ERROR(
        cudaEventElapsedTime(&ms, start[size_t(li)].get(), end[size_t(li)].get()), "layer timing");
    LayerStats stats;
    stats.layer = li;
    stats.causal_keys = causal_per_layer;
    const unsigned long long* counted = b.host_counters.as<unsigned long long>() + 2 * slot;
    stats.selected_keys = plan.dense ? causal_per_layer : static_cast<int64_t>(counted[0]);
    stats.computed_keys = plan.dense ? 0 : static_cast<int64_t>(counted[1]);
    stats.sparsity = 1.0 - double(stats.selected_keys) / double(stats.causal_keys);
    stats.context_sparsity = 1.0 - double(stats.selected_keys) / (double(s.hkv) * s.n * s.n);
    stats.seconds = ms / 1e3;
    ShardLayerPart part;
    part.layer = li;
    part.selected_keys = stats.selected_keys;
    part.causal_keys = stats.causal_keys;
    part.seconds = stats.seconds;
    if (sink != nullptr) {
      LayerKv lk;
      lk.layer = li;
      lk.token_begin = 0;
      lk.num_tokens = s.n;
      lk.kv_heads = s.hkv;
      lk.head_dim = static_cast<int32_t>(s.d);
      if (bf16_sink) {
        lk.k_bf16 = b.host_kv[slot].as<uint16_t>();
        lk.v_bf16 = lk.k_bf16 + s.n * s.kvd;
      } else {
        lk.k = b.host_kv[slot].as<float>();
        lk.v = lk.k + s.n * s.kvd;
      }
      lk.block_size = sel.block_size;
      lk.num_blocks = num_blocks;
      lk.block_importance = b.host_importance[slot].as<float>();
      lk.part = &part;
      SF_RETURN_IF_ERROR(sink->OnLayer(lk));
    }
    result.selected_keys += stats.selected_keys;
    result.causal_keys += stats.causal_keys;
    result.layers.push_back(stats);
    out.layers.push_back(part);
    return absl::OkStatus();
  };

  std::unique_ptr<StageTimer> timer;
  if (options.profile_stages) {
    timer = std::make_unique<StageTimer>();
    SF_RETURN_IF_ERROR(timer->Mark("start", st));
  }
  for (int32_t li = 0; li < c.num_layers; ++li) {
    const int slot = li % 2;
    // Slot `slot` was last used by layer li - 2, whose copies finished before finish(li - 2).
    SF_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(st, copied[slot].get(), 0), "slot reuse");
    // What the compute stream waited for the copies of layer li - 2 (0 when they kept up).
    if (timer != nullptr) {
      SF_RETURN_IF_ERROR(timer->Mark("wait for an offload slot", st));
    }
    SF_CUDA_RETURN_IF_ERROR(cudaEventRecord(start[size_t(li)].get(), st), "event");
    SF_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(b.counters.as<unsigned long long>() + 2 * slot, 0, 16, st),
        "counter reset");
    SF_RETURN_IF_ERROR(Layer(li, plan, s, b, slot, want_importance, lambda, timer.get()));
    SF_CUDA_RETURN_IF_ERROR(cudaEventRecord(end[size_t(li)].get(), st), "event");

    // The copy stream: K/V widened to fp32 and copied out with the importance and counters.
    cudaStream_t cp = copy_.get();
    SF_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(cp, end[size_t(li)].get(), 0), "copy wait");
    if (sink != nullptr && bf16_sink) {
      const size_t half = size_t(s.n * s.kvd) * 2;
      char* host = b.host_kv[slot].as<char>();
      SF_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(host, b.k[slot].get(), half, cudaMemcpyDeviceToHost, cp), "K download");
      SF_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(host + half, b.v[slot].get(), half, cudaMemcpyDeviceToHost, cp),
          "V download");
    } else if (sink != nullptr) {
      float* f32 = b.kv_f32.as<float>();
      SF_RETURN_IF_ERROR(LaunchBf16ToF32(b.k[slot].as<uint16_t>(), f32, s.n * s.kvd, cp));
      SF_RETURN_IF_ERROR(
          LaunchBf16ToF32(b.v[slot].as<uint16_t>(), f32 + s.n * s.kvd, s.n * s.kvd, cp));
      SF_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(b.host_kv[slot].get(), f32, b.kv_f32.bytes(), cudaMemcpyDeviceToHost, cp),
          "K/V download");
      SF_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(b.host_importance[slot].get(), b.importance[slot].get(),
                          size_t(s.hkv * num_blocks) * 4, cudaMemcpyDeviceToHost, cp),
          "importance download");
    }
    SF_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(b.host_counters.as<unsigned long long>() + 2 * slot,
                                            b.counters.as<unsigned long long>() + 2 * slot, 16,
                                            cudaMemcpyDeviceToHost, cp),
                            "counter download");
    SF_CUDA_RETURN_IF_ERROR(cudaEventRecord(copied[slot].get(), cp), "event");
    if (li > 0) SF_RETURN_IF_ERROR(finish(li - 1));
  }
  SF_RETURN_IF_ERROR(finish(c.num_layers - 1));

  // Final norm of the last rows; logits of the last logits_positions of them.
  const int64_t out_rows =
      std::min<int64_t>(s.n, std::max<int64_t>(options.logits_positions, options.final_rows));
  const int64_t lrows = std::min<int64_t>(out_rows, std::max(options.logits_positions, 0));
  const float final_scale =
      c.dim_model_base > 0 ? static_cast<float>(double(c.dim_model_base) / double(s.hid)) : 1.0f;
  if (out_rows > 0) {
    uint16_t* normed = b.h.as<uint16_t>();
    SF_RETURN_IF_ERROR(Norm(b.x.as<uint16_t>() + (s.n - out_rows) * s.hid, out_rows, s.hid, s.hid,
                            weights_.final_norm, normed, s.hid));
    if (lrows > 0) {
      SF_ASSIGN_OR_RETURN(DeviceBuffer logits,
                          DeviceBuffer::Allocate(size_t(lrows * c.vocab_size) * 4, "logits"));
      SF_RETURN_IF_ERROR(LmHead(normed + (out_rows - lrows) * s.hid, lrows, logits.as<float>()));
      result.logits.resize(size_t(lrows * c.vocab_size));
      SF_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(result.logits.data(), logits.get(), logits.bytes(),
                                              cudaMemcpyDeviceToHost, st),
                              "logits download");
      SF_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st), "logits");
      for (float& f : result.logits) f *= final_scale;
    }
    if (options.final_hidden != nullptr) {
      const int64_t f = std::min<int64_t>(options.final_rows, out_rows);
      SF_ASSIGN_OR_RETURN(DeviceBuffer wide,
                          DeviceBuffer::Allocate(size_t(f * s.hid) * 4, "final hidden states"));
      float* f32 = wide.as<float>();
      SF_RETURN_IF_ERROR(LaunchBf16ToF32(normed + (out_rows - f) * s.hid, f32, f * s.hid, st));
      options.final_hidden->resize(size_t(f * s.hid));
      SF_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(options.final_hidden->data(), f32,
                                              size_t(f * s.hid) * 4, cudaMemcpyDeviceToHost, st),
                              "hidden download");
      SF_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st), "final hidden");
      for (float& v : *options.final_hidden) v *= final_scale;
    }
  }
  SF_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st), "prefill");
  SF_CUDA_RETURN_IF_ERROR(cudaGetLastError(), "prefill");

  if (timer != nullptr) {
    SF_ASSIGN_OR_RETURN(result.stages, timer->Collect());
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  result.tokens_per_second = result.seconds > 0 ? double(s.n) / result.seconds : 0.0;
  result.sparsity = result.causal_keys > 0
                        ? 1.0 - double(result.selected_keys) / double(result.causal_keys)
                        : 0.0;
  result.context_sparsity =
      1.0 - double(result.selected_keys) / (double(s.hkv) * s.n * s.n * c.num_layers);
  return out;
}

}  // namespace

bool CudaAvailable() { return CudaDeviceCount() > 0; }

void EnableCudaBackend() { SetCudaBackend(&CreateCudaRunner, &CudaAvailable); }

absl::StatusOr<std::unique_ptr<ModelRunner>> CreateCudaRunner(const Checkpoint& checkpoint) {
  if (!CudaAvailable()) {
    return absl::FailedPreconditionError("backend \"cuda\": no CUDA device is visible");
  }
  const ModelConfig& c = checkpoint.config();
  if (c.head_dim != 64 && c.head_dim != 128) {
    return absl::InvalidArgumentError(absl::StrCat("backend \"cuda\": head_dim ", c.head_dim,
                                                   " (the CUDA attention kernels take 64 or 128)"));
  }
  SF_ASSIGN_OR_RETURN(DeviceWeights weights, UploadWeights(checkpoint));
  SF_ASSIGN_OR_RETURN(std::unique_ptr<LtGemm> gemm, LtGemm::Create());
  SF_ASSIGN_OR_RETURN(Stream compute, Stream::Create());
  SF_ASSIGN_OR_RETURN(Stream copy, Stream::Create());
  return std::unique_ptr<ModelRunner>(
      new CudaRunner(c, std::move(weights), std::move(gemm), std::move(compute), std::move(copy)));
}

}  // namespace sparsefill::engine::cuda
