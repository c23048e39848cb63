// CPU reference of block selection (see sparsefill/kernels/selection.h for the semantics).
//
// SelectBlocksRef works on query chunks: one BLAS GEMM per query head gives the chunk scores of a
// chunk of queries (never the whole N x N/s matrix), then OpenMP threads turn every
// (KV head, query) row into a softmax, block scores and a top-k. The GEMMs run outside the
// parallel regions so that the BLAS's own threads and OpenMP's never compete.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/selection/exp_approx.h"
#include "sparsefill/kernels/gemm.h"
#include "sparsefill/kernels/selection.h"

namespace sparsefill::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Scratch budget for one query chunk's scores (floats): 64 MiB.
constexpr int64_t kScoreBudgetFloats = int64_t{16} << 20;
constexpr int32_t kMaxTokensPerUnit = 1 << 16;

struct Candidate {
  float key;  // higher is better
  int32_t block;
};

// Strict total order: higher key first, then lower block index (deterministic ties).
inline bool Better(const Candidate& a, const Candidate& b) {
  return a.key > b.key || (a.key == b.key && a.block < b.block);
}

// NaN scores (from NaN inputs) rank last instead of breaking the ordering.
inline float Sanitize(float v) { return std::isnan(v) ? kNegInf : v; }

// Keeps the best `want` candidates pushed so far; heap[0] is the worst of them.
class TopR {
 public:
  void Reset(int32_t want) {
    want_ = want;
    heap_.clear();
  }
  void Push(Candidate c) {
    if (want_ <= 0) return;
    const auto worse_first = [](const Candidate& a, const Candidate& b) { return Better(a, b); };
    if (static_cast<int32_t>(heap_.size()) < want_) {
      heap_.push_back(c);
      std::push_heap(heap_.begin(), heap_.end(), worse_first);
    } else if (Better(c, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), worse_first);
      heap_.back() = c;
      std::push_heap(heap_.begin(), heap_.end(), worse_first);
    }
  }
  const std::vector<Candidate>& items() const { return heap_; }

 private:
  int32_t want_ = 0;
  std::vector<Candidate> heap_;
};

absl::Status CheckGeometry(int32_t kernel, int32_t stride, int32_t block) {
  if (kernel <= 0 || kernel > kMaxTokensPerUnit) {
    return absl::InvalidArgumentError(absl::StrCat("kernel_size ", kernel, " out of range"));
  }
  if (stride <= 0 || stride > kMaxTokensPerUnit) {
    return absl::InvalidArgumentError(absl::StrCat("kernel_stride ", stride, " out of range"));
  }
  if (kernel % stride != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kernel_size ", kernel, " must be a multiple of kernel_stride ", stride));
  }
  if (block <= 0 || block > kMaxTokensPerUnit || block % stride != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_size ", block, " must be a positive multiple of kernel_stride ", stride));
  }
  return absl::OkStatus();
}

// Mean of keys [first, first + count) of one KV head, accumulated in double; the one code path
// for InfLLM-V2 compressed keys and PHSA's global branch.
void MeanKeys(const float* k, int64_t first, int32_t count, int64_t row_stride, int32_t head_dim,
              double* acc, float* out) {
  std::fill(acc, acc + head_dim, 0.0);
  for (int32_t j = 0; j < count; ++j) {
    const float* row = k + (first + j) * row_stride;
    for (int32_t c = 0; c < head_dim; ++c) acc[c] += row[c];
  }
  const double inv = 1.0 / count;
  for (int32_t c = 0; c < head_dim; ++c) out[c] = static_cast<float>(acc[c] * inv);
}

}  // namespace

int64_t NumCompressedChunks(int64_t num_keys, int32_t kernel_size, int32_t kernel_stride) {
  if (kernel_size <= 0 || kernel_stride <= 0 || num_keys < kernel_size) return 0;
  return (num_keys - kernel_size) / kernel_stride + 1;
}

ChunkRange SummaryChunkRange(int64_t k_pos0, int64_t num_kv, int32_t kernel_size,
                             int32_t kernel_stride) {
  ChunkRange r;
  if (kernel_size <= 0 || kernel_stride <= 0 || k_pos0 < 0 || num_kv <= 0) return r;
  r.first = (k_pos0 + kernel_stride - 1) / kernel_stride;
  const int64_t end = k_pos0 + num_kv;  // exclusive
  if (end < kernel_size) return r;
  const int64_t last = (end - kernel_size) / kernel_stride;
  r.count = std::max<int64_t>(0, last - r.first + 1);
  return r;
}

absl::Status BlockSummariesRef(const BlockSummaryParams& p) {
  if (p.kernel_size <= 0 || p.kernel_stride <= 0 || p.kernel_size % p.kernel_stride != 0) {
    return absl::InvalidArgumentError(absl::StrCat("summaries: kernel_size ", p.kernel_size,
                                                   " must be a positive multiple of kernel_stride ",
                                                   p.kernel_stride));
  }
  if (p.kv_heads <= 0 || p.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "summaries: kv_heads ", p.kv_heads, " and head_dim ", p.head_dim, " must be positive"));
  }
  if (p.num_kv < 0 || p.k_pos0 < 0) {
    return absl::InvalidArgumentError(absl::StrCat("summaries: num_kv ", p.num_kv, " and k_pos0 ",
                                                   p.k_pos0, " must be non-negative"));
  }
  if (!(p.lambda >= 0.0f && p.lambda <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("summaries: lambda ", p.lambda, " must be in [0, 1]"));
  }
  const bool mix = p.lambda < 1.0f;
  if (mix && p.punct == nullptr) {
    return absl::InvalidArgumentError("summaries: lambda < 1 needs the punctuation mask");
  }
  const ChunkRange range = SummaryChunkRange(p.k_pos0, p.num_kv, p.kernel_size, p.kernel_stride);
  if (range.count == 0) return absl::OkStatus();
  if (p.k == nullptr || p.summaries == nullptr) {
    return absl::InvalidArgumentError("summaries: k and summaries must not be null");
  }
  const int64_t row_stride = static_cast<int64_t>(p.kv_heads) * p.head_dim;
  const float lambda = p.lambda;
  const float one_minus = 1.0f - lambda;
#pragma omp parallel
  {
    std::vector<double> acc(p.head_dim);
    std::vector<float> punct_mean(p.head_dim);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < range.count; ++c) {
      const int64_t first = (range.first + c) * p.kernel_stride - p.k_pos0;  // local key index
      for (int32_t h = 0; h < p.kv_heads; ++h) {
        const float* k_head = p.k + h * p.head_dim;
        float* out = p.summaries + (c * p.kv_heads + h) * p.head_dim;
        MeanKeys(k_head, first, p.kernel_size, row_stride, p.head_dim, acc.data(), out);
        if (!mix) continue;
        int32_t n_punct = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int32_t j = 0; j < p.kernel_size; ++j) {
          if (p.punct[first + j] == 0) continue;
          ++n_punct;
          const float* row = k_head + (first + j) * row_stride;
          for (int32_t d = 0; d < p.head_dim; ++d) acc[d] += row[d];
        }
        if (n_punct == 0) continue;  // no boundary token: the plain mean
        for (int32_t d = 0; d < p.head_dim; ++d) {
          punct_mean[d] = static_cast<float>(acc[d] / n_punct);
          out[d] = lambda * out[d] + one_minus * punct_mean[d];
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSelectBlocks(const SelectBlocksParams& p) {
  if (absl::Status s = CheckGeometry(p.kernel_size, p.kernel_stride, p.block_size); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("select: ", s.message()));
  }
  if (p.q_heads <= 0 || p.kv_heads <= 0 || p.q_heads % p.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "select: q_heads ", p.q_heads, " must be a positive multiple of kv_heads ", p.kv_heads));
  }
  if (p.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("select: head_dim ", p.head_dim));
  }
  if (p.num_q < 0 || p.q_pos0 < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("select: num_q ", p.num_q, " and q_pos0 ", p.q_pos0, " must be non-negative"));
  }
  if (!std::isfinite(p.scale) || p.scale == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("select: scale ", p.scale));
  }
  if (p.init_blocks < 0 || p.local_blocks < 0) {
    return absl::InvalidArgumentError(absl::StrCat("select: init_blocks ", p.init_blocks,
                                                   " and local_blocks ", p.local_blocks,
                                                   " must be non-negative"));
  }
  const int64_t forced = int64_t{p.init_blocks} + p.local_blocks + 1;
  if (p.topk < forced) {
    return absl::InvalidArgumentError(
        absl::StrCat("select: topk ", p.topk,
                     " must cover the forced init_blocks + local_blocks + 1 = ", forced));
  }
  const int32_t qa = p.query_aware <= 0 ? p.topk : std::min(p.query_aware, p.topk);
  if (qa < forced) {
    return absl::InvalidArgumentError(absl::StrCat("select: query_aware ", p.query_aware,
                                                   " must cover the forced blocks (", forced, ")"));
  }
  if (p.num_q == 0) return absl::OkStatus();
  if (p.q == nullptr || p.blocks == nullptr) {
    return absl::InvalidArgumentError("select: q and blocks must not be null");
  }
  const int64_t last_pos = p.q_pos0 + p.num_q - 1;
  const int64_t needed = NumCompressedChunks(last_pos + 1, p.kernel_size, p.kernel_stride);
  if (p.num_chunks < needed) {
    return absl::InvalidArgumentError(absl::StrCat("select: num_chunks ", p.num_chunks,
                                                   " does not cover the ", needed,
                                                   " chunks visible to the last query"));
  }
  if (needed > 0 && p.summaries == nullptr) {
    return absl::InvalidArgumentError("select: summaries must not be null");
  }
  if (qa < p.topk) {
    const int64_t needed_blocks = last_pos / p.block_size + 1;
    if (p.block_importance == nullptr || p.importance_blocks < needed_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("select: query_aware ", qa, " < topk ", p.topk,
                       " needs block_importance over at least ", needed_blocks, " blocks (got ",
                       p.block_importance == nullptr ? 0 : p.importance_blocks, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status SelectBlocksRef(const SelectBlocksParams& p) {
  if (absl::Status s = ValidateSelectBlocks(p); !s.ok()) return s;
  if (p.num_q == 0) return absl::OkStatus();

  const int32_t group = p.q_heads / p.kv_heads;
  const int32_t d = p.head_dim;
  const int32_t pool_stride = p.block_size / p.kernel_stride;
  const int32_t pool_pad = p.kernel_size / p.kernel_stride - 1;
  const int32_t pool_window = pool_stride + pool_pad;
  const int32_t topk = p.topk;
  const int32_t query_aware = p.query_aware <= 0 ? topk : std::min(p.query_aware, topk);
  const int64_t last_pos = p.q_pos0 + p.num_q - 1;
  const int64_t max_chunks = NumCompressedChunks(last_pos + 1, p.kernel_size, p.kernel_stride);
  const int64_t max_blocks = last_pos / p.block_size + 1;
  const int64_t q_row = static_cast<int64_t>(p.q_heads) * d;
  const int64_t kc_row = static_cast<int64_t>(p.kv_heads) * d;

  const int64_t per_query = std::max<int64_t>(1, p.q_heads * max_chunks);
  const int64_t q_chunk = std::clamp<int64_t>(kScoreBudgetFloats / per_query, 8, 1024);
  std::vector<float> scores(static_cast<size_t>(std::min(q_chunk, p.num_q) * per_query));

  for (int64_t c0 = 0; c0 < p.num_q; c0 += q_chunk) {
    const int64_t nq = std::min(q_chunk, p.num_q - c0);
    const int64_t mc =
        NumCompressedChunks(p.q_pos0 + c0 + nq, p.kernel_size, p.kernel_stride);  // ld of scores
    if (mc > 0) {
      for (int32_t h = 0; h < p.q_heads; ++h) {
        GemmF32(Trans::kNo, Trans::kYes, nq, mc, d, p.scale, p.q + c0 * q_row + h * d, q_row,
                p.summaries + (h / group) * d, kc_row, 0.0f, scores.data() + h * nq * mc, mc);
      }
    }
#pragma omp parallel
    {
      std::vector<float> prob(std::max<int64_t>(mc, 1));
      std::vector<float> expv(std::max<int64_t>(mc, 1));
      std::vector<uint8_t> taken(max_blocks, 0);
      std::vector<int32_t> chosen;
      chosen.reserve(topk);
      TopR top;
#pragma omp for collapse(2) schedule(dynamic, 32)
      for (int32_t g = 0; g < p.kv_heads; ++g) {
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t t = p.q_pos0 + c0 + i;
          const int64_t visible = NumCompressedChunks(t + 1, p.kernel_size, p.kernel_stride);
          const int64_t qb = t / p.block_size;
          const int64_t n_valid = qb + 1;
          const int64_t n_out = std::min<int64_t>(topk, n_valid);
          // Forced: [0, init) and [qb - local, qb]; candidates are the blocks between them.
          const int64_t cand_lo = std::min<int64_t>(p.init_blocks, n_valid);
          const int64_t cand_hi = std::max<int64_t>(cand_lo, qb - p.local_blocks);
          const int64_t n_forced = n_valid - (cand_hi - cand_lo);
          const int64_t by_score = std::min<int64_t>(query_aware, n_out) - n_forced;
          const int64_t by_importance = n_out - n_forced - by_score;

          chosen.clear();
          for (int64_t b = 0; b < cand_lo; ++b) chosen.push_back(static_cast<int32_t>(b));
          if (by_score > 0) {
            // Chunk probabilities summed over the group's query heads.
            std::fill(prob.begin(), prob.begin() + visible, 0.0f);
            for (int32_t j = 0; j < group && visible > 0; ++j) {
              const int32_t h = g * group + j;
              const float* row = scores.data() + (h * nq + i) * mc;
              float mx = row[0];
#pragma omp simd reduction(max : mx)
              for (int64_t m = 0; m < visible; ++m) mx = row[m] > mx ? row[m] : mx;
              float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
              for (int64_t m = 0; m < visible; ++m) {
                const float e = internal::ExpNonPositive(row[m] - mx);
                expv[m] = e;
                sum += e;
              }
              const float inv = 1.0f / sum;
#pragma omp simd
              for (int64_t m = 0; m < visible; ++m) prob[m] += expv[m] * inv;
            }
            top.Reset(static_cast<int32_t>(by_score));
            for (int64_t b = cand_lo; b < cand_hi; ++b) {
              const int64_t m0 = std::max<int64_t>(0, b * pool_stride - pool_pad);
              const int64_t m1 =
                  std::min<int64_t>(visible, b * pool_stride - pool_pad + pool_window);
              float best = 0.0f;  // no visible chunk overlaps the block
              if (m1 > m0) {
                best = prob[m0];
                for (int64_t m = m0 + 1; m < m1; ++m) best = std::max(best, prob[m]);
              }
              top.Push({Sanitize(best), static_cast<int32_t>(b)});
            }
            for (const Candidate& c : top.items()) {
              chosen.push_back(c.block);
              taken[c.block] = 1;
            }
          }
          if (by_importance > 0) {
            const float* imp = p.block_importance + g * p.importance_blocks;
            top.Reset(static_cast<int32_t>(by_importance));
            for (int64_t b = cand_lo; b < cand_hi; ++b) {
              if (taken[b]) continue;
              top.Push({Sanitize(imp[b]), static_cast<int32_t>(b)});
            }
            for (const Candidate& c : top.items()) chosen.push_back(c.block);
          }
          for (int32_t b : chosen) taken[b] = 0;
          for (int64_t b = std::max(cand_lo, cand_hi); b <= qb; ++b) {
            chosen.push_back(static_cast<int32_t>(b));
          }
          std::sort(chosen.begin(), chosen.end());
          int32_t* out = p.blocks + (g * p.num_q + c0 + i) * topk;
          const int32_t n = static_cast<int32_t>(chosen.size());
          std::copy(chosen.begin(), chosen.end(), out);
          std::fill(out + n, out + topk, -1);
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
