// Query-agnostic block importance (SnapKV-style proxy): the causal softmax mass each key block
// receives from a few observer queries, summed over those queries and the query heads of a
// group. Checkpoints without a learned eviction head use it for NOSA's query-agnostic ranking,
// and the KV store uses it to decide which blocks stay hot after prefill.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/selection/exp_approx.h"
#include "sparsefill/kernels/gemm.h"
#include "sparsefill/kernels/selection.h"

namespace sparsefill::kernels {

absl::Status BlockImportanceRef(const BlockImportanceParams& p) {
  if (p.q_heads <= 0 || p.kv_heads <= 0 || p.q_heads % p.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("importance: q_heads ", p.q_heads,
                                                   " must be a positive multiple of kv_heads ",
                                                   p.kv_heads));
  }
  if (p.head_dim <= 0 || p.block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("importance: head_dim ", p.head_dim,
                                                   " and block_size ", p.block_size,
                                                   " must be positive"));
  }
  if (p.num_q < 0 || p.q_pos0 < 0 || p.num_kv < 0 || p.q_pos0 + p.num_q > p.num_kv) {
    return absl::InvalidArgumentError(absl::StrCat("importance: queries at ", p.q_pos0, " + ",
                                                   p.num_q, " must lie within num_kv ", p.num_kv));
  }
  if (!std::isfinite(p.scale) || p.scale == 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat("importance: scale ", p.scale));
  }
  const int64_t num_blocks = (p.num_kv + p.block_size - 1) / p.block_size;
  if (num_blocks == 0) return absl::OkStatus();
  if (p.importance == nullptr || (p.num_q > 0 && (p.q == nullptr || p.k == nullptr))) {
    return absl::InvalidArgumentError("importance: q, k and importance must not be null");
  }
  std::fill(p.importance, p.importance + p.kv_heads * num_blocks, 0.0f);
  if (p.num_q == 0) return absl::OkStatus();

  const int32_t group = p.q_heads / p.kv_heads;
  const int32_t d = p.head_dim;
  const int64_t q_row = static_cast<int64_t>(p.q_heads) * d;
  const int64_t k_row = static_cast<int64_t>(p.kv_heads) * d;
  const int64_t keys = p.q_pos0 + p.num_q;  // keys visible to the last observer
  const int64_t used_blocks = (keys + p.block_size - 1) / p.block_size;
  // Observers in slices so that the score matrix stays below 64 MiB.
  const int64_t slice = std::clamp<int64_t>((int64_t{16} << 20) / keys, 1, p.num_q);
  std::vector<float> s(static_cast<size_t>(slice * keys));
  std::vector<float> inv_sum(slice);

  for (int32_t h = 0; h < p.q_heads; ++h) {
    float* imp = p.importance + (h / group) * num_blocks;
    for (int64_t o0 = 0; o0 < p.num_q; o0 += slice) {
      const int64_t n = std::min(slice, p.num_q - o0);
      GemmF32(Trans::kNo, Trans::kYes, n, keys, d, p.scale, p.q + o0 * q_row + h * d, q_row,
              p.k + (h / group) * d, k_row, 0.0f, s.data(), keys);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        float* row = s.data() + i * keys;
        const int64_t len = p.q_pos0 + o0 + i + 1;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < len; ++j) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < len; ++j) {
          row[j] = internal::ExpNonPositive(row[j] - mx);
          sum += row[j];
        }
        std::fill(row + len, row + keys, 0.0f);  // causal mask
        inv_sum[i] = 1.0f / sum;
      }
      // Blocks are split among threads, so every block is accumulated in one fixed order.
#pragma omp parallel for schedule(static)
      for (int64_t b = 0; b < used_blocks; ++b) {
        const int64_t j0 = b * p.block_size;
        const int64_t j1 = std::min(keys, j0 + p.block_size);
        float total = 0.0f;
        for (int64_t i = 0; i < n; ++i) {
          const float* row = s.data() + i * keys;
          float mass = 0.0f;
#pragma omp simd reduction(+ : mass)
          for (int64_t j = j0; j < j1; ++j) mass += row[j];
          total += mass * inv_sum[i];
        }
        imp[b] += total;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
