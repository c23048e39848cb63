// LaunchBlockSummaries and LaunchSelectBlocks against BlockSummariesRef / SelectBlocksRef on
// fresh random inputs, with sentinel bytes around every device output.
//
// The GPU scores in bf16 on tensor cores with fp32 accumulation and a fast exp2; the reference
// works in fp32 on the same (bf16-exact) values. The two can disagree only where two blocks'
// scores are within rounding of each other, so lists are compared tie-aware: every block where
// they differ must score (by a double-precision recomputation here) within a small tolerance of
// the k-th best candidate score of that list; forced blocks must always match. Every case runs
// both GPU paths (the fused top-k and the materialised block scores), which compute the same
// scores and so must produce identical lists.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kernels/selection.h"
#include "tests/gpu/gpu_testing.h"
#include "tests/testing/compare.h"

namespace sparsefill::kernels {
namespace {

using ::sparsefill::testing::AllClose;
using ::sparsefill::testing::FreshSeed;
using ::sparsefill::testing::RandomNormal;
using ::testing::HasSubstr;

using DeviceBuffer = testing::GuardedDeviceBuffer;

// bf16 bits of `values` and their exact fp32 values (what the reference sees).
struct Bf16Tensor {
  std::vector<uint16_t> bits;
  std::vector<float> f32;
  explicit Bf16Tensor(const std::vector<float>& values) : bits(values.size()), f32(values.size()) {
    for (size_t i = 0; i < values.size(); ++i) {
      bits[i] = F32ToBf16(values[i]);
      f32[i] = Bf16ToF32(bits[i]);
    }
  }
};

class GpuSelectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
    CUDA_ASSERT(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  cudaStream_t stream_ = nullptr;
};

// ---------------------------------------------------------------- summaries

struct SummaryCase {
  int32_t kernel, stride;
  float lambda;
  int64_t num_kv, k_pos0;
  int32_t kv_heads, head_dim;
};

void RunSummaryCase(const SummaryCase& c, cudaStream_t stream) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message()
               << "seed " << seed << " kernel " << c.kernel << " stride " << c.stride << " lambda "
               << c.lambda << " num_kv " << c.num_kv << " k_pos0 " << c.k_pos0);
  Rng rng(seed);
  Bf16Tensor k(RandomNormal(c.num_kv * c.kv_heads * c.head_dim, rng));
  std::vector<uint8_t> punct(c.num_kv);
  for (auto& v : punct) v = rng.Uniform() < 0.15f ? 1 : 0;
  const ChunkRange range = SummaryChunkRange(c.k_pos0, c.num_kv, c.kernel, c.stride);
  ASSERT_GT(range.count, 0);
  const size_t n_out = range.count * c.kv_heads * c.head_dim;

  DeviceBuffer dk(k.bits.size() * 2), dp(punct.size()), dout(n_out * 2);
  ASSERT_TRUE(dk.ok() && dp.ok() && dout.ok());
  ASSERT_TRUE(dk.Upload(k.bits.data(), k.bits.size() * 2));
  ASSERT_TRUE(dp.Upload(punct.data(), punct.size()));
  BlockSummaryCudaParams p;
  p.k = dk.data();
  p.punct = c.lambda < 1.0f ? static_cast<const uint8_t*>(dp.data()) : nullptr;
  p.summaries = dout.data();
  p.num_kv = c.num_kv;
  p.k_pos0 = c.k_pos0;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.kernel_size = c.kernel;
  p.kernel_stride = c.stride;
  p.lambda = c.lambda;
  ASSERT_TRUE(LaunchBlockSummaries(p, stream).ok());
  CUDA_ASSERT(cudaStreamSynchronize(stream));

  std::vector<float> want(n_out);
  BlockSummaryParams r;
  r.k = k.f32.data();
  r.punct = punct.data();
  r.summaries = want.data();
  r.num_kv = c.num_kv;
  r.k_pos0 = c.k_pos0;
  r.kv_heads = c.kv_heads;
  r.head_dim = c.head_dim;
  r.kernel_size = c.kernel;
  r.kernel_stride = c.stride;
  r.lambda = c.lambda;
  ASSERT_TRUE(BlockSummariesRef(r).ok());

  const std::vector<uint8_t> all = dout.DownloadAll();
  EXPECT_TRUE(dout.GuardsIntact(all));
  const std::vector<uint16_t> bits = dout.Payload<uint16_t>(all);
  std::vector<float> got(n_out);
  for (size_t i = 0; i < n_out; ++i) got[i] = Bf16ToF32(bits[i]);
  // One bf16 rounding of an fp32 mean (the reference accumulates in double).
  EXPECT_TRUE(AllClose(got, want, 1e-6, 4.0 / 256));
}

TEST_F(GpuSelectionTest, SummariesMatchReference) {
  for (const SummaryCase& c :
       {SummaryCase{32, 16, 1.0f, 1237, 0, 8, 128}, SummaryCase{32, 16, 1.0f, 999, 37, 2, 64},
        SummaryCase{16, 16, 1.0f, 1001, 16 * 7 + 3, 4, 128},
        SummaryCase{16, 16, 0.5f, 1001, 5, 4, 128}, SummaryCase{32, 16, 0.5f, 777, 100, 3, 64},
        SummaryCase{16, 16, 0.0f, 300, 1000, 2, 64}}) {
    RunSummaryCase(c, stream_);
  }
}

TEST_F(GpuSelectionTest, SummariesSmall) {
  RunSummaryCase(SummaryCase{32, 16, 0.5f, 131, 9, 2, 64}, stream_);
}

// ---------------------------------------------------------------- selection

struct SelectCase {
  int32_t q_heads, kv_heads, head_dim;
  int32_t kernel, stride, block;
  int32_t init, local, topk, query_aware;
  int64_t num_q, q_pos0;
  int64_t max_chunk_queries;
};

// Block scores of one (KV head, query) as the header defines them, in double.
std::vector<double> RefBlockScores(const SelectBlocksParams& p, int32_t g, int64_t i) {
  const int64_t t = p.q_pos0 + i;
  const int64_t vis = NumCompressedChunks(t + 1, p.kernel_size, p.kernel_stride);
  const int32_t group = p.q_heads / p.kv_heads, d = p.head_dim;
  std::vector<double> prob(std::max<int64_t>(vis, 1), 0.0), s(std::max<int64_t>(vis, 1));
  for (int32_t j = 0; j < group && vis > 0; ++j) {
    const float* q = p.q + (i * p.q_heads + g * group + j) * d;
    double mx = -1e300;
    for (int64_t m = 0; m < vis; ++m) {
      const float* kc = p.summaries + (m * p.kv_heads + g) * d;
      double acc = 0;
      for (int32_t c = 0; c < d; ++c) acc += static_cast<double>(q[c]) * kc[c];
      s[m] = acc * p.scale;
      mx = std::max(mx, s[m]);
    }
    double sum = 0;
    for (int64_t m = 0; m < vis; ++m) sum += std::exp(s[m] - mx);
    for (int64_t m = 0; m < vis; ++m) prob[m] += std::exp(s[m] - mx) / sum;
  }
  const int64_t qb = t / p.block_size;
  const int32_t ps = p.block_size / p.kernel_stride, pad = p.kernel_size / p.kernel_stride - 1;
  std::vector<double> out(qb + 1, 0.0);
  for (int64_t b = 0; b <= qb; ++b) {
    for (int64_t m = std::max<int64_t>(0, b * ps - pad); m < std::min(vis, (b + 1) * ps); ++m) {
      out[b] = std::max(out[b], prob[m]);
    }
  }
  return out;
}

// The n-th best (1-based) of values[lo, hi), skipping `skip`.
double NthBest(const std::vector<double>& values, int64_t lo, int64_t hi, int64_t n,
               const std::set<int32_t>& skip) {
  std::vector<double> v;
  for (int64_t b = lo; b < hi; ++b) {
    if (!skip.count(static_cast<int32_t>(b))) v.push_back(values[b]);
  }
  if (n <= 0 || v.empty()) return 0;
  n = std::min<int64_t>(n, v.size());
  std::nth_element(v.begin(), v.begin() + (n - 1), v.end(), std::greater<double>());
  return v[n - 1];
}

void RunSelectCase(const SelectCase& c, cudaStream_t stream) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message()
               << "seed " << seed << " heads " << c.q_heads << "/" << c.kv_heads << " d "
               << c.head_dim << " kernel " << c.kernel << " stride " << c.stride << " block "
               << c.block << " init " << c.init << " local " << c.local << " topk " << c.topk
               << " qa " << c.query_aware << " num_q " << c.num_q << " q_pos0 " << c.q_pos0);
  Rng rng(seed);
  const int64_t last = c.q_pos0 + c.num_q;
  const int64_t num_chunks = NumCompressedChunks(last, c.kernel, c.stride) + 3;  // more is fine
  // Queries with a few strong directions shared by some summaries, so that scores are peaked.
  std::vector<float> qv = RandomNormal(c.num_q * c.q_heads * c.head_dim, rng, 1.5f);
  std::vector<float> kv = RandomNormal(num_chunks * c.kv_heads * c.head_dim, rng, 1.0f);
  Bf16Tensor q(qv), kc(kv);
  const int64_t imp_blocks = last / c.block + 2;
  std::vector<float> importance = RandomNormal(c.kv_heads * imp_blocks, rng);
  const size_t n_out = static_cast<size_t>(c.kv_heads) * c.num_q * c.topk;

  SelectBlocksCudaParams p;
  p.num_q = c.num_q;
  p.q_pos0 = c.q_pos0;
  p.num_chunks = num_chunks;
  p.importance_blocks = imp_blocks;
  p.q_heads = c.q_heads;
  p.kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.kernel_size = c.kernel;
  p.kernel_stride = c.stride;
  p.block_size = c.block;
  p.init_blocks = c.init;
  p.local_blocks = c.local;
  p.topk = c.topk;
  p.query_aware = c.query_aware;
  p.max_chunk_queries = c.max_chunk_queries;

  DeviceBuffer dq(q.bits.size() * 2), dk(kc.bits.size() * 2), dimp(importance.size() * 4);
  ASSERT_TRUE(dq.ok() && dk.ok() && dimp.ok());
  ASSERT_TRUE(dq.Upload(q.bits.data(), q.bits.size() * 2));
  ASSERT_TRUE(dk.Upload(kc.bits.data(), kc.bits.size() * 2));
  ASSERT_TRUE(dimp.Upload(importance.data(), importance.size() * 4));
  p.q = dq.data();
  p.summaries = dk.data();
  p.block_importance = static_cast<const float*>(dimp.data());
  std::vector<int32_t> got, got_materialized;
  for (bool materialize : {false, true}) {
    p.materialize_scores = materialize;
    DeviceBuffer dout(n_out * 4), dws(SelectBlocksWorkspaceBytes(p));
    ASSERT_TRUE(dout.ok() && dws.ok());
    p.blocks = static_cast<int32_t*>(dout.data());
    const absl::Status st =
        LaunchSelectBlocks(p, dws.data(), SelectBlocksWorkspaceBytes(p), stream);
    ASSERT_TRUE(st.ok()) << st;
    CUDA_ASSERT(cudaStreamSynchronize(stream));
    const std::vector<uint8_t> all = dout.DownloadAll();
    EXPECT_TRUE(dout.GuardsIntact(all)) << "materialize_scores " << materialize;
    (materialize ? got_materialized : got) = dout.Payload<int32_t>(all);
  }
  // Same scores, same tie rule: the two paths must agree entry for entry.
  int64_t paths_differing = 0;
  for (size_t row = 0; row * c.topk < n_out; ++row) {
    const auto a = got.begin() + row * c.topk, b = got_materialized.begin() + row * c.topk;
    if (std::equal(a, a + c.topk, b)) continue;
    if (paths_differing++ == 0) {
      ADD_FAILURE() << "fused and materialised lists differ first at kv head " << row / c.num_q
                    << " query " << row % c.num_q << ": "
                    << ::testing::PrintToString(std::vector<int32_t>(a, a + c.topk)) << " vs "
                    << ::testing::PrintToString(std::vector<int32_t>(b, b + c.topk));
    }
  }
  EXPECT_EQ(paths_differing, 0) << "rows where the fused and materialised paths differ";

  std::vector<int32_t> want(n_out, -7);
  SelectBlocksParams r;
  r.q = q.f32.data();
  r.summaries = kc.f32.data();
  r.block_importance = importance.data();
  r.blocks = want.data();
  r.num_q = c.num_q;
  r.q_pos0 = c.q_pos0;
  r.num_chunks = num_chunks;
  r.importance_blocks = imp_blocks;
  r.q_heads = c.q_heads;
  r.kv_heads = c.kv_heads;
  r.head_dim = c.head_dim;
  r.scale = p.scale;
  r.kernel_size = c.kernel;
  r.kernel_stride = c.stride;
  r.block_size = c.block;
  r.init_blocks = c.init;
  r.local_blocks = c.local;
  r.topk = c.topk;
  r.query_aware = c.query_aware;
  ASSERT_TRUE(SelectBlocksRef(r).ok());

  const int32_t qa = c.query_aware <= 0 ? c.topk : std::min(c.query_aware, c.topk);
  int64_t rows_differing = 0, blocks_differing = 0;
  for (int32_t g = 0; g < c.kv_heads; ++g) {
    for (int64_t i = 0; i < c.num_q; ++i) {
      const int32_t* gl = got.data() + (g * c.num_q + i) * c.topk;
      const int32_t* wl = want.data() + (g * c.num_q + i) * c.topk;
      if (std::equal(gl, gl + c.topk, wl)) continue;
      ++rows_differing;
      const int64_t t = c.q_pos0 + i, qb = t / c.block;
      const int64_t n_valid = qb + 1, n_out_row = std::min<int64_t>(c.topk, n_valid);
      const int64_t cand_lo = std::min<int64_t>(c.init, n_valid);
      const int64_t cand_hi = std::max<int64_t>(cand_lo, qb - c.local);
      const int64_t n_forced = n_valid - (cand_hi - cand_lo);
      const int64_t by_score = std::min<int64_t>(qa, n_out_row) - n_forced;
      SCOPED_TRACE(::testing::Message()
                   << "kv head " << g << " query " << i << " (pos " << t << ")");
      // Well formed: n_out_row ascending valid entries, then -1.
      for (int64_t j = 0; j < c.topk; ++j) {
        if (j < n_out_row) {
          ASSERT_GE(gl[j], 0) << "entry " << j;
          ASSERT_LE(gl[j], qb) << "entry " << j;
          if (j > 0) {
            ASSERT_LT(gl[j - 1], gl[j]) << "entry " << j;
          }
        } else {
          ASSERT_EQ(gl[j], -1) << "entry " << j;
        }
      }
      const std::set<int32_t> gs(gl, gl + n_out_row), ws(wl, wl + n_out_row);
      for (int64_t b = 0; b <= qb; ++b) {
        if (b < cand_lo || b >= cand_hi) {
          ASSERT_TRUE(gs.count(static_cast<int32_t>(b))) << "forced block " << b << " missing";
        }
      }
      const std::vector<double> sc = RefBlockScores(r, g, i);
      const double kth = NthBest(sc, cand_lo, cand_hi, by_score, {});
      // NOSA: the importance part may shift when the score part does.
      std::vector<double> imp(qb + 1);
      for (int64_t b = 0; b <= qb; ++b) imp[b] = importance[g * imp_blocks + b];
      for (int32_t b = 0; b <= qb; ++b) {
        if (gs.count(b) == ws.count(b)) continue;
        ++blocks_differing;
        const double tol = 1e-5 + 2e-3 * kth;
        bool near = std::abs(sc[b] - kth) <= tol;
        if (!near && qa < c.topk) {
          std::set<int32_t> score_taken;
          for (int32_t x : ws) {
            if (x >= cand_lo && x < cand_hi && sc[x] >= kth - tol) score_taken.insert(x);
          }
          const double ikth =
              NthBest(imp, cand_lo, cand_hi, n_out_row - n_forced - by_score, score_taken);
          near = std::abs(imp[b] - ikth) <= 1e-6 || std::abs(sc[b] - kth) <= 10 * tol;
        }
        EXPECT_TRUE(near) << "block " << b << " (gpu " << gs.count(b) << ", ref " << ws.count(b)
                          << ") scores " << sc[b] << ", k-th best " << kth;
      }
    }
  }
  // Near-ties are rare on continuous random data: many differences mean a real bug.
  EXPECT_LE(rows_differing, std::max<int64_t>(4, c.kv_heads * c.num_q / 50))
      << blocks_differing << " blocks differ";
}

TEST_F(GpuSelectionTest, SelectMatchesReference) {
  for (const SelectCase& c : {
           // q_heads, kv, d, kernel, stride, block, init, local, topk, qa, num_q, q_pos0, chunk
           SelectCase{2, 2, 64, 32, 16, 64, 1, 2, 12, 0, 1000, 0, 0},
           SelectCase{8, 2, 128, 32, 16, 64, 1, 4, 16, 0, 777, 1500, 0},
           SelectCase{8, 1, 128, 16, 16, 16, 8, 32, 64, 0, 1111, 333, 0},
           SelectCase{16, 1, 64, 32, 16, 128, 1, 1, 6, 0, 900, 2000, 0},
           SelectCase{4, 2, 128, 16, 16, 32, 2, 3, 20, 0, 1500, 77, 0},
           SelectCase{8, 2, 64, 32, 16, 32, 1, 2, 24, 12, 800, 600, 0},
           SelectCase{8, 2, 128, 32, 16, 64, 1, 2, 10, 0, 1300, 100, 200},
           // Long rows against short running lists, so the fused path cuts its lists many
           // times (G 4: B 16 takes 64 blocks a tile; G 1, d 64: B 64 with topk 20).
           SelectCase{16, 4, 128, 16, 16, 16, 8, 32, 150, 0, 700, 4001, 0},
           SelectCase{2, 2, 64, 32, 16, 64, 1, 2, 20, 0, 1000, 2500, 0},
           SelectCase{16, 1, 128, 32, 16, 64, 1, 32, 64, 0, 1200, 131, 0},
           SelectCase{16, 4, 128, 16, 16, 16, 8, 32, 120, 90, 900, 2999, 0},
       }) {
    RunSelectCase(c, stream_);
    if (HasFatalFailure()) return;
  }
}

TEST_F(GpuSelectionTest, SelectSmall) {
  RunSelectCase(SelectCase{8, 2, 64, 32, 16, 32, 1, 1, 8, 6, 150, 90, 64}, stream_);
}

// GQA groups 1, 4, 8 and 16 on the PHSA and InfLLM-V2 shapes, query ranges that start and end
// inside a block.
TEST_F(GpuSelectionTest, SelectGroups) {
  for (const SelectCase& c : {
           SelectCase{4, 4, 128, 16, 16, 16, 8, 32, 57, 0, 1001, 1237, 0},
           SelectCase{16, 4, 128, 16, 16, 16, 8, 32, 57, 0, 1001, 1237, 0},
           SelectCase{32, 4, 128, 16, 16, 16, 8, 32, 57, 0, 1001, 1237, 333},
           SelectCase{64, 4, 128, 16, 16, 16, 8, 32, 57, 0, 1001, 1237, 0},
           SelectCase{4, 4, 128, 32, 16, 64, 1, 8, 24, 0, 777, 3001, 0},
           SelectCase{16, 4, 128, 32, 16, 64, 1, 8, 24, 0, 777, 3001, 0},
           SelectCase{32, 4, 64, 32, 16, 64, 1, 8, 24, 0, 777, 3001, 0},
           SelectCase{64, 4, 128, 32, 16, 64, 1, 8, 24, 0, 777, 3001, 0},
       }) {
    RunSelectCase(c, stream_);
    if (HasFatalFailure()) return;
  }
}

// Parameter checks run before any CUDA call, so they need no device.
TEST(GpuSelectionLaunchers, RejectBadParams) {
  alignas(16) static uint16_t q[64 * 128];
  alignas(16) static uint16_t kc[64 * 128];
  static int32_t out[4096];
  SelectBlocksCudaParams good;
  good.q = q;
  good.summaries = kc;
  good.blocks = out;
  good.num_q = 16;
  good.q_pos0 = 0;
  good.num_chunks = 1;
  good.q_heads = 4;
  good.kv_heads = 1;
  good.head_dim = 128;
  good.scale = 0.088f;
  good.kernel_size = 32;
  good.kernel_stride = 16;
  good.block_size = 64;
  good.init_blocks = 1;
  good.local_blocks = 2;
  good.topk = 8;
  alignas(256) static uint8_t ws[1 << 16];
  ASSERT_LE(SelectBlocksWorkspaceBytes(good), sizeof(ws));

  struct Bad {
    const char* what;
    void (*mutate)(SelectBlocksCudaParams&);
  };
  for (const Bad& b : std::vector<Bad>{
           {"head_dim", [](SelectBlocksCudaParams& p) { p.head_dim = 96; }},
           {"q_heads / kv_heads", [](SelectBlocksCudaParams& p) { p.q_heads = 3; }},
           {"block_size / kernel_stride", [](SelectBlocksCudaParams& p) { p.block_size = 48; }},
           {"topk", [](SelectBlocksCudaParams& p) { p.topk = 300; }},
           {"topk", [](SelectBlocksCudaParams& p) { p.topk = 2; }},
           {"kernel_size", [](SelectBlocksCudaParams& p) { p.kernel_size = 24; }},
           {"q and blocks", [](SelectBlocksCudaParams& p) { p.q = nullptr; }},
           {"16-byte aligned",
            [](SelectBlocksCudaParams& p) { p.q = static_cast<const uint16_t*>(p.q) + 1; }},
           {"num_chunks", [](SelectBlocksCudaParams& p) { p.num_q = 64; }},
           {"block_importance", [](SelectBlocksCudaParams& p) { p.query_aware = 5; }},
           {"scale", [](SelectBlocksCudaParams& p) { p.scale = NAN; }},
       }) {
    SelectBlocksCudaParams p = good;
    b.mutate(p);
    const absl::Status s = LaunchSelectBlocks(p, ws, sizeof(ws), nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << b.what << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(b.what));
  }
  const absl::Status small = LaunchSelectBlocks(good, ws, 16, nullptr);
  EXPECT_EQ(small.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(small.message()), HasSubstr("workspace"));

  BlockSummaryCudaParams sp;
  sp.k = q;
  sp.summaries = kc;
  sp.num_kv = 64;
  sp.kv_heads = 1;
  sp.head_dim = 128;
  sp.kernel_size = 32;
  sp.kernel_stride = 16;
  sp.lambda = 0.5f;  // without a punctuation mask
  absl::Status s = LaunchBlockSummaries(sp, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("punctuation"));
  sp.lambda = 1.0f;
  sp.kernel_size = 20;
  s = LaunchBlockSummaries(sp, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("kernel_size"));
  sp.kernel_size = 32;
  sp.head_dim = 127;
  s = LaunchBlockSummaries(sp, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("head_dim"));
}

}  // namespace
}  // namespace sparsefill::kernels
