// Information loss of a block selection: the dense softmax mass each query loses, over every
// query or over a sample of them (the rows of a tile are then packed before the GEMM).
//
// Query tiles: one BLAS GEMM per query head gives the tile's scores against all causal keys
// (never the whole N x N matrix), then OpenMP threads reduce rows. The GEMMs run outside the
// parallel regions so that the BLAS's threads and OpenMP's never compete.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/selection/exp_approx.h"
#include "sparsefill/engine/engine.h"
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

// `rows` null: every query; else num_rows indices into p's queries, validated.
absl::StatusOr<InformationLossSum> Compute(const kernels::AttentionParams& p,
                                           const kernels::BlockSelection& sel, const int64_t* rows,
                                           int64_t num_rows) {
  InformationLossSum result;
  if (num_rows == 0) return result;

  const auto* q = static_cast<const float*>(p.q);
  const auto* k = static_cast<const float*>(p.k);
  const int32_t group = p.q_heads / p.kv_heads;
  const int32_t d = p.head_dim;
  const int32_t bs = sel.block_size;
  const int64_t q_row = static_cast<int64_t>(p.q_heads) * d;
  const int64_t k_row = static_cast<int64_t>(p.kv_heads) * d;
  auto row_of = [&](int64_t r) { return rows == nullptr ? r : rows[r]; };
  const int64_t all_keys = p.q_pos0 + row_of(num_rows - 1) + 1;
  const int64_t max_blocks = (all_keys + bs - 1) / bs;
  const int64_t tile = std::clamp<int64_t>(kScoreBudgetFloats / all_keys, 16, 512);
  std::vector<float> scores(static_cast<size_t>(std::min(tile, num_rows) * all_keys));
  // The tile's queries of one head, packed, when the rows are a sample.
  std::vector<float> packed(rows == nullptr ? 0
                                            : static_cast<size_t>(std::min(tile, num_rows) * d));
  std::vector<double> row_loss(static_cast<size_t>(p.q_heads * num_rows));

  for (int64_t c0 = 0; c0 < num_rows; c0 += tile) {
    const int64_t nq = std::min(tile, num_rows - c0);
    const int64_t keys = p.q_pos0 + row_of(c0 + nq - 1) + 1;  // ld of the tile's scores
    for (int32_t h = 0; h < p.q_heads; ++h) {
      const int32_t g = h / group;
      const float* a = q + c0 * q_row + h * d;
      int64_t lda = q_row;
      if (rows != nullptr) {
        for (int64_t i = 0; i < nq; ++i) {
          const float* src = q + rows[c0 + i] * q_row + h * d;
          std::copy(src, src + d, packed.data() + i * d);
        }
        a = packed.data();
        lda = d;
      }
      kernels::GemmF32(kernels::Trans::kNo, kernels::Trans::kYes, nq, keys, d, p.scale, a, lda,
                       k + g * d, k_row, 0.0f, scores.data(), keys);
#pragma omp parallel
      {
        std::vector<uint8_t> selected(max_blocks, 0);
#pragma omp for schedule(dynamic, 8)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t qi = row_of(c0 + i);  // the query's index in p and sel
          const int64_t t = p.q_pos0 + qi;
          const int64_t qb = t / bs;
          const int32_t* list = sel.blocks + (g * p.num_q + qi) * sel.max_blocks;
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
          row_loss[h * num_rows + c0 + i] = out / (in + out);
        }
      }
    }
  }
  // Fixed summation order: the same inputs give the same bits whatever the thread count.
  for (double v : row_loss) result.sum += v;
  result.count = static_cast<int64_t>(row_loss.size());
  return result;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

absl::StatusOr<InformationLossSum> InformationLoss(const kernels::AttentionParams& p,
                                                   const kernels::BlockSelection& sel) {
  if (absl::Status s = ValidateInputs(p, sel); !s.ok()) return s;
  return Compute(p, sel, nullptr, p.num_q);
}

absl::StatusOr<InformationLossSum> InformationLoss(const kernels::AttentionParams& p,
                                                   const kernels::BlockSelection& sel,
                                                   std::span<const int64_t> rows) {
  if (absl::Status s = ValidateInputs(p, sel); !s.ok()) return s;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= p.num_q || (i > 0 && rows[i] <= rows[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "information loss: rows[", i, "] = ", rows[i], " must lie in [0, num_q ", p.num_q, ")",
          i > 0 ? absl::StrCat(" and follow rows[", i - 1, "] = ", rows[i - 1]) : ""));
    }
  }
  return Compute(p, sel, rows.data(), static_cast<int64_t>(rows.size()));
}

std::vector<int64_t> InformationLossPositions(int64_t num_tokens, int64_t count) {
  std::vector<int64_t> out;
  if (num_tokens <= 0) return out;
  if (count < 0 || count >= num_tokens) {
    out.resize(static_cast<size_t>(num_tokens));
    for (int64_t t = 0; t < num_tokens; ++t) out[static_cast<size_t>(t)] = t;
    return out;
  }
  out.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    // i x n < n^2 fits in 64 bits for any prompt below 3e9 tokens.
    const int64_t lo = i * num_tokens / count;
    const int64_t hi = (i + 1) * num_tokens / count;
    const auto width = static_cast<uint64_t>(hi - lo);  // >= 1 since count < num_tokens
    out.push_back(lo + static_cast<int64_t>(SplitMix64(static_cast<uint64_t>(i)) % width));
  }
  return out;
}

absl::Status CheckInformationLossQueries(int64_t count) {
  if (count > 0 || count == kEveryQuery) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("information_loss_queries ", count,
                   ": give a positive number of query positions, or -1 for every query"));
}

}  // namespace sparsefill::engine
