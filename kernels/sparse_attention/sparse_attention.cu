// LaunchSparseAttention / LaunchVarlenSparseAttention: check, pick the tile shape, launch.
#include <atomic>
#include <cstdint>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/common/flash_launch.cuh"
#include "kernels/dense_attention/dense_attention_wgmma.h"
#include "kernels/sparse_attention/sparse_attention_kernel.cuh"
#include "kernels/sparse_attention/sparse_attention_wgmma.h"
#include "kernels/sparse_attention/sparse_engine.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kernels/attention.h"

namespace sparsefill::kernels {
namespace {

template <int kD, int kMTiles, int kN>
absl::Status LaunchSparseT(const char* op, const cuda::flash::FlashParams& f, int num_seqs,
                           int64_t max_q, cudaStream_t stream) {
  using cuda::flash::FlashTile;
  // The union's token masks are 64-bit: one bit per token of the CTA.
  if (FlashTile<kD, kMTiles, kN>::kRows / f.group > cuda::flash::kMaxSparseTokens) {
    return absl::InternalError(absl::StrCat(op, ": ", FlashTile<kD, kMTiles, kN>::kRows / f.group,
                                            " tokens per CTA exceed the 64-bit token masks"));
  }
  constexpr int kSmem = FlashTile<kD, kMTiles, kN>::kSmemBytes + cuda::flash::kUnionBytes;
  return cuda::flash::LaunchFlashKernel<kD, kMTiles, kN>(
      op, cuda::flash::SparseAttentionKernel<kD, kMTiles, kN>, kSmem, f, num_seqs, max_q, stream);
}

// Whether kAuto runs the wgmma kernel where it applies (sm_90a, a power-of-two block size >= 16).
// On since 2026-12-07: gpu_attention_test passed on an H100 and bench attention timed it 2.14x
// mma.sync on 128K InfLLM-V2 lists (tools/bench/attention/NOTES.md).
constexpr bool kAutoPicksWgmma = true;

std::atomic<SparseEngine> g_engine{SparseEngine::kAuto};
std::atomic<int64_t> g_wgmma_launches{0};
std::atomic<SparseRows> g_rows{SparseRows::kAuto};
std::atomic<bool> g_tile_skip{true};

// Rows per CTA = tokens x group heads, at most 64 tokens (64-bit token masks): 64 rows by default
// (16 tokens at G 4), 128 rows (32-key tiles, to stay in registers) when forced for a group of
// 2+ heads. Fewer tokens per CTA keep the union of their selections closer to each token's own
// list: in the engine's prefill (H200, 128K tokens, qwen3-8b shape, same run) 64 rows computed
// 4.35x the selected pairs instead of 6.03x and took 27% less sparse-attention time for
// InfLLM-V2 (28% PHSA, 24% NOSA), while bench attention's inputs, whose neighbouring tokens
// select nearly the same blocks, timed within 3% either way.
absl::Status LaunchSparse(const char* op, cuda::flash::FlashParams f, const BlockSelection& sel,
                          int head_dim, int num_seqs, int64_t max_q, cudaStream_t stream) {
  f.blocks = sel.blocks;
  f.computed_keys = sel.computed_keys;
  f.max_blocks = sel.max_blocks;
  f.block_size = sel.block_size;
  f.block_shift = -1;
  f.tile_skip = g_tile_skip.load(std::memory_order_relaxed) ? 1 : 0;
  for (int shift = 0; shift < 31; ++shift) {
    if ((1 << shift) == sel.block_size) f.block_shift = shift;
  }
  const SparseEngine engine = g_engine.load(std::memory_order_relaxed);
  if (engine == SparseEngine::kWgmma || (engine == SparseEngine::kAuto && kAutoPicksWgmma)) {
    SF_ASSIGN_OR_RETURN(const bool wgmma, cuda::flash::DeviceHasWgmma(op));
    if (!wgmma && engine == SparseEngine::kWgmma) {
      return absl::FailedPreconditionError(
          absl::StrCat(op, ": the wgmma sparse engine needs a compute capability 9.0 device"));
    }
    if (wgmma && cuda::flash::SparseWgmmaTakes(f, head_dim)) {
      g_wgmma_launches.fetch_add(1, std::memory_order_relaxed);
      return cuda::flash::LaunchSparseWgmma(op, f, head_dim, num_seqs, max_q, stream);
    }
  }
  const bool wide = f.group >= 2 && g_rows.load(std::memory_order_relaxed) == SparseRows::k128;
  switch (head_dim) {
    case 64:
      return wide ? LaunchSparseT<64, 2, 32>(op, f, num_seqs, max_q, stream)
                  : LaunchSparseT<64, 1, 64>(op, f, num_seqs, max_q, stream);
    case 128:
      return wide ? LaunchSparseT<128, 2, 32>(op, f, num_seqs, max_q, stream)
                  : LaunchSparseT<128, 1, 64>(op, f, num_seqs, max_q, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": head_dim ", head_dim, " not supported (64 or 128)"));
  }
}

}  // namespace

void SetSparseEngine(SparseEngine engine) { g_engine.store(engine, std::memory_order_relaxed); }

bool ParseSparseEngine(std::string_view name, SparseEngine* engine) {
  static constexpr std::pair<std::string_view, SparseEngine> kNames[] = {
      {"auto", SparseEngine::kAuto},
      {"mma.sync", SparseEngine::kMmaSync},
      {"wgmma", SparseEngine::kWgmma}};
  for (const auto& [n, e] : kNames) {
    if (n == name) {
      *engine = e;
      return true;
    }
  }
  return false;
}

int64_t SparseWgmmaLaunches() { return g_wgmma_launches.load(std::memory_order_relaxed); }

void SetSparseRows(SparseRows rows) { g_rows.store(rows, std::memory_order_relaxed); }

void SetSparseTileSkip(bool on) { g_tile_skip.store(on, std::memory_order_relaxed); }

bool ParseSparseRows(std::string_view name, SparseRows* rows) {
  static constexpr std::pair<std::string_view, SparseRows> kNames[] = {
      {"auto", SparseRows::kAuto}, {"64", SparseRows::k64}, {"128", SparseRows::k128}};
  for (const auto& [n, r] : kNames) {
    if (n == name) {
      *rows = r;
      return true;
    }
  }
  return false;
}

absl::Status LaunchSparseAttention(const AttentionParams& p, const BlockSelection& sel,
                                   cudaStream_t stream) {
  constexpr const char* kOp = "LaunchSparseAttention";
  cuda::flash::FlashParams f;
  bool has_work = false;
  SF_RETURN_IF_ERROR(cuda::flash::FromAttention(kOp, p, &f, &has_work));
  SF_RETURN_IF_ERROR(cuda::flash::CheckSelection(kOp, sel, has_work));
  if (!has_work) return absl::OkStatus();
  return LaunchSparse(kOp, f, sel, p.head_dim, 1, p.num_q, stream);
}

absl::Status LaunchVarlenSparseAttention(const VarlenAttentionParams& p, const BlockSelection& sel,
                                         cudaStream_t stream) {
  constexpr const char* kOp = "LaunchVarlenSparseAttention";
  cuda::flash::FlashParams f;
  bool has_work = false;
  SF_RETURN_IF_ERROR(cuda::flash::FromVarlen(kOp, p, &f, &has_work));
  SF_RETURN_IF_ERROR(cuda::flash::CheckSelection(kOp, sel, has_work));
  if (!has_work) return absl::OkStatus();
  return LaunchSparse(kOp, f, sel, p.head_dim, p.num_seqs, p.max_seqlen_q, stream);
}

}  // namespace sparsefill::kernels
