#include "services/common/heap_release.h"

#include "absl/strings/str_cat.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace sparsefill {
namespace {

// Under ASan/TSan the sanitizer's allocator serves malloc: glibc's arenas hold nothing to tune or
// trim, and the sanitizers stub mallopt out (ASan's returns 0, "failed").
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kGlibcHeap = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
constexpr bool kGlibcHeap = false;
#else
constexpr bool kGlibcHeap = true;
#endif
#else
constexpr bool kGlibcHeap = true;
#endif

}  // namespace

absl::Status HeapOptions::Validate() const {
  // glibc refuses thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit).
  if (mmap_threshold_bytes > (size_t{32} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("mmap_threshold_bytes: ", mmap_threshold_bytes,
                                                   " is above glibc's maximum of 32 MiB"));
  }
  if (max_arenas < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_arenas: negative (", max_arenas, ")"));
  }
  if (trim_interval.count() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("trim_interval: negative (", trim_interval.count(), " ms)"));
  }
  return absl::OkStatus();
}

absl::Status ConfigureHeap(const HeapOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
#if defined(__GLIBC__)
  if (!kGlibcHeap) return absl::OkStatus();
  if (options.mmap_threshold_bytes > 0 &&
      mallopt(M_MMAP_THRESHOLD, static_cast<int>(options.mmap_threshold_bytes)) != 1) {
    return absl::InternalError(
        absl::StrCat("mallopt(M_MMAP_THRESHOLD, ", options.mmap_threshold_bytes, ") failed"));
  }
  if (options.max_arenas > 0 && mallopt(M_ARENA_MAX, options.max_arenas) != 1) {
    return absl::InternalError(
        absl::StrCat("mallopt(M_ARENA_MAX, ", options.max_arenas, ") failed"));
  }
#endif
  return absl::OkStatus();
}

HeapStats ReadHeapStats() {
  HeapStats s;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  const struct mallinfo2 m = mallinfo2();
  s.in_use_bytes = m.uordblks + m.hblkhd;
  s.free_held_bytes = m.fordblks;
#endif
  return s;
}

HeapTrimmer::HeapTrimmer(std::chrono::milliseconds interval) : interval_(interval) {
  if (interval_.count() > 0) thread_ = std::thread([this] { Loop(); });
}

HeapTrimmer::~HeapTrimmer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void HeapTrimmer::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, interval_, [&] { return stop_; })) {
    lock.unlock();
#if defined(__GLIBC__)
    if (kGlibcHeap) malloc_trim(0);
#endif
    trims_.fetch_add(1);
    lock.lock();
  }
}

}  // namespace sparsefill
