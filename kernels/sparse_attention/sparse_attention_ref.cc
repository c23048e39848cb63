// Block-sparse causal attention on the CPU (the CPU backend's sparse path).
//
// Work item = (KV head, query): the G query heads of the group share the selection, so each
// selected key and value row is loaded once for all of them. Scores are kept for the whole
// selection (at most max_blocks * block_size keys), so the softmax is exact two-pass rather than
// online.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/dense_attention/cpu_math.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kernels/attention.h"

namespace sparsefill::kernels {

absl::Status ValidateSelection(const AttentionParams& p, const BlockSelection& sel) {
  SF_RETURN_IF_ERROR(ValidateAttention(p));
  if (sel.block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection: block_size ", sel.block_size, " <= 0"));
  }
  if (sel.max_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("selection: max_blocks ", sel.max_blocks, " < 0"));
  }
  if (p.num_q == 0 || sel.max_blocks == 0) return absl::OkStatus();
  if (sel.blocks == nullptr) return absl::InvalidArgumentError("selection: blocks is null");
  for (int32_t hk = 0; hk < p.kv_heads; ++hk) {
    for (int64_t i = 0; i < p.num_q; ++i) {
      const int32_t* list = sel.blocks + (static_cast<int64_t>(hk) * p.num_q + i) * sel.max_blocks;
      const int64_t own_block = (p.q_pos0 + i) / sel.block_size;
      int64_t prev = -1;
      bool padding = false;
      for (int32_t s = 0; s < sel.max_blocks; ++s) {
        const int32_t b = list[s];
        const auto where = [&] {
          return absl::StrCat("selection.blocks[kv_head ", hk, ", query ", i, ", slot ", s,
                              "] = ", b);
        };
        if (b == -1) {
          padding = true;
          continue;
        }
        if (b < -1) return absl::InvalidArgumentError(absl::StrCat(where(), " is negative"));
        if (padding) {
          return absl::InvalidArgumentError(
              absl::StrCat(where(), " follows -1 padding (valid entries must come first)"));
        }
        if (b <= prev) {
          return absl::InvalidArgumentError(
              absl::StrCat(where(), " is not after the previous entry ", prev,
                           " (entries must be unique and ascending)"));
        }
        if (b > own_block) {
          return absl::InvalidArgumentError(absl::StrCat(
              where(), " is after the query's own block ", own_block, " (position ", p.q_pos0 + i,
              ", ", (p.num_kv + sel.block_size - 1) / sel.block_size, " blocks in all)"));
        }
        prev = b;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SparseAttentionRef(const AttentionParams& p, const BlockSelection& sel) {
  SF_RETURN_IF_ERROR(ValidateSelection(p, sel));
  if (p.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("SparseAttentionRef: dtype ",
                                                   AsAbsl(DTypeName(p.dtype)),
                                                   " not supported (the reference is fp32 only)"));
  }
  if (p.num_q == 0) return absl::OkStatus();

  const float* q = static_cast<const float*>(p.q);
  const float* k = static_cast<const float*>(p.k);
  const float* v = static_cast<const float*>(p.v);
  float* out = static_cast<float*>(p.out);
  const int64_t G = p.q_heads / p.kv_heads;
  const int64_t d = p.head_dim;
  const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * d;
  const int64_t q_stride = static_cast<int64_t>(p.q_heads) * d;
  const int64_t max_keys = static_cast<int64_t>(sel.max_blocks) * sel.block_size;
  const float qscale = p.scale * cpu::kLog2e;
  const int64_t items = static_cast<int64_t>(p.kv_heads) * p.num_q;

#pragma omp parallel
  {
    std::vector<int64_t> keys(max_keys);
    std::vector<float> s(G *
                         (max_keys + 8));  // [G, keys rounded up to 8] scores, then probabilities
    std::vector<float> acc(G * d);         // [G, d]
    std::vector<float> inv_sum(G);
#pragma omp for schedule(dynamic, 64)
    for (int64_t item = 0; item < items; ++item) {
      const int32_t hk = static_cast<int32_t>(item / p.num_q);
      const int64_t i = item % p.num_q;
      const int64_t pos = p.q_pos0 + i;
      const int32_t* list = sel.blocks + item * sel.max_blocks;
      int64_t n = 0;
      for (int32_t slot = 0; slot < sel.max_blocks && list[slot] >= 0; ++slot) {
        const int64_t begin = static_cast<int64_t>(list[slot]) * sel.block_size;
        const int64_t end = std::min(begin + sel.block_size, pos + 1);  // the causal diagonal
        for (int64_t j = begin; j < end; ++j) keys[n++] = j;
      }
      const float* qrow = q + i * q_stride + hk * G * d;
      float* orow = out + i * q_stride + hk * G * d;
      if (n == 0) {
        // Nothing selected: the empty softmax is the identity of an LSE merge (out 0, lse -inf).
        std::fill(orow, orow + G * d, 0.0f);
        if (p.lse != nullptr) {
          for (int64_t g = 0; g < G; ++g) {
            p.lse[(hk * G + g) * p.num_q + i] = -std::numeric_limits<float>::infinity();
          }
        }
        continue;
      }
      const int64_t n_pad = (n + 7) / 8 * 8;  // -inf padding: exact zeros after the exp
      for (int64_t jn = 0; jn < n; ++jn) {
        const float* krow = k + keys[jn] * kv_stride + hk * d;
        for (int64_t g = 0; g < G; ++g) {
          s[g * n_pad + jn] = cpu::Dot(qrow + g * d, krow, d) * qscale;
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        float* sg = s.data() + g * n_pad;
        std::fill(sg + n, sg + n_pad, -std::numeric_limits<float>::infinity());
        const float mx = cpu::RowMax8(sg, n_pad);
        const float sum = cpu::Exp2SubSum8(sg, n_pad, mx);
        inv_sum[g] = 1.0f / sum;
        if (p.lse != nullptr) {
          p.lse[(hk * G + g) * p.num_q + i] = (mx + std::log2(sum)) * cpu::kLn2;
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t jn = 0; jn < n; ++jn) {
        const float* vrow = v + keys[jn] * kv_stride + hk * d;
        for (int64_t g = 0; g < G; ++g) {
          const float pg = s[g * n_pad + jn];
          float* ag = acc.data() + g * d;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) ag[c] += pg * vrow[c];
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        for (int64_t c = 0; c < d; ++c) orow[g * d + c] = acc[g * d + c] * inv_sum[g];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
