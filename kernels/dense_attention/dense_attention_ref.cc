// Dense causal attention on the CPU: the CPU backend's real attention, so it is a blocked
// flash-style loop (online softmax over key tiles) rather than a naive triple loop.
//
// Work item = (KV head, query tile). A query tile packs the G query heads of the group as rows
// (row r = token r / G, head r % G), so K and V tiles are loaded once for the whole group. Tile
// products go through cpu::TileGemm (register-blocked, runs inside the OpenMP region; the
// OpenBLAS pthreads build must not be entered from several OpenMP threads at once).
#include <omp.h>

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

absl::Status ValidateAttention(const AttentionParams& p) {
  if (p.num_q < 0)
    return absl::InvalidArgumentError(absl::StrCat("attention: num_q ", p.num_q, " < 0"));
  if (p.num_kv < 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: num_kv ", p.num_kv, " < 0"));
  }
  if (p.q_pos0 < 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: q_pos0 ", p.q_pos0, " < 0"));
  }
  if (p.num_q > p.num_kv - p.q_pos0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: q_pos0 + num_q = ", p.q_pos0, " + ",
                                                   p.num_q, " exceeds num_kv ", p.num_kv,
                                                   " (queries must see their own key)"));
  }
  if (p.q_heads <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: q_heads ", p.q_heads, " <= 0"));
  }
  if (p.kv_heads <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: kv_heads ", p.kv_heads, " <= 0"));
  }
  if (p.q_heads % p.kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: q_heads ", p.q_heads,
                                                   " is not a multiple of kv_heads ", p.kv_heads));
  }
  if (p.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("attention: head_dim ", p.head_dim, " <= 0"));
  }
  if (!std::isfinite(p.scale) || p.scale == 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: scale ", p.scale, " must be finite and non-zero"));
  }
  if (p.dtype != DType::kF32 && p.dtype != DType::kF16 && p.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: unknown dtype ", static_cast<int>(p.dtype)));
  }
  if (p.num_q > 0) {
    if (p.q == nullptr) return absl::InvalidArgumentError("attention: q is null");
    if (p.k == nullptr) return absl::InvalidArgumentError("attention: k is null");
    if (p.v == nullptr) return absl::InvalidArgumentError("attention: v is null");
    if (p.out == nullptr) return absl::InvalidArgumentError("attention: out is null");
  }
  return absl::OkStatus();
}

namespace {

absl::Status CheckF32(const AttentionParams& p, const char* op) {
  if (p.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": dtype ", AsAbsl(DTypeName(p.dtype)),
                                                   " not supported (the reference is fp32 only)"));
  }
  return absl::OkStatus();
}

constexpr int kMr = 6;                // rows per micro-kernel
constexpr int64_t kRowsTarget = 128;  // query rows (tokens x group heads) per tile
constexpr int64_t kKeyTile = 256;     // keys per tile

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct Scratch {
  std::vector<float> qp;    // [rows_pad, d] queries pre-scaled into the log2 domain
  std::vector<float> s;     // [rows_pad, kKeyTile] scores, then probabilities
  std::vector<float> o;     // [rows_pad, d_pad] unnormalised output
  std::vector<float> kp;    // [kKeyTile / 16, d, 16] K tile, transposed into 16-key panels
  std::vector<float> vp;    // [d_pad / 16, kKeyTile, 16] V tile in 16-column panels
  std::vector<float> m, l;  // [rows_pad] running max (log2 domain) and sum
};

struct Geometry {
  int64_t group, d, d_pad, tq;
};

// One (KV head, query tile): queries t0 .. t0 + tq - 1 (relative to the shard).
void DenseTile(const AttentionParams& p, const Geometry& g, int32_t hk, int64_t t0, int64_t tq,
               Scratch& w) {
  const float* q = static_cast<const float*>(p.q);
  const float* k = static_cast<const float*>(p.k);
  const float* v = static_cast<const float*>(p.v);
  float* out = static_cast<float*>(p.out);
  const int64_t G = g.group, d = g.d, d_pad = g.d_pad;
  const int64_t rows = tq * G;
  const int64_t rows_pad = RoundUp(rows, kMr);
  const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * d;
  const int64_t q_stride = static_cast<int64_t>(p.q_heads) * d;
  const float qscale = p.scale * cpu::kLog2e;

  for (int64_t r = 0; r < rows_pad; ++r) {
    float* dst = w.qp.data() + r * d;
    if (r < rows) {
      const float* src = q + (t0 + r / G) * q_stride + (hk * G + r % G) * d;
      for (int64_t c = 0; c < d; ++c) dst[c] = src[c] * qscale;
    } else {
      std::fill(dst, dst + d, 0.0f);
    }
  }
  std::fill(w.o.begin(), w.o.begin() + rows_pad * d_pad, 0.0f);
  std::fill(w.m.begin(), w.m.begin() + rows_pad, -std::numeric_limits<float>::infinity());
  std::fill(w.l.begin(), w.l.begin() + rows_pad, 0.0f);

  const int64_t first_pos = p.q_pos0 + t0;
  const int64_t kv_end = first_pos + tq;  // keys past the last query are never visible
  for (int64_t j0 = 0; j0 < kv_end; j0 += kKeyTile) {
    const int64_t nk = std::min(kKeyTile, kv_end - j0);
    const int64_t nk_pad = RoundUp(nk, 16);
    for (int64_t jj = 0; jj < nk_pad; ++jj) {
      float* kdst = w.kp.data() + (jj / 16) * d * 16 + jj % 16;
      if (jj < nk) {
        const float* ksrc = k + (j0 + jj) * kv_stride + hk * d;
        const float* vsrc = v + (j0 + jj) * kv_stride + hk * d;
        for (int64_t c = 0; c < d; ++c) kdst[c * 16] = ksrc[c];
        for (int64_t c = 0; c < d_pad; ++c) {
          w.vp[(c / 16) * nk_pad * 16 + jj * 16 + c % 16] = c < d ? vsrc[c] : 0.0f;
        }
      } else {
        for (int64_t c = 0; c < d; ++c) kdst[c * 16] = 0.0f;
        for (int64_t c = 0; c < d_pad; ++c) w.vp[(c / 16) * nk_pad * 16 + jj * 16 + c % 16] = 0.0f;
      }
    }
    cpu::TileGemm<kMr>(rows_pad, nk_pad, d, w.qp.data(), d, w.kp.data(), 16, d * 16, w.s.data(),
                       kKeyTile, /*accumulate=*/false);

    const bool diagonal = j0 + nk - 1 > first_pos;
    for (int64_t r = 0; r < rows_pad; ++r) {
      float* srow = w.s.data() + r * kKeyTile;
      const int64_t pos = first_pos + std::min(r / G, tq - 1);
      const int64_t visible = diagonal ? std::clamp<int64_t>(pos - j0 + 1, 0, nk) : nk;
      for (int64_t jj = visible; jj < nk_pad; ++jj)
        srow[jj] = -std::numeric_limits<float>::infinity();
      // Key 0 is in the first tile and visible to every row, so m_new is always finite.
      const float m_new = std::max(w.m[r], cpu::RowMax8(srow, nk_pad));
      const float alpha = cpu::FastExp2(w.m[r] - m_new);
      const float sum = cpu::Exp2SubSum8(srow, nk_pad, m_new);
      w.l[r] = w.l[r] * alpha + sum;
      w.m[r] = m_new;
      if (alpha != 1.0f) {
        float* orow = w.o.data() + r * d_pad;
#pragma omp simd
        for (int64_t c = 0; c < d_pad; ++c) orow[c] *= alpha;
      }
    }
    cpu::TileGemm<kMr>(rows_pad, d_pad, nk_pad, w.s.data(), kKeyTile, w.vp.data(), 16, nk_pad * 16,
                       w.o.data(), d_pad, /*accumulate=*/true);
  }

  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = t0 + r / G;
    const int64_t h = hk * G + r % G;
    const float inv = 1.0f / w.l[r];
    const float* orow = w.o.data() + r * d_pad;
    float* dst = out + t * q_stride + h * d;
    for (int64_t c = 0; c < d; ++c) dst[c] = orow[c] * inv;
    if (p.lse != nullptr) p.lse[h * p.num_q + t] = (w.m[r] + std::log2(w.l[r])) * cpu::kLn2;
  }
}

}  // namespace

absl::Status DenseAttentionRef(const AttentionParams& p) {
  SF_RETURN_IF_ERROR(ValidateAttention(p));
  SF_RETURN_IF_ERROR(CheckF32(p, "DenseAttentionRef"));
  if (p.num_q == 0) return absl::OkStatus();

  Geometry g;
  g.group = p.q_heads / p.kv_heads;
  g.d = p.head_dim;
  g.d_pad = RoundUp(g.d, 16);
  g.tq = std::max<int64_t>(1, kRowsTarget / g.group);
  // Smaller tiles when a short shard would leave threads idle.
  const int64_t threads = omp_get_max_threads();
  while (g.tq > 8 && p.kv_heads * ((p.num_q + g.tq - 1) / g.tq) < 4 * threads) g.tq /= 2;
  g.tq = std::min(g.tq, p.num_q);
  const int64_t tiles = (p.num_q + g.tq - 1) / g.tq;
  const int64_t items = tiles * p.kv_heads;
  const int64_t rows_pad = RoundUp(g.tq * g.group, kMr);

#pragma omp parallel
  {
    Scratch w;
    w.qp.resize(rows_pad * g.d);
    w.s.resize(rows_pad * kKeyTile);
    w.o.resize(rows_pad * g.d_pad);
    w.kp.resize(kKeyTile * g.d);
    w.vp.resize(kKeyTile * g.d_pad);
    w.m.resize(rows_pad);
    w.l.resize(rows_pad);
    // Later tiles see more keys: hand them out first so the last items are the short ones.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t tile = tiles - 1 - item / p.kv_heads;
      const int32_t hk = static_cast<int32_t>(item % p.kv_heads);
      const int64_t t0 = tile * g.tq;
      DenseTile(p, g, hk, t0, std::min(g.tq, p.num_q - t0), w);
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
