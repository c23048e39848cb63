#include "services/engine/cpu/shard_importance.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/engine/cpu/shard_payload.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::cpu {
namespace {

using U128 = unsigned __int128;
constexpr double kFixedOne = 4611686018427387904.0;  // 2^62: exp(s - max) <= 1 fits in 63 bits

// Fixed-order dot product (8 lanes, a fixed tree, then the tail): the same bits for a key
// whichever rank scores it. Vector types keep it vectorised without reassociation.
inline float DotFixed(const float* a, const float* b, int32_t d) {
  typedef float V8 __attribute__((vector_size(32)));
  V8 acc = V8{};
  int32_t i = 0;
  for (; i + 8 <= d; i += 8) {
    V8 x, y;
    std::memcpy(&x, a + i, 32);
    std::memcpy(&y, b + i, 32);
    acc += x * y;
  }
  float l[8];
  std::memcpy(l, &acc, 32);
  float s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

absl::StatusOr<ShardImportance> ComputeShardImportance(ShardExchange& exchange, int32_t layer,
                                                       const ShardImportanceInput& in) {
  if (in.q_heads <= 0 || in.kv_heads <= 0 || in.q_heads % in.kv_heads != 0 || in.head_dim <= 0 ||
      in.block_size <= 0 || in.observe <= 0 || in.num_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "importance: q_heads ", in.q_heads, ", kv_heads ", in.kv_heads, ", head_dim ", in.head_dim,
        ", block_size ", in.block_size, ", observe ", in.observe, ", tokens ", in.num_tokens,
        " must be positive (q_heads a multiple of kv_heads)"));
  }
  const ShardLayout& layout = exchange.layout();
  const TokenRange mine = exchange.shard();
  const int32_t world = exchange.world_size();
  const int64_t n = in.num_tokens, bs = in.block_size, d = in.head_dim;
  const int32_t hq = in.q_heads, hkv = in.kv_heads, group = hq / hkv;
  const int64_t q_row = int64_t{hq} * d, k_row = int64_t{hkv} * d;
  const int64_t n_obs = std::min<int64_t>(in.observe, n);
  const int64_t obs0 = n - n_obs;
  const int64_t heads_obs = n_obs * hq;

  // 1. The observer queries, from whichever ranks hold them.
  const int64_t my_obs0 = std::max(mine.begin, obs0);
  std::string my_q;
  if (my_obs0 < mine.end) {
    my_q = ToBytes(std::span<const float>(in.q + (my_obs0 - mine.begin) * q_row,
                                          static_cast<size_t>((mine.end - my_obs0) * q_row)));
  }
  SF_ASSIGN_OR_RETURN(std::vector<std::string> qs, exchange.AllGather(layer, "imp-q", my_q));
  std::vector<float> qobs;
  qobs.reserve(static_cast<size_t>(n_obs * q_row));
  for (int32_t r = 0; r < world; ++r) {
    SF_ASSIGN_OR_RETURN(std::vector<float> part,
                        FromBytes<float>(qs[static_cast<size_t>(r)], "observer queries", r));
    qobs.insert(qobs.end(), part.begin(), part.end());
  }
  if (static_cast<int64_t>(qobs.size()) != n_obs * q_row) {
    return absl::DataLossError(absl::StrCat("importance (layer ", layer, "): the ranks sent ",
                                            qobs.size(), " observer query values, expected ",
                                            n_obs * q_row));
  }

  const int64_t ns = mine.size();
  const int64_t my_blocks = (ns + bs - 1) / bs;
  // Scores of observer o, head h against this shard's key j (absolute), visible when j <= pos.
  auto score = [&](int64_t o, int32_t h, int64_t j) {
    return DotFixed(qobs.data() + o * q_row + h * d,
                    in.k + (j - mine.begin) * k_row + (h / group) * d, static_cast<int32_t>(d)) *
           in.scale;
  };
  // Observers that see key j: o >= j - obs0.
  auto first_obs = [&](int64_t j) { return std::max<int64_t>(0, j - obs0); };

  // 2. Softmax maxima over this shard's keys, then over all ranks.
  std::vector<float> mx(static_cast<size_t>(heads_obs), -std::numeric_limits<float>::infinity());
#pragma omp parallel
  {
    std::vector<float> local(mx.size(), -std::numeric_limits<float>::infinity());
#pragma omp for schedule(static)
    for (int64_t bl = 0; bl < my_blocks; ++bl) {
      const int64_t j1 = std::min(mine.end, mine.begin + (bl + 1) * bs);
      for (int64_t j = mine.begin + bl * bs; j < j1; ++j) {
        for (int64_t o = first_obs(j); o < n_obs; ++o) {
          for (int32_t h = 0; h < hq; ++h) {
            float& m = local[static_cast<size_t>(o * hq + h)];
            m = std::max(m, score(o, h, j));
          }
        }
      }
    }
#pragma omp critical
    for (size_t i = 0; i < mx.size(); ++i) mx[i] = std::max(mx[i], local[i]);
  }
  SF_ASSIGN_OR_RETURN(std::vector<std::string> maxes,
                      exchange.AllGather(layer, "imp-max", ToBytes(std::span<const float>(mx))));
  std::vector<float> gmax(mx.size(), -std::numeric_limits<float>::infinity());
  for (int32_t r = 0; r < world; ++r) {
    SF_ASSIGN_OR_RETURN(
        std::vector<float> part,
        FromBytes<float>(maxes[static_cast<size_t>(r)], "importance maxima", r, heads_obs));
    for (size_t i = 0; i < gmax.size(); ++i) gmax[i] = std::max(gmax[i], part[i]);
  }

  // 3. Normalisers: fixed-point sums, exact in any grouping.
  auto weight = [&](int64_t o, int32_t h, int64_t j) {
    return std::exp(static_cast<double>(score(o, h, j)) -
                    static_cast<double>(gmax[static_cast<size_t>(o * hq + h)]));
  };
  std::vector<U128> zsum(mx.size(), 0);
#pragma omp parallel
  {
    std::vector<U128> local(zsum.size(), 0);
#pragma omp for schedule(static)
    for (int64_t bl = 0; bl < my_blocks; ++bl) {
      const int64_t j1 = std::min(mine.end, mine.begin + (bl + 1) * bs);
      for (int64_t j = mine.begin + bl * bs; j < j1; ++j) {
        for (int64_t o = first_obs(j); o < n_obs; ++o) {
          for (int32_t h = 0; h < hq; ++h) {
            local[static_cast<size_t>(o * hq + h)] +=
                static_cast<U128>(static_cast<uint64_t>(weight(o, h, j) * kFixedOne));
          }
        }
      }
    }
#pragma omp critical
    for (size_t i = 0; i < zsum.size(); ++i) zsum[i] += local[i];
  }
  SF_ASSIGN_OR_RETURN(std::vector<std::string> sums,
                      exchange.AllGather(layer, "imp-sum", ToBytes(std::span<const U128>(zsum))));
  std::vector<U128> gsum(zsum.size(), 0);
  for (int32_t r = 0; r < world; ++r) {
    SF_ASSIGN_OR_RETURN(std::vector<U128> part, FromBytes<U128>(sums[static_cast<size_t>(r)],
                                                                "importance sums", r, heads_obs));
    for (size_t i = 0; i < gsum.size(); ++i) gsum[i] += part[i];
  }
  std::vector<double> inv_z(gsum.size());
  for (size_t i = 0; i < gsum.size(); ++i) {
    const double z = static_cast<double>(gsum[i]) / kFixedOne;
    inv_z[i] = z > 0 ? 1.0 / z : 0.0;
  }

  // 4. This shard's blocks, each summed in one fixed order; then every rank's.
  ShardImportance out;
  out.mine.assign(static_cast<size_t>(hkv * my_blocks), 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t bl = 0; bl < my_blocks; ++bl) {
    const int64_t j0 = mine.begin + bl * bs;
    const int64_t j1 = std::min(mine.end, j0 + bs);
    for (int32_t g = 0; g < hkv; ++g) {
      double total = 0.0;
      for (int64_t o = first_obs(j0); o < n_obs; ++o) {
        for (int32_t h = g * group; h < (g + 1) * group; ++h) {
          double mass = 0.0;
          for (int64_t j = j0; j < j1 && j <= obs0 + o; ++j) mass += weight(o, h, j);
          total += mass * inv_z[static_cast<size_t>(o * hq + h)];
        }
      }
      out.mine[static_cast<size_t>(g * my_blocks + bl)] = static_cast<float>(total);
    }
  }
  SF_ASSIGN_OR_RETURN(
      std::vector<std::string> blocks,
      exchange.AllGather(layer, "imp-blocks", ToBytes(std::span<const float>(out.mine))));
  const int64_t num_blocks = (n + bs - 1) / bs;
  out.all.assign(static_cast<size_t>(hkv * num_blocks), 0.0f);
  for (int32_t r = 0; r < world; ++r) {
    const TokenRange theirs = layout.range(r);
    const int64_t nb = (theirs.size() + bs - 1) / bs;
    SF_ASSIGN_OR_RETURN(std::vector<float> part, FromBytes<float>(blocks[static_cast<size_t>(r)],
                                                                  "block importance", r, hkv * nb));
    for (int32_t g = 0; g < hkv; ++g) {
      std::copy_n(part.begin() + g * nb, nb, out.all.begin() + g * num_blocks + theirs.begin / bs);
    }
  }
  return out;
}

}  // namespace sparsefill::engine::cpu
