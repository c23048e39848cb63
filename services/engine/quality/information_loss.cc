// Information loss of a block selection: the dense softmax mass each query loses.
//
// Query tiles: one BLAS GEMM per query head gives the tile's scores against all causal keys
// (never the whole N x N matrix), then OpenMP threads reduce rows. The GEMMs run outside the
// parallel regions so that the BLAS's threads and OpenMP's never compete.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/selection/exp_approx.h"
#include "sparsefill/engine/quality.h"
#include "sparsefill/kernels/gemm.h"

namespace sparsefill::engine {
namespace {

constexpr int64_t kScoreBudgetFloats = int64_t{8} << 20;  // 32 MiB of scores per tile

absl::Status ValidateInputs(const kernels::AttentionParams& p, const kernels::BlockSelection& sel) {
  if (p.dtype != DType::kF32) {
    return absl::InvalidArgumentError("information loss: q and k must be fp32");
  }
  if (p.q_heads <= 0 || p.kv_heads <= 0 || p.q_heads % p.kv_heads != 0 || p.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "information loss: q_heads ", p.q_heads, " must be a positive multiple of kv_heads ",
        p.kv_heads, ", head_dim ", p.head_dim, " positive"));
  }
  if (p.num_q < 0 || p.q_pos0 < 0 || p.num_kv < 0 || p.q_pos0 + p.num_q > p.num_kv) {
    return absl::InvalidArgumentError(absl::StrCat("information loss: queries at q_pos0 ", p.q_pos0,
                                                   " + num_q ", p.num_q, " must lie within the ",
                                                   p.num_kv, " keys"));
  }
  if (!std::isfinite(p.scale) || p.scale == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("information loss: scale ", p.scale));
  }
  if (p.num_q == 0) return absl::OkStatus();
  if (p.q == nullptr || p.k == nullptr) {
    return absl::InvalidArgumentError("information loss: q and k must not be null");
  }
  if (sel.block_size <= 0 || sel.max_blocks < 0 || (sel.max_blocks > 0 && sel.blocks == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("information loss: selection block_size ",
                                                   sel.block_size, ", max_blocks ", sel.max_blocks,
                                                   (sel.blocks == nullptr ? ", null blocks" : "")));
  }
  for (int32_t g = 0; g < p.kv_heads; ++g) {
    for (int64_t i = 0; i < p.num_q; ++i) {
      const int64_t qb = (p.q_pos0 + i) / sel.block_size;
      const int32_t* row = sel.blocks + (g * p.num_q + i) * sel.max_blocks;
      for (int32_t j = 0; j < sel.max_blocks; ++j) {
        if (row[j] == -1) continue;
        if (row[j] < 0 || row[j] > qb) {
          return absl::InvalidArgumentError(absl::StrCat("information loss: selection entry ",
                                                         row[j], " of KV head ", g, ", query ", i,
                                                         " is outside [0, ", qb, "]"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<InformationLossSum> InformationLoss(const kernels::AttentionParams& p,
                                                   const kernels::BlockSelection& sel) {
  if (absl::Status s = ValidateInputs(p, sel); !s.ok()) return s;
  InformationLossSum result;
  if (p.num_q == 0) return result;

  const auto* q = static_cast<const float*>(p.q);
  const auto* k = static_cast<const float*>(p.k);
  const int32_t group = p.q_heads / p.kv_heads;
  const int32_t d = p.head_dim;
  const int32_t bs = sel.block_size;
  const int64_t q_row = static_cast<int64_t>(p.q_heads) * d;
  const int64_t k_row = static_cast<int64_t>(p.kv_heads) * d;
  const int64_t all_keys = p.q_pos0 + p.num_q;
  const int64_t max_blocks = (all_keys + bs - 1) / bs;
  const int64_t tile = std::clamp<int64_t>(kScoreBudgetFloats / all_keys, 16, 512);
  std::vector<float> scores(static_cast<size_t>(std::min(tile, p.num_q) * all_keys));
  std::vector<double> row_loss(static_cast<size_t>(p.q_heads * p.num_q));

  for (int64_t c0 = 0; c0 < p.num_q; c0 += tile) {
    const int64_t nq = std::min(tile, p.num_q - c0);
    const int64_t keys = p.q_pos0 + c0 + nq;  // ld of the tile's scores
    for (int32_t h = 0; h < p.q_heads; ++h) {
      const int32_t g = h / group;
      kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, nq, keys, d, p.scale,
                       q + c0 * q_row + h * d, q_row, k + g * d, k_row, 0.0f, scores.data(), keys);
#pragma omp parallel
      {
        std::vector<uint8_t> selected(max_blocks, 0);
#pragma omp for schedule(dynamic, 8)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t t = p.q_pos0 + c0 + i;
          const int64_t qb = t / bs;
          const int32_t* list = sel.blocks + (g * p.num_q + c0 + i) * sel.max_blocks;
          for (int32_t j = 0; j < sel.max_blocks; ++j) {
            if (list[j] >= 0) selected[list[j]] = 1;
          }
          float* row = scores.data() + i * keys;
          const int64_t len = t + 1;
          float mx = row[0];
#pragma omp simd reduction(max : mx)
          for (int64_t j = 0; j < len; ++j) mx = row[j] > mx ? row[j] : mx;
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) {
            row[j] = kernels::internal::ExpNonPositive(row[j] - mx);
          }
          double in = 0.0;
          double out = 0.0;
          for (int64_t b = 0; b <= qb; ++b) {
            const int64_t j0 = b * bs;
            const int64_t j1 = std::min<int64_t>(len, j0 + bs);
            float mass = 0.0f;
#pragma omp simd reduction(+ : mass)
            for (int64_t j = j0; j < j1; ++j) mass += row[j];
            (selected[b] ? in : out) += mass;
          }
          for (int32_t j = 0; j < sel.max_blocks; ++j) {
            if (list[j] >= 0) selected[list[j]] = 0;
          }
          row_loss[h * p.num_q + c0 + i] = out / (in + out);
        }
      }
    }
  }
  // Fixed summation order: the same inputs give the same bits whatever the thread count.
  for (double v : row_loss) result.sum += v;
  result.count = static_cast<int64_t>(row_loss.size());
  return result;
}

}  // namespace sparsefill::engine
