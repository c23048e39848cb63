// The cpu backend: the reference forward pass, fp32 everywhere, GEMMs through the BLAS, attention
// and selection through the kernels' references.
//
// One layer loop serves the single-process prefill and every rank of a sharded one: Run() is
// RunShard() over a one-rank in-process exchange. Rank r holds tokens [a, b) (a a multiple of the
// block size B) and per layer:
//   1. computes Q/K/V of its tokens and publishes its K/V for the peers;
//   2. (sparse) summarises the compressed-key chunks whose LAST key it owns; a chunk that starts
//      before a needs the kernel - stride "halo" keys before a, fetched from their owner(s);
//      the summaries are all-gathered, so every rank holds those of the whole prompt;
//   3. (NOSA, or a sink) computes the query-agnostic importance, decomposed over the ranks
//      (shard_importance.h);
//   4. selects blocks for its queries against every earlier block, fetches the union of the
//      selected blocks it does not own (one FetchKv per owner) into a buffer holding only those
//      blocks followed by its own rows, and runs sparse attention on it with the block lists
//      renumbered; dense attention (dense plans) fetches every earlier key instead;
//   5. o-proj + MLP, hands its KV to the sink (token_begin = a), and closes the layer with an
//      all-gather of its counters (after which no peer fetches the layer any more).
// Every kernel computes each query row / key block on its own, so the bits do not depend on the
// split (see the sharded test); the importance is the one sum that needed an exact decomposition.
#include "services/engine/cpu/cpu_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/engine/cpu/cpu_layer_ops.h"
#include "services/engine/cpu/cpu_weights.h"
#include "services/engine/cpu/shard_importance.h"
#include "services/engine/cpu/shard_payload.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/quality.h"
#include "sparsefill/engine/selection.h"
#include "sparsefill/kernels/attention.h"
#include "sparsefill/kernels/selection.h"

namespace sparsefill::engine::cpu {

absl::StatusOr<std::vector<float>> DecodeStep(const ModelConfig& config, const LayerOps& ops,
                                              std::span<const LayerKvBuffer> cache, int32_t token);

namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Per-layer counters every rank contributes to the layer's closing all-gather.
struct LayerCounters {
  int64_t selected_keys = 0;
  int64_t causal_keys = 0;
  double loss_sum = 0.0;
  int64_t loss_count = 0;
  double attn_err2 = 0.0;  // sum of squared (sparse - dense) over the sampled queries
  double attn_ref2 = 0.0;  // sum of squared dense outputs over the sampled queries
};

// Keys each query of [a, b) covers with its lists, and its causal keys, over all KV heads.
void CountKeys(const std::vector<int32_t>& blocks, int32_t kv_heads, int64_t num_q, int64_t q_pos0,
               int32_t max_blocks, int32_t block_size, LayerCounters& c) {
  for (int32_t g = 0; g < kv_heads; ++g) {
    for (int64_t i = 0; i < num_q; ++i) {
      const int64_t t = q_pos0 + i;
      c.causal_keys += t + 1;
      const int32_t* row = blocks.data() + (g * num_q + i) * max_blocks;
      for (int32_t j = 0; j < max_blocks && row[j] >= 0; ++j) {
        const int64_t first = int64_t{row[j]} * block_size;
        c.selected_keys += std::clamp<int64_t>(t + 1 - first, 0, block_size);
      }
    }
  }
}

class CpuRunner final : public ModelRunner {
 public:
  CpuRunner(ModelConfig config, Weights weights)
      : config_(std::move(config)), weights_(std::move(weights)), ops_(config_, weights_) {}

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
                                    LayerSink* sink) override {
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n != plan.num_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan is for ", plan.num_tokens, " tokens, got ", n));
    }
    SF_ASSIGN_OR_RETURN(ShardLayout layout,
                        ShardLayout::FromBounds({0, n}, plan.selection.block_size));
    SF_ASSIGN_OR_RETURN(std::unique_ptr<InProcessExchange> exchange,
                        InProcessExchange::Create(std::move(layout), {}));
    SF_ASSIGN_OR_RETURN(ShardPrefillResult r,
                        RunShard(plan, tokens, punct, exchange->endpoint(0), options, sink));
    return std::move(r.prompt);
  }

  absl::StatusOr<ShardPrefillResult> RunShard(const PrefillPlan& plan,
                                              std::span<const int32_t> tokens,
                                              std::span<const uint8_t> punct,
                                              ShardExchange& exchange, const RunOptions& options,
                                              LayerSink* sink) override {
    absl::StatusOr<ShardPrefillResult> r =
        RunShardImpl(plan, tokens, punct, exchange, options, sink);
    // Wake the peers instead of leaving them to their deadlines.
    if (!r.ok()) exchange.Abort(r.status());
    return r;
  }

  absl::StatusOr<std::vector<float>> Decode(std::span<const LayerKvBuffer> cache,
                                            int32_t token) override {
    return DecodeStep(config_, ops_, cache, token);
  }

  absl::StatusOr<std::vector<float>> Logits(std::span<const float> hidden, int64_t rows) override {
    const int64_t h = config_.hidden_size, vocab = config_.vocab_size;
    if (static_cast<int64_t>(hidden.size()) != rows * h) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Logits: hidden has ", hidden.size(), " values, expected rows * hidden = ", rows * h));
    }
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    ops_.Logits(hidden.data(), rows, logits.data());
    return logits;
  }

 private:
  absl::StatusOr<ShardPrefillResult> RunShardImpl(const PrefillPlan& plan,
                                                  std::span<const int32_t> tokens,
                                                  std::span<const uint8_t> punct,
                                                  ShardExchange& exchange,
                                                  const RunOptions& options, LayerSink* sink);

  ModelConfig config_;
  Weights weights_;
  LayerOps ops_;
};

absl::StatusOr<ShardPrefillResult> CpuRunner::RunShardImpl(
    const PrefillPlan& plan, std::span<const int32_t> tokens, std::span<const uint8_t> punct,
    ShardExchange& exchange, const RunOptions& options, LayerSink* sink) {
  const ModelConfig& c = config_;
  const SelectionConfig& sel = plan.selection;
  const ShardLayout& layout = exchange.layout();
  const int64_t n = plan.num_tokens;
  if (layout.num_tokens() != n || layout.block_size() != sel.block_size) {
    return absl::InvalidArgumentError(absl::StrCat("the plan is for ", n, " tokens in blocks of ",
                                                   sel.block_size, " but the exchange's layout is ",
                                                   layout.ToString()));
  }
  if (plan.num_layers != c.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("the plan has ", plan.num_layers, " layers, the model ", c.num_layers));
  }
  const TokenRange mine = exchange.shard();
  const int64_t a = mine.begin, b = mine.end, ns = mine.size();
  if (static_cast<int64_t>(tokens.size()) != ns) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", exchange.rank(), " holds tokens [", a,
                                                   ", ", b, ") but got ", tokens.size(),
                                                   " tokens"));
  }
  if (!punct.empty() && punct.size() != tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat("punctuation mask has ", punct.size(),
                                                   " entries for ", tokens.size(), " tokens"));
  }
  const int32_t world = exchange.world_size();
  const int64_t hid = c.hidden_size, d = c.head_dim;
  const int32_t hq = c.num_heads, hkv = c.num_kv_heads;
  const int64_t qd = int64_t{hq} * d, kvd = int64_t{hkv} * d;
  const int32_t bs = sel.block_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool nosa = !plan.dense && sel.policy == Policy::kNosa;
  const bool need_importance = nosa || sink != nullptr;
  const bool measure_loss = options.information_loss && !plan.dense;
  if (options.information_loss) {
    SF_RETURN_IF_ERROR(CheckInformationLossQueries(options.information_loss_queries));
  }
  // The query positions of this shard the information loss is measured on, relative to a (the
  // same global sample on every rank); empty with every_query_loss.
  const bool every_query_loss =
      options.information_loss_queries == kEveryQuery || options.information_loss_queries >= n;
  std::vector<int64_t> loss_rows;
  if (options.information_loss && !every_query_loss) {
    for (int64_t t : InformationLossPositions(n, options.information_loss_queries)) {
      if (t >= a && t < b) loss_rows.push_back(t - a);
    }
  }
  const int64_t loss_queries = every_query_loss ? ns : static_cast<int64_t>(loss_rows.size());
  const int64_t sample = std::min<int64_t>(std::max(options.attention_sample_queries, 0), n);
  const int64_t sample_begin = std::max(a, n - sample);  // this shard's sampled queries
  const bool measure_attn = sample > 0 && !plan.dense;
  const float lambda = sel.policy == Policy::kPhsa ? sel.lambda : 1.0f;
  // Keys before `a` that the chunks ending in this shard need (see the file comment).
  const int64_t halo_begin =
      a > 0 ? std::max<int64_t>(0, a - (sel.kernel_size - sel.kernel_stride)) : 0;
  if (!plan.dense && lambda < 1.0f && (punct.empty() || halo_begin < a)) {
    return absl::InvalidArgumentError(
        "phsa with lambda < 1 needs the punctuation mask and kernel_size == kernel_stride");
  }

  ShardPrefillResult out;
  out.tokens = mine;
  PrefillResult& result = out.prompt;
  result.plan = plan;
  const auto t_start = Clock::now();
  double measure_seconds = 0;

  std::vector<float> x(static_cast<size_t>(ns * hid));
  ops_.Embed(tokens, x.data());
  std::vector<int64_t> positions(static_cast<size_t>(ns));
  for (int64_t t = 0; t < ns; ++t) positions[static_cast<size_t>(t)] = a + t;
  const RopeTable rope = ops_.Rope(n);

  LayerScratch scratch;
  std::vector<float> q(static_cast<size_t>(ns * qd)), k(static_cast<size_t>(ns * kvd)),
      v(static_cast<size_t>(ns * kvd)), attn(static_cast<size_t>(ns * qd));

  for (int32_t li = 0; li < c.num_layers; ++li) {
    const int32_t xl = li + options.exchange_layer_offset;  // the exchange's layer id
    const auto t_layer = Clock::now();
    double layer_measure = 0;
    LayerCounters mine_counts;

    SF_RETURN_IF_ERROR(
        ops_.Qkv(li, x.data(), ns, positions.data(), rope, scratch, q.data(), k.data(), v.data()));
    if (world > 1) SF_RETURN_IF_ERROR(exchange.PublishLayer(xl, kvd, k, v));

    kernels::AttentionParams ap;
    ap.q = q.data();
    ap.out = attn.data();
    ap.num_q = ns;
    ap.q_heads = hq;
    ap.kv_heads = hkv;
    ap.head_dim = static_cast<int32_t>(d);
    ap.scale = scale;
    ap.dtype = DType::kF32;
    // Every key 0 .. b-1 (dense attention, and the measurements): the prefix from its owners.
    std::vector<float> full_k, full_v;
    auto with_prefix = [&]() -> absl::Status {
      if (a == 0 || !full_k.empty()) return absl::OkStatus();
      const TokenRange prefix[] = {{0, a}};
      SF_ASSIGN_OR_RETURN(KvRows rows, GatherKvRows(exchange, xl, prefix, kvd, k, v));
      full_k = std::move(rows.k);
      full_v = std::move(rows.v);
      full_k.insert(full_k.end(), k.begin(), k.end());
      full_v.insert(full_v.end(), v.begin(), v.end());
      return absl::OkStatus();
    };
    auto full_params = [&](kernels::AttentionParams p) {
      p.k = a == 0 ? k.data() : full_k.data();
      p.v = a == 0 ? v.data() : full_v.data();
      p.num_kv = b;
      p.q_pos0 = a;
      return p;
    };

    ShardImportance importance;
    if (need_importance) {
      ShardImportanceInput ii;
      ii.q = q.data();
      ii.k = k.data();
      ii.num_tokens = n;
      ii.q_heads = hq;
      ii.kv_heads = hkv;
      ii.head_dim = static_cast<int32_t>(d);
      ii.block_size = bs;
      ii.observe = sel.nosa_observe;
      ii.scale = scale;
      SF_ASSIGN_OR_RETURN(importance, ComputeShardImportance(exchange, xl, ii));
    }

    if (plan.dense) {
      SF_RETURN_IF_ERROR(with_prefix());
      SF_RETURN_IF_ERROR(kernels::DenseAttentionRef(full_params(ap)));
      for (int64_t t = a; t < b; ++t) mine_counts.causal_keys += int64_t{hkv} * (t + 1);
      mine_counts.selected_keys = mine_counts.causal_keys;
      if (options.information_loss) mine_counts.loss_count = int64_t{hq} * loss_queries;
    } else {
      // Summaries of the chunks whose last key is in [a, b), halo keys first.
      std::vector<float> halo_k;
      if (halo_begin < a) {
        const TokenRange halo[] = {{halo_begin, a}};
        SF_ASSIGN_OR_RETURN(KvRows rows, GatherKvRows(exchange, xl, halo, kvd, k, v));
        halo_k = std::move(rows.k);
        halo_k.insert(halo_k.end(), k.begin(), k.end());
      }
      const kernels::ChunkRange chunks = kernels::SummaryChunkRange(
          halo_begin, b - halo_begin, sel.kernel_size, sel.kernel_stride);
      std::vector<float> my_summaries(static_cast<size_t>(chunks.count * kvd));
      kernels::BlockSummaryParams sp;
      sp.k = halo_k.empty() ? k.data() : halo_k.data();
      sp.punct = lambda < 1.0f ? punct.data() : nullptr;
      sp.summaries = my_summaries.data();
      sp.num_kv = b - halo_begin;
      sp.k_pos0 = halo_begin;
      sp.kv_heads = hkv;
      sp.head_dim = static_cast<int32_t>(d);
      sp.kernel_size = sel.kernel_size;
      sp.kernel_stride = sel.kernel_stride;
      sp.lambda = lambda;
      SF_RETURN_IF_ERROR(kernels::BlockSummariesRef(sp));
      SF_ASSIGN_OR_RETURN(
          std::vector<std::string> parts,
          exchange.AllGather(xl, "summaries", ToBytes(std::span<const float>(my_summaries))));
      std::vector<float> summaries;
      for (int32_t r = 0; r < world; ++r) {
        SF_ASSIGN_OR_RETURN(std::vector<float> part,
                            FromBytes<float>(parts[static_cast<size_t>(r)], "summaries", r));
        summaries.insert(summaries.end(), part.begin(), part.end());
      }
      const int64_t num_chunks = static_cast<int64_t>(summaries.size()) / kvd;
      const int64_t want_chunks =
          kernels::NumCompressedChunks(n, sel.kernel_size, sel.kernel_stride);
      if (num_chunks != want_chunks || static_cast<int64_t>(summaries.size()) % kvd != 0) {
        return absl::DataLossError(absl::StrCat("layer ", xl, ": the ranks sent ", num_chunks,
                                                " chunk summaries, expected ", want_chunks));
      }

      std::vector<int32_t> blocks(static_cast<size_t>(int64_t{hkv} * ns * sel.topk), -1);
      kernels::SelectBlocksParams p;
      p.q = q.data();
      p.summaries = summaries.data();
      p.blocks = blocks.data();
      p.num_q = ns;
      p.q_pos0 = a;
      p.num_chunks = num_chunks;
      p.q_heads = hq;
      p.kv_heads = hkv;
      p.head_dim = static_cast<int32_t>(d);
      p.scale = scale;
      p.kernel_size = sel.kernel_size;
      p.kernel_stride = sel.kernel_stride;
      p.block_size = bs;
      p.init_blocks = sel.init_blocks;
      p.local_blocks = sel.local_blocks();
      p.topk = sel.topk;
      p.query_aware = sel.topk;
      if (nosa) {
        p.query_aware = sel.nosa_query_aware;
        p.block_importance = importance.all.data();
        p.importance_blocks = static_cast<int64_t>(importance.all.size()) / hkv;
      }
      SF_RETURN_IF_ERROR(kernels::SelectBlocksRef(p));
      CountKeys(blocks, hkv, ns, a, sel.topk, bs, mine_counts);

      // The selected blocks other ranks own, fetched once each, then renumbered: remote block i
      // becomes i, own block a/B + j becomes R + j, and the queries move down by a - R*B (a
      // constant, so the causal diagonal and every list's order are unchanged).
      const int64_t first_own = a / bs;
      std::vector<uint8_t> wanted(static_cast<size_t>(first_own), 0);
      for (int32_t e : blocks) {
        if (e >= 0 && e < first_own) wanted[static_cast<size_t>(e)] = 1;
      }
      std::vector<int32_t> renumber(static_cast<size_t>(first_own), -1);
      std::vector<TokenRange> ranges;
      int32_t remote = 0;
      for (int64_t blk = 0; blk < first_own; ++blk) {
        if (!wanted[static_cast<size_t>(blk)]) continue;
        renumber[static_cast<size_t>(blk)] = remote++;
        if (!ranges.empty() && ranges.back().end == blk * bs) {
          ranges.back().end += bs;
        } else {
          ranges.push_back({blk * bs, (blk + 1) * bs});
        }
      }
      std::vector<float> sk, sv;
      kernels::AttentionParams spa = ap;
      spa.k = k.data();
      spa.v = v.data();
      if (remote > 0) {
        SF_ASSIGN_OR_RETURN(KvRows rows, GatherKvRows(exchange, xl, ranges, kvd, k, v));
        sk = std::move(rows.k);
        sv = std::move(rows.v);
        sk.insert(sk.end(), k.begin(), k.end());
        sv.insert(sv.end(), v.begin(), v.end());
        spa.k = sk.data();
        spa.v = sv.data();
      }
      const int64_t shift_blocks = first_own - remote;
      std::vector<int32_t> local_blocks = blocks;
      for (int32_t& e : local_blocks) {
        if (e < 0) continue;
        e = e < first_own ? renumber[static_cast<size_t>(e)]
                          : static_cast<int32_t>(e - shift_blocks);
      }
      spa.q_pos0 = a - shift_blocks * bs;
      spa.num_kv = spa.q_pos0 + ns;
      SF_RETURN_IF_ERROR(kernels::SparseAttentionRef(
          spa, kernels::BlockSelection{local_blocks.data(), sel.topk, bs}));

      const auto t_measure = Clock::now();
      if (measure_loss || measure_attn) SF_RETURN_IF_ERROR(with_prefix());
      if (measure_loss) {
        const kernels::BlockSelection lists{blocks.data(), sel.topk, bs};
        SF_ASSIGN_OR_RETURN(InformationLossSum loss,
                            every_query_loss ? InformationLoss(full_params(ap), lists)
                                             : InformationLoss(full_params(ap), lists, loss_rows));
        mine_counts.loss_sum = loss.sum;
        mine_counts.loss_count = loss.count;
      }
      if (measure_attn && sample_begin < b) {
        const int64_t s = b - sample_begin;
        std::vector<float> ref(static_cast<size_t>(s * qd));
        kernels::AttentionParams dp = full_params(ap);
        dp.q = q.data() + (sample_begin - a) * qd;
        dp.out = ref.data();
        dp.num_q = s;
        dp.q_pos0 = sample_begin;
        SF_RETURN_IF_ERROR(kernels::DenseAttentionRef(dp));
        const float* got = attn.data() + (sample_begin - a) * qd;
        for (int64_t i = 0; i < s * qd; ++i) {
          const double diff = double(got[i]) - double(ref[static_cast<size_t>(i)]);
          mine_counts.attn_err2 += diff * diff;
          mine_counts.attn_ref2 +=
              double(ref[static_cast<size_t>(i)]) * ref[static_cast<size_t>(i)];
        }
      }
      layer_measure = SecondsSince(t_measure);
    }

    SF_RETURN_IF_ERROR(
        ops_.OutputAndMlp(li, attn.data(), ns, plan.mlp_chunk_tokens, scratch, x.data()));

    if (sink != nullptr) {
      LayerKv kv;
      kv.layer = li;
      kv.token_begin = a;
      kv.num_tokens = ns;
      kv.kv_heads = hkv;
      kv.head_dim = static_cast<int32_t>(d);
      kv.k = k.data();
      kv.v = v.data();
      kv.block_size = bs;
      kv.num_blocks = (ns + bs - 1) / bs;
      kv.block_importance = importance.mine.data();
      ShardLayerPart counters;  // this shard's share, known before the layer's closing gather
      counters.layer = li;
      counters.selected_keys = mine_counts.selected_keys;
      counters.causal_keys = mine_counts.causal_keys;
      counters.information_loss_sum = mine_counts.loss_sum;
      counters.information_loss_count = mine_counts.loss_count;
      counters.seconds = SecondsSince(t_layer) - layer_measure;
      kv.part = &counters;
      SF_RETURN_IF_ERROR(sink->OnLayer(kv));
    }

    // Close the layer: every rank's counters; past this point no peer fetches the layer.
    SF_ASSIGN_OR_RETURN(
        std::vector<std::string> counts,
        exchange.AllGather(xl, "done", ToBytes(std::span<const LayerCounters>(&mine_counts, 1))));
    if (world > 1) SF_RETURN_IF_ERROR(exchange.ReleaseLayer(xl));
    LayerCounters total;
    for (int32_t r = 0; r < world; ++r) {
      SF_ASSIGN_OR_RETURN(
          std::vector<LayerCounters> part,
          FromBytes<LayerCounters>(counts[static_cast<size_t>(r)], "layer counters", r, 1));
      total.selected_keys += part[0].selected_keys;
      total.causal_keys += part[0].causal_keys;
      total.loss_sum += part[0].loss_sum;
      total.loss_count += part[0].loss_count;
      total.attn_err2 += part[0].attn_err2;
      total.attn_ref2 += part[0].attn_ref2;
    }

    measure_seconds += layer_measure;
    LayerStats stats;
    stats.layer = li;
    stats.selected_keys = total.selected_keys;
    stats.causal_keys = total.causal_keys;
    stats.sparsity =
        total.causal_keys > 0 ? 1.0 - double(total.selected_keys) / double(total.causal_keys) : 0.0;
    stats.context_sparsity = 1.0 - double(total.selected_keys) / (double(hkv) * n * n);
    if (options.information_loss) {
      stats.information_loss = total.loss_count > 0 ? total.loss_sum / total.loss_count : 0.0;
      stats.information_loss_queries = total.loss_count / hq;  // every head of each position
    }
    if (sample > 0) {
      stats.attention_rel_l2 =
          plan.dense || total.attn_ref2 == 0 ? 0.0 : std::sqrt(total.attn_err2 / total.attn_ref2);
    }
    stats.seconds = SecondsSince(t_layer) - layer_measure;
    result.selected_keys += stats.selected_keys;
    result.causal_keys += stats.causal_keys;
    result.layers.push_back(stats);

    ShardLayerPart part;
    part.layer = li;
    part.selected_keys = mine_counts.selected_keys;
    part.causal_keys = mine_counts.causal_keys;
    part.information_loss_sum = mine_counts.loss_sum;
    part.information_loss_count = mine_counts.loss_count;
    part.seconds = stats.seconds;
    out.layers.push_back(part);
  }

  // Final norm of the last rows of the prompt this shard holds; logits all-gathered.
  const int64_t out_rows =
      std::min<int64_t>(n, std::max<int64_t>(options.logits_positions, options.final_rows));
  const int64_t lrows = std::min<int64_t>(out_rows, std::max(options.logits_positions, 0));
  const int64_t h0 = std::max(a, n - out_rows);  // first final row of this shard
  const int64_t my_rows = std::max<int64_t>(0, b - h0);
  std::vector<float> last(static_cast<size_t>(my_rows * hid));
  if (my_rows > 0)
    SF_RETURN_IF_ERROR(ops_.FinalNorm(x.data() + (h0 - a) * hid, my_rows, last.data()));
  const int64_t l0 = std::max(a, n - lrows);
  const int64_t my_logit_rows = std::max<int64_t>(0, b - l0);
  std::vector<float> my_logits(static_cast<size_t>(my_logit_rows * c.vocab_size));
  if (my_logit_rows > 0) {
    ops_.Logits(last.data() + (l0 - h0) * hid, my_logit_rows, my_logits.data());
  }
  SF_ASSIGN_OR_RETURN(std::vector<std::string> logit_parts,
                      exchange.AllGather(options.exchange_layer_offset + c.num_layers - 1, "logits",
                                         ToBytes(std::span<const float>(my_logits))));
  for (int32_t r = 0; r < world; ++r) {
    SF_ASSIGN_OR_RETURN(std::vector<float> part,
                        FromBytes<float>(logit_parts[static_cast<size_t>(r)], "logits", r));
    result.logits.insert(result.logits.end(), part.begin(), part.end());
  }
  if (static_cast<int64_t>(result.logits.size()) != lrows * c.vocab_size) {
    return absl::DataLossError(absl::StrCat("the ranks sent ", result.logits.size(),
                                            " logits, expected ", lrows, " rows of ",
                                            c.vocab_size));
  }
  if (options.final_hidden != nullptr) {
    const int64_t f0 = std::max(a, n - std::min<int64_t>(options.final_rows, out_rows));
    options.final_hidden->assign(last.begin() + std::min(my_rows, f0 - h0) * hid, last.end());
  }

  result.seconds = SecondsSince(t_start) - measure_seconds;
  result.tokens_per_second = result.seconds > 0 ? double(n) / result.seconds : 0.0;
  result.sparsity = result.causal_keys > 0
                        ? 1.0 - double(result.selected_keys) / double(result.causal_keys)
                        : 0.0;
  result.context_sparsity =
      1.0 - double(result.selected_keys) / (double(hkv) * n * n * c.num_layers);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRunner>> CreateCpuRunner(const Checkpoint& checkpoint) {
  SF_ASSIGN_OR_RETURN(Weights weights, LoadWeights(checkpoint));
  return std::unique_ptr<ModelRunner>(new CpuRunner(checkpoint.config(), std::move(weights)));
}

}  // namespace sparsefill::engine::cpu
