// LaunchDenseAttention, LaunchSparseAttention and their varlen twins against the CPU references
// (DenseAttentionRef / SparseAttentionRef fed the same bf16-rounded inputs in fp32), on fresh
// random inputs: GQA groups 1..16, head_dim 64/128, lengths that are not multiples of any tile,
// shards with q_pos0 > 0, selection blocks of 16/32/40/64/128 tokens, empty lists and lists of
// only far-away blocks, with sentinel guards around every output and NaN-poisoned payloads (an
// element the kernel forgets to write fails the comparison). Every dense case runs on every
// dense engine the device has (mma.sync; on compute capability 9.0 also the three wgmma
// schedules), each into freshly poisoned outputs.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/dense_attention/dense_engine.h"
#include "kernels/sparse_attention/sparse_engine.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/common/rng.h"
#include "sparsefill/kernels/attention.h"
#include "tests/gpu/gpu_testing.h"
#include "tests/testing/compare.h"

namespace sparsefill::kernels {
namespace {

using ::sparsefill::testing::AllClose;
using ::sparsefill::testing::FreshSeed;
using ::sparsefill::testing::RandomNormal;
using ::sparsefill::testing::RelativeL2Near;
using ::testing::HasSubstr;

// Whether the device runs the wgmma kernels (compute capability 9.0; built for sm_90a).
bool HasWgmma() {
  int dev = 0, major = 0, minor = 0;
  return cudaGetDevice(&dev) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
         cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
         major == 9 && minor == 0;
}

std::vector<DenseEngine> DenseEngines() {
  std::vector<DenseEngine> engines = {DenseEngine::kMmaSync};
  if (HasWgmma()) {
    engines.insert(engines.end(),
                   {DenseEngine::kWgmma, DenseEngine::kWgmmaSerial, DenseEngine::kWgmmaPingPong,
                    DenseEngine::kWgmmaTma, DenseEngine::kWgmmaTmaPingPong});
  }
  return engines;
}

// The sparse engines a test runs: mma.sync, and wgmma where the device has it.
std::vector<SparseEngine> SparseEngines() {
  std::vector<SparseEngine> engines = {SparseEngine::kMmaSync};
  if (HasWgmma()) engines.push_back(SparseEngine::kWgmma);
  return engines;
}

// Whether the wgmma sparse kernel takes a selection of this block size on this device (a power
// of two of at least 16; the tests' tensors are all TMA-aligned).
bool WgmmaTakesBlocks(int32_t block_size) {
  return HasWgmma() && block_size >= 16 && (block_size & (block_size - 1)) == 0;
}

// Outputs start as NaN (kPoison) so that an element the kernel never wrote fails the comparison.
class DeviceBuffer : public testing::GuardedDeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : GuardedDeviceBuffer(bytes, 0, testing::kPoison) {}
};

// bf16 data plus its exact fp32 value (what the CPU reference gets).
struct Bf16Tensor {
  std::vector<uint8_t> bytes;
  std::vector<float> f32;
  explicit Bf16Tensor(const std::vector<float>& values) : bytes(values.size() * 2) {
    ConvertFromF32(values.data(), DType::kBF16, bytes.data(), values.size());
    f32.resize(values.size());
    ConvertToF32(bytes.data(), DType::kBF16, f32.data(), values.size());
  }
};

std::vector<float> Bf16BytesToF32(const std::vector<uint8_t>& bytes) {
  std::vector<float> f(bytes.size() / 2);
  ConvertToF32(bytes.data(), DType::kBF16, f.data(), f.size());
  return f;
}

std::vector<float> F32Bytes(const std::vector<uint8_t>& bytes) {
  std::vector<float> f(bytes.size() / 4);
  std::memcpy(f.data(), bytes.data(), f.size() * 4);
  return f;
}

// One attention problem: inputs on host and device, outputs on device.
struct Problem {
  int64_t num_q, num_kv;
  int32_t q_heads, kv_heads, head_dim;
  float scale;
  Bf16Tensor q, k, v;
  Problem(int64_t nq, int64_t nkv, int32_t hkv, int32_t group, int32_t d, Rng& rng)
      : num_q(nq),
        num_kv(nkv),
        q_heads(hkv * group),
        kv_heads(hkv),
        head_dim(d),
        // A random temperature: some problems have flat softmaxes, others peaked ones.
        scale((0.5f + 1.5f * rng.Uniform()) / std::sqrt(static_cast<float>(d))),
        q(RandomNormal(nq * hkv * group * d, rng)),
        k(RandomNormal(nkv * hkv * d, rng)),
        v(RandomNormal(nkv * hkv * d, rng)) {}
};

struct Outputs {
  std::vector<float> out, lse;
};

// Downloads out / lse, checks the guards, and compares with the reference.
void ExpectMatches(DeviceBuffer& dout, DeviceBuffer& dlse, const Outputs& want) {
  const std::vector<uint8_t> out_all = dout.DownloadAll();
  const std::vector<uint8_t> lse_all = dlse.DownloadAll();
  EXPECT_TRUE(dout.GuardsIntact(out_all)) << "out";
  EXPECT_TRUE(dlse.GuardsIntact(lse_all)) << "lse";
  const std::vector<float> out = Bf16BytesToF32(dout.Payload(out_all));
  const std::vector<float> lse = F32Bytes(dlse.Payload(lse_all));
  EXPECT_TRUE(RelativeL2Near(out, want.out, 1e-2)) << "out";
  EXPECT_TRUE(AllClose(out, want.out, 3e-2, 3e-2)) << "out";
  // RelativeL2Near also requires the -inf LSEs of empty selections to agree exactly.
  EXPECT_TRUE(RelativeL2Near(lse, want.lse, 1e-3)) << "lse";
  std::vector<float> lse_f, want_f;
  for (size_t i = 0; i < lse.size() && i < want.lse.size(); ++i) {
    if (std::isfinite(want.lse[i])) {
      lse_f.push_back(lse[i]);
      want_f.push_back(want.lse[i]);
    }
  }
  EXPECT_TRUE(AllClose(lse_f, want_f, 2e-3, 1e-4)) << "lse";
}

AttentionParams RefParams(const Problem& pb, int64_t q_pos0, Outputs* want) {
  want->out.assign(pb.num_q * pb.q_heads * pb.head_dim, 0.0f);
  want->lse.assign(pb.num_q * pb.q_heads, 0.0f);
  AttentionParams r;
  r.q = pb.q.f32.data();
  r.k = pb.k.f32.data();
  r.v = pb.v.f32.data();
  r.out = want->out.data();
  r.lse = want->lse.data();
  r.num_q = pb.num_q;
  r.num_kv = pb.num_kv;
  r.q_pos0 = q_pos0;
  r.q_heads = pb.q_heads;
  r.kv_heads = pb.kv_heads;
  r.head_dim = pb.head_dim;
  r.scale = pb.scale;
  r.dtype = DType::kF32;
  return r;
}

// ---------------------------------------------------------------- selections

enum class SelMode {
  kRandom,       // independent per token: init, own block, a local window, random others
  kSharedTile,   // one list per 64-token query tile (how FlexAttention block masks look)
  kFarAndEmpty,  // many empty lists; the rest only far-away blocks (no diagonal)
};

// Lists for queries at positions q_pos0 .. q_pos0 + num_q - 1: [kv_heads, num_q, max_blocks].
std::vector<int32_t> RandomSelection(int64_t num_q, int64_t q_pos0, int32_t kv_heads,
                                     int32_t block_size, int32_t max_blocks, SelMode mode,
                                     Rng& rng) {
  std::vector<int32_t> sel(static_cast<size_t>(kv_heads) * num_q * max_blocks, -1);
  std::vector<int32_t> shared;
  for (int32_t hk = 0; hk < kv_heads; ++hk) {
    for (int64_t i = 0; i < num_q; ++i) {
      const int64_t pos = q_pos0 + i;
      const int32_t own = static_cast<int32_t>(pos / block_size);
      std::set<int32_t> chosen;
      const auto add_random = [&](int32_t lo, int32_t hi, int n) {
        for (int a = 0; a < n && hi >= lo; ++a) {
          chosen.insert(lo + static_cast<int32_t>(rng.NextU64() % (hi - lo + 1)));
        }
      };
      switch (mode) {
        case SelMode::kRandom:
          if (rng.Uniform() < 0.05f) break;  // empty list
          if (rng.Uniform() < 0.8f) chosen.insert(own);
          if (rng.Uniform() < 0.7f) chosen.insert(0);
          for (int32_t b = std::max(0, own - 2); b < own; ++b) {
            if (rng.Uniform() < 0.6f) chosen.insert(b);
          }
          add_random(0, own, max_blocks);
          break;
        case SelMode::kSharedTile: {
          // Recompute at each 64-token tile start; every token of the tile uses the same blocks
          // that are not after its own block.
          if ((pos - q_pos0) % 64 == 0 || i == 0 || shared.empty()) {
            const int32_t tile_own =
                static_cast<int32_t>(std::min(pos + 63, q_pos0 + num_q - 1) / block_size);
            std::set<int32_t> s = {0, tile_own};
            for (int32_t b = std::max(0, tile_own - 3); b < tile_own; ++b) s.insert(b);
            for (int a = 0; a < 2 * max_blocks && static_cast<int32_t>(s.size()) < max_blocks;
                 ++a) {
              s.insert(static_cast<int32_t>(rng.NextU64() % (tile_own + 1)));
            }
            shared.assign(s.begin(), s.end());
          }
          for (int32_t b : shared) {
            if (b <= own) chosen.insert(b);
          }
          break;
        }
        case SelMode::kFarAndEmpty:
          if (rng.Uniform() < 0.4f || own < 4) break;  // empty list
          add_random(0, std::min(own - 3, 2), 3);      // only blocks far behind the query
          break;
      }
      int32_t* list = sel.data() + (static_cast<int64_t>(hk) * num_q + i) * max_blocks;
      int32_t n = 0;
      // Keep the highest blocks when over budget (the diagonal and window survive).
      std::vector<int32_t> v(chosen.begin(), chosen.end());
      const size_t skip = v.size() > static_cast<size_t>(max_blocks) ? v.size() - max_blocks : 0;
      for (size_t a = skip; a < v.size(); ++a) list[n++] = v[a];
    }
  }
  return sel;
}

// The token-key pairs the sparse kernel computes (BlockSelection::computed_keys), counted the way
// its CTAs work: the queries cut into CTAs of `rows / group` tokens per KV head; per CTA, the
// union of its tokens' valid entries (0 .. the token's own block; a list ends at its first entry
// outside that range), merged in windows of 1024 block indices from the smallest unvisited one;
// per window, its blocks' keys up to the CTA's last position, times the CTA's tokens.
int64_t ExpectedComputedPairs(const std::vector<int32_t>& lists, int64_t num_q, int64_t q_pos0,
                              int32_t kv_heads, int32_t group, int32_t block_size,
                              int32_t max_blocks, int32_t rows) {
  const int64_t per_cta = rows / group;
  int64_t total = 0;
  for (int32_t hk = 0; hk < kv_heads; ++hk) {
    for (int64_t t0 = 0; t0 < num_q; t0 += per_cta) {
      const int64_t ntok = std::min(per_cta, num_q - t0);
      const int64_t last_pos = q_pos0 + t0 + ntok - 1;
      std::set<int32_t> uni;
      for (int64_t t = t0; t < t0 + ntok; ++t) {
        const int32_t own = static_cast<int32_t>((q_pos0 + t) / block_size);
        const int32_t* list = lists.data() + (static_cast<int64_t>(hk) * num_q + t) * max_blocks;
        for (int32_t i = 0; i < max_blocks && list[i] >= 0 && list[i] <= own; ++i) {
          uni.insert(list[i]);
        }
      }
      for (auto it = uni.begin(); it != uni.end();) {
        const int32_t w0 = *it;
        int64_t n_union = 0;
        int32_t last = w0;
        for (; it != uni.end() && *it < w0 + 1024; ++it, ++n_union) last = *it;
        const int64_t last_start = int64_t{last} * block_size;
        total += ((n_union - 1) * block_size +
                  std::min<int64_t>(block_size, last_pos - last_start + 1)) *
                 ntok;
      }
    }
  }
  return total;
}

struct Seq {
  int32_t q_len, kv_len;
};
void RunVarlen(cudaStream_t stream, const std::vector<Seq>& seqs, int32_t kv_heads, int32_t group,
               int32_t head_dim, int32_t block_size, int32_t max_blocks, bool bad_tail);

// ---------------------------------------------------------------- fixture

class GpuAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
    CUDA_ASSERT(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  struct Case {
    int64_t num_q, num_kv;
    int32_t kv_heads, group, head_dim;
    int32_t block_size = 0, max_blocks = 0;  // sparse only
    SelMode mode = SelMode::kRandom;
  };

  // Runs one case through the dense (block_size == 0) or sparse launcher and its reference.
  void RunCase(const Case& c) {
    const uint64_t seed = FreshSeed();
    const int64_t q_pos0 = c.num_kv - c.num_q;
    SCOPED_TRACE(::testing::Message()
                 << "seed " << seed << " num_q " << c.num_q << " num_kv " << c.num_kv
                 << " kv_heads " << c.kv_heads << " group " << c.group << " head_dim " << c.head_dim
                 << " block_size " << c.block_size << " max_blocks " << c.max_blocks << " mode "
                 << static_cast<int>(c.mode));
    Rng rng(seed);
    Problem pb(c.num_q, c.num_kv, c.kv_heads, c.group, c.head_dim, rng);
    DeviceBuffer dq(pb.q.bytes.size()), dk(pb.k.bytes.size()), dv(pb.v.bytes.size());
    DeviceBuffer dout(pb.q.bytes.size()), dlse(c.num_q * pb.q_heads * sizeof(float));
    ASSERT_TRUE(dq.ok() && dk.ok() && dv.ok() && dout.ok() && dlse.ok());
    ASSERT_TRUE(dq.Upload(pb.q.bytes) && dk.Upload(pb.k.bytes) && dv.Upload(pb.v.bytes));

    Outputs want;
    AttentionParams r = RefParams(pb, q_pos0, &want);
    AttentionParams p = r;
    p.q = dq.data();
    p.k = dk.data();
    p.v = dv.data();
    p.out = dout.data();
    p.lse = static_cast<float*>(dlse.data());
    p.dtype = DType::kBF16;

    if (c.block_size == 0) {
      ASSERT_TRUE(DenseAttentionRef(r).ok());
      for (const DenseEngine engine : DenseEngines()) {
        SCOPED_TRACE(::testing::Message() << "dense engine " << static_cast<int>(engine));
        DeviceBuffer out_e(pb.q.bytes.size()), lse_e(c.num_q * pb.q_heads * sizeof(float));
        ASSERT_TRUE(out_e.ok() && lse_e.ok());
        p.out = out_e.data();
        p.lse = static_cast<float*>(lse_e.data());
        const absl::Status st = LaunchDenseAttentionOn(engine, p, stream_);
        ASSERT_TRUE(st.ok()) << st;
        CUDA_ASSERT(cudaStreamSynchronize(stream_));
        ExpectMatches(out_e, lse_e, want);
      }
      return;
    }
    const std::vector<int32_t> blocks =
        RandomSelection(c.num_q, q_pos0, c.kv_heads, c.block_size, c.max_blocks, c.mode, rng);
    DeviceBuffer dsel(blocks.size() * sizeof(int32_t));
    ASSERT_TRUE(dsel.ok() && dsel.Upload(blocks));
    BlockSelection hs{blocks.data(), c.max_blocks, c.block_size};
    const absl::Status ref = SparseAttentionRef(r, hs);
    ASSERT_TRUE(ref.ok()) << ref;
    DeviceBuffer dcount(sizeof(unsigned long long));
    ASSERT_TRUE(dcount.ok());
    BlockSelection ds{static_cast<const int32_t*>(dsel.data()), c.max_blocks, c.block_size,
                      static_cast<unsigned long long*>(dcount.data())};
    // mma.sync in both CTA shapes, each without and with the m-tile skip (on by default: it
    // changes nothing but the time); then wgmma (64 rows, mma.sync where it does not apply: block
    // sizes that are not a power of two >= 16); then the default, which the process keeps.
    struct Run {
      SparseEngine engine;
      SparseRows rows;
      bool skip;
    };
    std::vector<Run> runs = {{SparseEngine::kMmaSync, SparseRows::k128, false},
                             {SparseEngine::kMmaSync, SparseRows::k128, true},
                             {SparseEngine::kMmaSync, SparseRows::k64, false},
                             {SparseEngine::kMmaSync, SparseRows::k64, true}};
    if (HasWgmma()) runs.push_back({SparseEngine::kWgmma, SparseRows::kAuto, true});
    runs.push_back({SparseEngine::kAuto, SparseRows::kAuto, true});
    for (const Run& run : runs) {
      const bool wide = run.engine == SparseEngine::kMmaSync && run.rows == SparseRows::k128;
      const int32_t n_rows = wide && c.group >= 2 ? 128 : 64;
      SCOPED_TRACE(::testing::Message() << "engine " << static_cast<int>(run.engine)
                                        << ", rows per CTA " << n_rows << ", skip " << run.skip);
      SetSparseEngine(run.engine);
      SetSparseTileSkip(run.skip);
      SetSparseRows(run.rows);
      CUDA_ASSERT(cudaMemsetAsync(dout.data(), 0xff, pb.q.bytes.size(), stream_));
      CUDA_ASSERT(cudaMemsetAsync(dcount.data(), 0, sizeof(unsigned long long), stream_));
      const int64_t wgmma_before = SparseWgmmaLaunches();
      const absl::Status st = LaunchSparseAttention(p, ds, stream_);
      ASSERT_TRUE(st.ok()) << st;
      // The wgmma kernel runs (on an sm_90a device; kAuto picks it there) exactly where it
      // applies.
      EXPECT_EQ(SparseWgmmaLaunches() - wgmma_before,
                run.engine != SparseEngine::kMmaSync && WgmmaTakesBlocks(c.block_size) ? 1 : 0);
      unsigned long long computed = 0;
      CUDA_ASSERT(cudaMemcpyAsync(&computed, dcount.data(), sizeof(computed),
                                  cudaMemcpyDeviceToHost, stream_));
      CUDA_ASSERT(cudaStreamSynchronize(stream_));
      ExpectMatches(dout, dlse, want);
      EXPECT_EQ(static_cast<int64_t>(computed),
                ExpectedComputedPairs(blocks, c.num_q, q_pos0, c.kv_heads, c.group, c.block_size,
                                      c.max_blocks, n_rows));
    }
    SetSparseEngine(SparseEngine::kAuto);
    SetSparseRows(SparseRows::kAuto);
  }

  cudaStream_t stream_ = nullptr;
};

// The case compute-sanitizer runs (--gtest_filter='*Small*'): both kernels, GQA, a shard, varlen
// with a malformed sequence.
TEST_F(GpuAttentionTest, SmallDenseSparseVarlen) {
  RunCase({37, 50, 1, 4, 64});
  RunCase({130, 200, 2, 4, 128});
  RunCase({45, 61, 2, 4, 128, 16, 6});
  RunCase({70, 300, 1, 1, 64, 32, 4, SelMode::kFarAndEmpty});
  const std::vector<Seq> seqs = {{20, 20}, {0, 5}, {9, 40}};
  RunVarlen(stream_, seqs, 1, 4, 64, 0, 0, /*bad_tail=*/true);
  RunVarlen(stream_, seqs, 1, 4, 64, 16, 4, /*bad_tail=*/true);
}

TEST_F(GpuAttentionTest, DenseMatchesReference) {
  for (const Case& c : std::vector<Case>{
           {300, 300, 2, 1, 128},    // no GQA, 128 tokens per CTA
           {257, 900, 1, 4, 128},    // a shard: q_pos0 = 643
           {1000, 1000, 1, 8, 64},   //
           {129, 700, 1, 16, 128},   // 8 tokens x 16 heads per CTA
           {513, 513, 2, 3, 64},     // a group that does not divide the row tile
           {1, 1, 1, 4, 64},         // a single query and key
           {2000, 2000, 2, 4, 128},  //
       }) {
    RunCase(c);
  }
}

// Query and key counts on either side of the 64-row warpgroup tile, the 128-row CTA tile and the
// 128-key tile of the wgmma kernel, for every group size it packs differently.
TEST_F(GpuAttentionTest, DenseTileBoundaries) {
  for (const int32_t group : {1, 4, 8, 16}) {
    for (const int64_t n : {63, 64, 65, 127, 128, 129, 255, 256, 257}) {
      RunCase({n, n, 1, group, 128});
    }
    RunCase({127, 383, 2, group, 64});  // a shard whose key range ends mid-tile
    RunCase({128, 640, 1, group, 128});
  }
}

// A long sequence spot-check: thousands of key tiles per CTA, most of them unmasked.
TEST_F(GpuAttentionTest, DenseLongShard) {
  RunCase({1536, 12000, 1, 4, 128});
  RunCase({700, 9000, 1, 8, 64});
}

TEST_F(GpuAttentionTest, SparseMatchesReference) {
  for (const Case& c : std::vector<Case>{
           {700, 700, 2, 4, 128, 16, 24},
           {600, 1500, 1, 8, 64, 32, 12},  // shard at q_pos0 = 900
           {1100, 1100, 1, 1, 128, 64, 8},
           {333, 2000, 2, 16, 128, 128, 5},
           {777, 777, 1, 2, 64, 40, 9},    // a block size that is no divisor of the key tile
           {513, 513, 2, 3, 64, 32, 6},    // a group that does not divide the row tile
           {400, 1000, 1, 4, 64, 256, 3},  // a block spanning several key tiles
           {900, 900, 1, 4, 128, 16, 7, SelMode::kFarAndEmpty},
           {500, 1300, 1, 16, 64, 128, 6, SelMode::kFarAndEmpty},
           {2048, 2048, 2, 4, 128, 64, 12, SelMode::kSharedTile},
           {1000, 1000, 1, 1, 64, 16, 20, SelMode::kSharedTile},
           // Over 1024 blocks: the union is merged in several windows.
           {64, 20064, 1, 4, 128, 16, 40},
       }) {
    RunCase(c);
  }
}

// ---------------------------------------------------------------- varlen

// bad_tail: the device offsets get one more sequence whose offsets are malformed (decreasing
// query offsets, keys past total_kv); the kernels must skip it and touch nothing.
void RunVarlen(cudaStream_t stream, const std::vector<Seq>& seqs, int32_t kv_heads, int32_t group,
               int32_t head_dim, int32_t block_size, int32_t max_blocks, bool bad_tail) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed << " group " << group << " head_dim "
                                    << head_dim << " block_size " << block_size);
  Rng rng(seed);
  std::vector<int32_t> cu_q = {0}, cu_kv = {0};
  int32_t max_q = 0;
  for (const Seq& s : seqs) {
    cu_q.push_back(cu_q.back() + s.q_len);
    cu_kv.push_back(cu_kv.back() + s.kv_len);
    max_q = std::max(max_q, s.q_len);
  }
  const int64_t total_q = cu_q.back(), total_kv = cu_kv.back();
  Problem pb(total_q, total_kv, kv_heads, group, head_dim, rng);
  const int32_t d = head_dim, hq = pb.q_heads;

  // Selection lists and reference, one sequence at a time.
  std::vector<int32_t> blocks(static_cast<size_t>(kv_heads) * total_q * max_blocks, -1);
  Outputs want;
  want.out.assign(total_q * hq * d, 0.0f);
  want.lse.assign(total_q * hq, 0.0f);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const Seq& s = seqs[i];
    if (s.q_len == 0) continue;
    const int64_t q0 = cu_q[i], k0 = cu_kv[i], q_pos0 = s.kv_len - s.q_len;
    std::vector<float> q(pb.q.f32.begin() + q0 * hq * d,
                         pb.q.f32.begin() + (q0 + s.q_len) * hq * d);
    std::vector<float> k(pb.k.f32.begin() + k0 * kv_heads * d,
                         pb.k.f32.begin() + (k0 + s.kv_len) * kv_heads * d);
    std::vector<float> v(pb.v.f32.begin() + k0 * kv_heads * d,
                         pb.v.f32.begin() + (k0 + s.kv_len) * kv_heads * d);
    std::vector<float> out(s.q_len * hq * d), lse(s.q_len * hq);
    AttentionParams r;
    r.q = q.data();
    r.k = k.data();
    r.v = v.data();
    r.out = out.data();
    r.lse = lse.data();
    r.num_q = s.q_len;
    r.num_kv = s.kv_len;
    r.q_pos0 = q_pos0;
    r.q_heads = hq;
    r.kv_heads = kv_heads;
    r.head_dim = d;
    r.scale = pb.scale;
    r.dtype = DType::kF32;
    if (block_size == 0) {
      ASSERT_TRUE(DenseAttentionRef(r).ok());
    } else {
      const std::vector<int32_t> sel =
          RandomSelection(s.q_len, q_pos0, kv_heads, block_size, max_blocks, SelMode::kRandom, rng);
      for (int32_t hk = 0; hk < kv_heads; ++hk) {
        std::copy(sel.begin() + static_cast<int64_t>(hk) * s.q_len * max_blocks,
                  sel.begin() + static_cast<int64_t>(hk + 1) * s.q_len * max_blocks,
                  blocks.begin() + (hk * total_q + q0) * max_blocks);
      }
      const absl::Status st = SparseAttentionRef(r, {sel.data(), max_blocks, block_size});
      ASSERT_TRUE(st.ok()) << st;
    }
    std::copy(out.begin(), out.end(), want.out.begin() + q0 * hq * d);
    for (int32_t h = 0; h < hq; ++h) {
      std::copy(lse.begin() + h * s.q_len, lse.begin() + (h + 1) * s.q_len,
                want.lse.begin() + h * total_q + q0);
    }
  }

  if (bad_tail) {
    cu_q.push_back(cu_q.back() - 5);
    cu_kv.push_back(cu_kv.back() + 7);
  }
  DeviceBuffer dq(pb.q.bytes.size()), dk(pb.k.bytes.size()), dv(pb.v.bytes.size());
  DeviceBuffer dout(pb.q.bytes.size()), dlse(total_q * hq * sizeof(float));
  DeviceBuffer dcq(cu_q.size() * 4), dckv(cu_kv.size() * 4), dsel(blocks.size() * 4);
  ASSERT_TRUE(dq.ok() && dk.ok() && dv.ok() && dout.ok() && dlse.ok() && dcq.ok() && dckv.ok() &&
              dsel.ok());
  ASSERT_TRUE(dq.Upload(pb.q.bytes) && dk.Upload(pb.k.bytes) && dv.Upload(pb.v.bytes));
  ASSERT_TRUE(dcq.Upload(cu_q) && dckv.Upload(cu_kv) && dsel.Upload(blocks));
  VarlenAttentionParams p;
  p.q = dq.data();
  p.k = dk.data();
  p.v = dv.data();
  p.out = dout.data();
  p.lse = static_cast<float*>(dlse.data());
  p.cu_seqlens_q = static_cast<const int32_t*>(dcq.data());
  p.cu_seqlens_kv = static_cast<const int32_t*>(dckv.data());
  p.num_seqs = static_cast<int32_t>(cu_q.size() - 1);
  p.max_seqlen_q = max_q;
  p.total_q = total_q;
  p.total_kv = total_kv;
  p.q_heads = hq;
  p.kv_heads = kv_heads;
  p.head_dim = d;
  p.scale = pb.scale;
  if (block_size == 0) {
    for (const DenseEngine engine : DenseEngines()) {
      SCOPED_TRACE(::testing::Message() << "dense engine " << static_cast<int>(engine));
      DeviceBuffer out_e(pb.q.bytes.size()), lse_e(total_q * hq * sizeof(float));
      ASSERT_TRUE(out_e.ok() && lse_e.ok());
      p.out = out_e.data();
      p.lse = static_cast<float*>(lse_e.data());
      const absl::Status st = LaunchVarlenDenseAttentionOn(engine, p, stream);
      ASSERT_TRUE(st.ok()) << st;
      CUDA_ASSERT(cudaStreamSynchronize(stream));
      ExpectMatches(out_e, lse_e, want);
    }
    return;
  }
  for (const SparseEngine engine : SparseEngines()) {
    SCOPED_TRACE(::testing::Message() << "sparse engine " << static_cast<int>(engine));
    SetSparseEngine(engine);
    CUDA_ASSERT(cudaMemsetAsync(dout.data(), 0xff, pb.q.bytes.size(), stream));
    const int64_t wgmma_before = SparseWgmmaLaunches();
    const absl::Status st = LaunchVarlenSparseAttention(
        p, {static_cast<const int32_t*>(dsel.data()), max_blocks, block_size}, stream);
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_EQ(SparseWgmmaLaunches() - wgmma_before,
              engine == SparseEngine::kWgmma && WgmmaTakesBlocks(block_size) ? 1 : 0);
    CUDA_ASSERT(cudaStreamSynchronize(stream));
    ExpectMatches(dout, dlse, want);
  }
  SetSparseEngine(SparseEngine::kAuto);
}

TEST_F(GpuAttentionTest, VarlenMatchesPerSequenceReference) {
  // A sequence without queries, one continuing a cached prefix (kv_len > q_len), one token.
  const std::vector<Seq> seqs = {{100, 100}, {0, 50}, {300, 700}, {1, 1}, {257, 257}, {77, 200}};
  RunVarlen(stream_, seqs, 2, 4, 128, 0, 0, false);
  RunVarlen(stream_, seqs, 1, 1, 64, 0, 0, true);
  RunVarlen(stream_, seqs, 2, 8, 64, 16, 10, false);
  RunVarlen(stream_, seqs, 1, 4, 128, 64, 5, true);
  // Sequences around the 128-row / 128-key tiles, several CTAs of one sequence.
  const std::vector<Seq> edges = {{128, 128}, {129, 300}, {64, 64}, {1, 129}, {511, 640}};
  RunVarlen(stream_, edges, 2, 16, 128, 0, 0, true);
  RunVarlen(stream_, edges, 1, 4, 64, 0, 0, false);
}

// ---------------------------------------------------------------- parameter checks

// Parameter checks run before any CUDA call, so they need no device.
TEST(GpuAttentionLaunchers, RejectBadParamsWithoutTouchingTheDevice) {
  alignas(16) static uint16_t buf[4096];
  static float lse[64];
  AttentionParams good;
  good.q = good.k = good.v = buf;
  good.out = buf;
  good.lse = lse;
  good.num_q = 4;
  good.num_kv = 8;
  good.q_pos0 = 4;
  good.q_heads = 4;
  good.kv_heads = 2;
  good.head_dim = 64;
  good.scale = 0.125f;
  good.dtype = DType::kBF16;
  int32_t lists[2 * 4 * 2] = {};
  const BlockSelection sel{lists, 2, 16};

  const auto expect_invalid = [&](const AttentionParams& p, const char* what) {
    const absl::Status d = LaunchDenseAttention(p, nullptr);
    EXPECT_EQ(d.code(), absl::StatusCode::kInvalidArgument) << what << ": " << d;
    EXPECT_THAT(std::string(d.message()), HasSubstr(what));
    const absl::Status s = LaunchSparseAttention(p, sel, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(what));
  };
  AttentionParams p = good;
  p.dtype = DType::kF32;
  expect_invalid(p, "dtype");
  p = good;
  p.head_dim = 96;
  expect_invalid(p, "head_dim 96");
  p = good;
  p.q_heads = 5;
  expect_invalid(p, "kv_heads");
  p = good;
  p.q_heads = 34;
  p.kv_heads = 2;
  expect_invalid(p, "group");
  p = good;
  p.num_q = 5;
  expect_invalid(p, "exceeds num_kv");
  p = good;
  p.q_pos0 = -1;
  expect_invalid(p, "q_pos0");
  p = good;
  p.q = nullptr;
  expect_invalid(p, "q is null");
  p = good;
  p.out = nullptr;
  expect_invalid(p, "out is null");
  p = good;
  p.k = reinterpret_cast<const uint8_t*>(buf) + 2;
  expect_invalid(p, "16-byte aligned");
  p = good;
  p.scale = std::numeric_limits<float>::quiet_NaN();
  expect_invalid(p, "scale");
  p = good;
  p.num_kv = int64_t{1} << 32;
  p.q_pos0 = p.num_kv - p.num_q;
  expect_invalid(p, "num_kv");

  const auto expect_bad_sel = [&](const BlockSelection& s, const char* what) {
    const absl::Status st = LaunchSparseAttention(good, s, nullptr);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what << ": " << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(what));
  };
  expect_bad_sel({lists, 2, 0}, "block_size");
  expect_bad_sel({lists, -1, 16}, "max_blocks");
  expect_bad_sel({nullptr, 2, 16}, "blocks is null");

  VarlenAttentionParams vp;
  vp.q = vp.k = vp.v = buf;
  vp.out = buf;
  vp.cu_seqlens_q = vp.cu_seqlens_kv = lists;
  vp.num_seqs = 1;
  vp.max_seqlen_q = 4;
  vp.total_q = 4;
  vp.total_kv = 8;
  vp.q_heads = 4;
  vp.kv_heads = 2;
  vp.head_dim = 128;
  vp.scale = 0.1f;
  const auto expect_bad_varlen = [&](const VarlenAttentionParams& v, const char* what) {
    const absl::Status d = LaunchVarlenDenseAttention(v, nullptr);
    EXPECT_EQ(d.code(), absl::StatusCode::kInvalidArgument) << what << ": " << d;
    EXPECT_THAT(std::string(d.message()), HasSubstr(what));
    const absl::Status s = LaunchVarlenSparseAttention(v, sel, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what << ": " << s;
  };
  VarlenAttentionParams v = vp;
  v.num_seqs = 0;
  expect_bad_varlen(v, "num_seqs");
  v = vp;
  v.cu_seqlens_kv = nullptr;
  expect_bad_varlen(v, "cu_seqlens");
  v = vp;
  v.max_seqlen_q = 5;
  expect_bad_varlen(v, "max_seqlen_q");
  v = vp;
  v.total_kv = -1;
  expect_bad_varlen(v, "total_kv");
  v = vp;
  v.head_dim = 32;
  expect_bad_varlen(v, "head_dim 32");

  // Nothing to do is not an error, and launches nothing (no pointers needed).
  AttentionParams empty = good;
  empty.num_q = 0;
  empty.q = empty.k = empty.v = nullptr;
  empty.out = nullptr;
  EXPECT_TRUE(LaunchDenseAttention(empty, nullptr).ok());
  EXPECT_TRUE(LaunchSparseAttention(empty, {nullptr, 4, 16}, nullptr).ok());
}

}  // namespace
}  // namespace sparsefill::kernels
