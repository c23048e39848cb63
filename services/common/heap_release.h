// Keeps a long-running server's resident memory close to what it uses (issue 9 item 3).
//
// Under load the worker and the coordinator free most of what a request allocated (shard K/V
// copies, peer payloads, relayed chunks, protobuf messages) when it ends, but glibc's malloc
// keeps freed memory mapped: each of its per-thread arenas (up to 8 x cores) holds on to free
// chunks below its top, and after the first large buffer is freed glibc raises its mmap
// threshold (up to 32 MiB), so later per-request buffers come from those arenas instead of being
// unmapped on free. RSS then drifts up with the mix of request sizes: `bench load` (16 clients,
// 200 requests) saw worker RSS +17-20% after the run with glibc's defaults, +1-2% with this (the
// full run, 64 clients and 2,000 requests: +2-4%), so the growth was freed memory kept by the
// allocator, not a leak. ConfigureHeap fixes the threshold and bounds the arenas; HeapTrimmer
// returns the free pages of every arena to the kernel (malloc_trim) once a second. Without glibc,
// and under ASan/TSan (whose allocators replace glibc's), both are no-ops.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>

#include "absl/status/status.h"

namespace sparsefill {

struct HeapOptions {
  // Allocations of at least this many bytes are mmapped and unmapped on free (M_MMAP_THRESHOLD;
  // setting it also stops glibc from raising it). Default 1 MiB; 0 keeps glibc's dynamic one.
  size_t mmap_threshold_bytes = size_t{1} << 20;
  // Most malloc arenas (M_ARENA_MAX). Default 4: the servers' request threads mostly wait on
  // the network, and fewer arenas hold fewer free pages. 0 keeps glibc's 8 x cores.
  int32_t max_arenas = 4;
  // HeapTrimmer: how often the free pages of every arena go back to the kernel. Default 1 s; 0:
  // never. A trim walks every free chunk and madvises it again (each arena locked meanwhile):
  // about 7 ms on a heap of 200 MiB in use with 50k free chunks between live ones (measured
  // here, 2 cores), so under 1% of a core at this interval.
  std::chrono::milliseconds trim_interval{1000};

  absl::Status Validate() const;
};

// Applies mmap_threshold_bytes and max_arenas (mallopt). Call once in main, before threads start.
absl::Status ConfigureHeap(const HeapOptions& options);

// Heap figures of the process (mallinfo2): bytes handed out by malloc and free bytes it keeps.
struct HeapStats {
  uint64_t in_use_bytes = 0;     // allocated chunks (arenas) + mmapped blocks
  uint64_t free_held_bytes = 0;  // free chunks kept inside the arenas
};
HeapStats ReadHeapStats();

// Calls malloc_trim(0) every `interval` on a background thread (none when interval is 0), so
// what requests freed goes back to the kernel within about a second of their end.
class HeapTrimmer {
 public:
  explicit HeapTrimmer(std::chrono::milliseconds interval);
  ~HeapTrimmer();  // stops the thread
  HeapTrimmer(const HeapTrimmer&) = delete;
  HeapTrimmer& operator=(const HeapTrimmer&) = delete;

  // Trims that ran so far.
  int64_t trims() const { return trims_.load(); }

 private:
  void Loop();

  const std::chrono::milliseconds interval_;
  std::atomic<int64_t> trims_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sparsefill
