// LaunchDenseAttention / LaunchVarlenDenseAttention: check, pick the engine (mma.sync, or
// Hopper's wgmma kernel) and the tile shape, launch.
#include <atomic>
#include <cstdint>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/common/flash_launch.cuh"
#include "kernels/dense_attention/dense_attention_kernel.cuh"
#include "kernels/dense_attention/dense_attention_wgmma.h"
#include "kernels/dense_attention/dense_engine.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kernels/attention.h"

namespace sparsefill::kernels {
namespace {

// 128 rows per CTA (4 warps x 2 m16 tiles): each K/V tile read from shared memory feeds twice
// the tensor-core work of a 64-row tile. At head_dim 128 the key tile shrinks to 32 so that the
// output accumulators and scores stay in registers (FlashAttention-2's Ampere choice too).
template <int kD, int kN>
absl::Status LaunchDenseT(const char* op, const cuda::flash::FlashParams& f, int num_seqs,
                          int64_t max_q, cudaStream_t stream) {
  constexpr int kMTiles = 2;
  return cuda::flash::LaunchFlashKernel<kD, kMTiles, kN>(
      op, cuda::flash::DenseAttentionKernel<kD, kMTiles, kN>,
      cuda::flash::FlashTile<kD, kMTiles, kN>::kSmemBytes, f, num_seqs, max_q, stream);
}

absl::Status LaunchDenseMma(const char* op, const cuda::flash::FlashParams& f, int head_dim,
                            int num_seqs, int64_t max_q, cudaStream_t stream) {
  switch (head_dim) {
    case 64:
      return LaunchDenseT<64, 64>(op, f, num_seqs, max_q, stream);
    case 128:
      return LaunchDenseT<128, 32>(op, f, num_seqs, max_q, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": head_dim ", head_dim, " not supported (64 or 128)"));
  }
}

// Whether kAuto takes the wgmma engine on a compute capability 9.0 device (mma.sync elsewhere).
// On: the wgmma kernels passed gpu_attention_test and memcheck on an H100 and timed 0.91x the
// mma.sync kernel at 128K in the same bench attention run (451 vs 497 ms; SDPA 255 ms).
constexpr bool kAutoPicksWgmma = true;
// Whether kAuto's wgmma engine is kWgmmaTmaPingPong (TMA loads, the consumer warpgroups taking
// turns) rather than kWgmma (cp.async loads, intra-warpgroup overlap). On: gpu_attention_test
// passed whole on an H200 with the GQA-3 fix (2026-12-07); at 128K bench attention timed TMA
// ping-pong at 1.05x torch SDPA on an H100 and 1.04x on that H200 (cp.async wgmma 1.79x on
// both), and the engine's dense prefill ran 1.02x faster than the PyTorch reference.
constexpr bool kAutoPicksTma = true;

std::atomic<DenseEngine> g_auto_engine{DenseEngine::kAuto};

absl::Status LaunchDense(const char* op, DenseEngine engine, const cuda::flash::FlashParams& f,
                         int head_dim, int num_seqs, int64_t max_q, cudaStream_t stream) {
  using cuda::flash::WgmmaSchedule;
  if (engine == DenseEngine::kAuto) engine = g_auto_engine.load(std::memory_order_relaxed);
  if (engine == DenseEngine::kMmaSync || (engine == DenseEngine::kAuto && !kAutoPicksWgmma)) {
    return LaunchDenseMma(op, f, head_dim, num_seqs, max_q, stream);
  }
  SF_ASSIGN_OR_RETURN(const bool wgmma, cuda::flash::DeviceHasWgmma(op));
  if (!wgmma) {
    if (engine == DenseEngine::kAuto)
      return LaunchDenseMma(op, f, head_dim, num_seqs, max_q, stream);
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": the wgmma engine needs a compute capability 9.0 device"));
  }
  using cuda::flash::WgmmaLoads;
  WgmmaSchedule schedule = WgmmaSchedule::kOverlap;
  if (engine == DenseEngine::kWgmmaSerial) schedule = WgmmaSchedule::kSerial;
  if (engine == DenseEngine::kWgmmaPingPong || engine == DenseEngine::kWgmmaTmaPingPong ||
      (engine == DenseEngine::kAuto && kAutoPicksTma)) {
    schedule = WgmmaSchedule::kPingPong;
  }
  const WgmmaLoads loads = engine == DenseEngine::kWgmmaTma ||
                                   engine == DenseEngine::kWgmmaTmaPingPong ||
                                   (engine == DenseEngine::kAuto && kAutoPicksTma)
                               ? WgmmaLoads::kTma
                               : WgmmaLoads::kCpAsync;
  return cuda::flash::LaunchDenseWgmma(op, schedule, loads, f, head_dim, num_seqs, max_q, stream);
}

}  // namespace

void SetAutoDenseEngine(DenseEngine engine) {
  g_auto_engine.store(engine, std::memory_order_relaxed);
}

bool ParseDenseEngine(std::string_view name, DenseEngine* engine) {
  static constexpr std::pair<std::string_view, DenseEngine> kNames[] = {
      {"auto", DenseEngine::kAuto},
      {"mma.sync", DenseEngine::kMmaSync},
      {"wgmma", DenseEngine::kWgmma},
      {"wgmma-serial", DenseEngine::kWgmmaSerial},
      {"wgmma-pingpong", DenseEngine::kWgmmaPingPong},
      {"wgmma-tma", DenseEngine::kWgmmaTma},
      {"wgmma-tma-pingpong", DenseEngine::kWgmmaTmaPingPong},
  };
  for (const auto& [n, e] : kNames) {
    if (n == name) {
      *engine = e;
      return true;
    }
  }
  return false;
}

absl::Status LaunchDenseAttentionOn(DenseEngine engine, const AttentionParams& p,
                                    cudaStream_t stream) {
  constexpr const char* kOp = "LaunchDenseAttention";
  cuda::flash::FlashParams f;
  bool has_work = false;
  SF_RETURN_IF_ERROR(cuda::flash::FromAttention(kOp, p, &f, &has_work));
  if (!has_work) return absl::OkStatus();
  return LaunchDense(kOp, engine, f, p.head_dim, 1, p.num_q, stream);
}

absl::Status LaunchVarlenDenseAttentionOn(DenseEngine engine, const VarlenAttentionParams& p,
                                          cudaStream_t stream) {
  constexpr const char* kOp = "LaunchVarlenDenseAttention";
  cuda::flash::FlashParams f;
  bool has_work = false;
  SF_RETURN_IF_ERROR(cuda::flash::FromVarlen(kOp, p, &f, &has_work));
  if (!has_work) return absl::OkStatus();
  return LaunchDense(kOp, engine, f, p.head_dim, p.num_seqs, p.max_seqlen_q, stream);
}

absl::Status LaunchDenseAttention(const AttentionParams& p, cudaStream_t stream) {
  return LaunchDenseAttentionOn(DenseEngine::kAuto, p, stream);
}

absl::Status LaunchVarlenDenseAttention(const VarlenAttentionParams& p, cudaStream_t stream) {
  return LaunchVarlenDenseAttentionOn(DenseEngine::kAuto, p, stream);
}

}  // namespace sparsefill::kernels
