#include "services/common/heap_release.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace sparsefill {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizerHeap = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitizerHeap = true;
#else
constexpr bool kSanitizerHeap = false;
#endif
#else
constexpr bool kSanitizerHeap = false;
#endif

// Resident bytes of this process (/proc/self/statm).
int64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

TEST(HeapOptionsTest, RejectsWhatGlibcCannotTake) {
  HeapOptions o;
  EXPECT_TRUE(o.Validate().ok());
  o.mmap_threshold_bytes = size_t{64} << 20;
  EXPECT_NE(o.Validate().message().find("mmap_threshold_bytes"), std::string::npos) << o.Validate();
  o = HeapOptions{};
  o.max_arenas = -1;
  EXPECT_NE(o.Validate().message().find("max_arenas"), std::string::npos) << o.Validate();
  o = HeapOptions{};
  o.trim_interval = std::chrono::milliseconds(-5);
  EXPECT_NE(o.Validate().message().find("trim_interval"), std::string::npos) << o.Validate();
  EXPECT_EQ(ConfigureHeap(o).code(), absl::StatusCode::kInvalidArgument);
}

TEST(HeapTrimmerTest, ZeroIntervalStartsNoThreadAndNeverTrims) {
  HeapTrimmer t(std::chrono::milliseconds(0));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(t.trims(), 0);
}

TEST(HeapTrimmerTest, TrimsEveryIntervalAndStopsAtOnce) {
  const auto t0 = std::chrono::steady_clock::now();
  int64_t seen = 0;
  {
    // A long interval would hold the destructor up if the stop did not wake the thread.
    HeapTrimmer slow(std::chrono::hours(1));
    HeapTrimmer t(std::chrono::milliseconds(10));
    const auto give_up = t0 + std::chrono::seconds(10);
    while (t.trims() < 3 && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    seen = t.trims();
    EXPECT_EQ(slow.trims(), 0);
  }
  EXPECT_GE(seen, 3);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

// What the servers rely on: memory freed in the middle of the heap (below live chunks, so glibc
// cannot shrink its top) stays resident until a trim gives it back.
TEST(HeapTrimmerTest, ReturnsFreedHolesOfTheHeapToTheKernel) {
  if (kSanitizerHeap) GTEST_SKIP() << "the sanitizer's allocator replaces glibc's malloc";
  HeapOptions o;
  o.max_arenas = 0;  // leave the test process's arenas as they are
  ASSERT_TRUE(ConfigureHeap(o).ok());
  // 192 MiB in 64 KiB chunks (below the 1 MiB mmap threshold: they come from an arena); every
  // 16th stays allocated, so the 180 MiB freed are holes between live chunks.
  constexpr size_t kChunk = 64 << 10, kCount = 3072;
  std::vector<char*> chunks(kCount);
  for (char*& c : chunks) {
    c = static_cast<char*>(std::malloc(kChunk));
    ASSERT_NE(c, nullptr);
    std::memset(c, 0x5a, kChunk);  // resident
  }
  for (size_t i = 0; i < kCount; ++i) {
    if (i % 16 != 0) {
      std::free(chunks[i]);
      chunks[i] = nullptr;
    }
  }
  const int64_t before = ResidentBytes();
  const HeapStats held = ReadHeapStats();
  EXPECT_GE(held.free_held_bytes, uint64_t{150} << 20);
  {
    HeapTrimmer t(std::chrono::milliseconds(20));
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (t.trims() < 1 && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_GE(t.trims(), 1);
  }
  const int64_t after = ResidentBytes();
  std::printf("resident %.1f MiB with the holes, %.1f MiB after the trim (%.1f MiB held free)\n",
              before / 1048576.0, after / 1048576.0, held.free_held_bytes / 1048576.0);
  EXPECT_LT(after, before - (int64_t{120} << 20));
  for (char* c : chunks) std::free(c);
}

}  // namespace
}  // namespace sparsefill
