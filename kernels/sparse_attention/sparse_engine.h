// The kernel, the CTA shape and the tile skip of the CUDA block-sparse attention. Benchmarks force
// each choice to compare them on one device; private to kernels/ (and its tests and benchmarks).
#pragma once

#include <cstdint>
#include <string_view>

namespace sparsefill::kernels {

// Rows per CTA = tokens x GQA group heads. A CTA computes the union of its tokens' block lists for
// every one of its tokens, so fewer rows cost less when neighbouring tokens select different
// blocks, and more rows load each key tile for more queries when they select the same ones.
enum class SparseRows {
  kAuto,  // the built-in choice: 64 rows (see LaunchSparse for the measurements)
  k64,    // 64 rows whatever the group (16 tokens at G 4, 4 at G 16)
  k128,   // 128 rows (64 when the group has 1 head: the token masks are 64-bit)
};

// What LaunchSparseAttention runs from now on, process-wide. kAuto restores the built-in choice.
void SetSparseRows(SparseRows rows);
// "auto", "64", "128"; false for anything else.
[[nodiscard]] bool ParseSparseRows(std::string_view name, SparseRows* rows);

// Which kernel runs the block-sparse attention.
enum class SparseEngine {
  kAuto,     // kWgmma on a compute capability 9.0 device, else kMmaSync (LaunchSparse)
  kMmaSync,  // FlashAttention-2 style (sparse_attention_kernel.cuh), every block size and device
  // Hopper warpgroup MMA with TMA gathers (sparse_attention_wgmma_kernel.cuh): 64-row CTAs;
  // FailedPrecondition on a device other than compute capability 9.0. Block sizes that are not a
  // power of two of at least 16 (and tensors TMA cannot describe) run on mma.sync.
  kWgmma,
};

// What LaunchSparseAttention runs from now on, process-wide. kAuto restores the built-in choice.
void SetSparseEngine(SparseEngine engine);
// "auto", "mma.sync", "wgmma"; false for anything else.
[[nodiscard]] bool ParseSparseEngine(std::string_view name, SparseEngine* engine);
// Launches of the wgmma kernel so far, process-wide: tests check which kernel a call ran.
[[nodiscard]] int64_t SparseWgmmaLaunches();

// Whether a 16-row m-tile skips a masked key tile that none of its tokens selected (on by
// default; the result is the same either way). Off only to time the skip against the kernel
// without it, process-wide from now on.
void SetSparseTileSkip(bool on);

}  // namespace sparsefill::kernels
