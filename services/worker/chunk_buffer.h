// The buffers a worker reads streamed chunks into (ReadBlocks, StreamShard), reused.
//
// A chunk's buffer lives until gRPC has written it to the socket and drops its slice
// (wire_chunk.h), so it cannot be a stack buffer. Allocating one per chunk costs more than its
// size suggests: std::string zero-fills what the store overwrites anyway (a pass over every
// streamed byte), and at the servers' heap settings (HeapOptions: allocations >= 1 MiB are
// mmapped) every 1 MiB chunk is mapped, page-faulted and zeroed by the kernel, then unmapped. A
// pool hands out uninitialised buffers and takes them back when the last owner lets go, so a
// stream cycles through a few of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"

namespace sparsefill::worker {

class ChunkBufferPool;

// `size` bytes, uninitialised when taken; movable, not copyable. Gives its storage back to its
// pool (when it came from one that outlives it; else frees it) on destruction.
class ChunkBuffer {
 public:
  ChunkBuffer() = default;
  ChunkBuffer(ChunkBuffer&&) noexcept = default;
  ChunkBuffer& operator=(ChunkBuffer&& other) noexcept;
  ChunkBuffer(const ChunkBuffer&) = delete;
  ChunkBuffer& operator=(const ChunkBuffer&) = delete;
  ~ChunkBuffer();

  char* data() { return storage_.get(); }
  const char* data() const { return storage_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  bool empty() const { return size_ == 0; }

 private:
  friend class ChunkBufferPool;
  void Release();

  std::unique_ptr<char[]> storage_;
  size_t capacity_ = 0;
  size_t size_ = 0;
  std::weak_ptr<ChunkBufferPool> pool_;
};

class ChunkBufferPool : public std::enable_shared_from_this<ChunkBufferPool> {
 public:
  struct Options {
    // Idle buffers kept for reuse, at most this many bytes in all; the rest are freed when
    // given back. Default 16 MiB (16 chunks of the default 1 MiB).
    uint64_t max_idle_bytes = 16ull << 20;
    absl::Status Validate() const;
  };

  static std::shared_ptr<ChunkBufferPool> Create(const Options& options);

  // A buffer of `size` bytes, uninitialised: an idle one that is large enough (the most recently
  // given back, likely still in cache), else a new one.
  ChunkBuffer Take(size_t size);

  // Idle buffers and their bytes, for tests and metrics.
  size_t idle_buffers() const;
  uint64_t idle_bytes() const;

 private:
  explicit ChunkBufferPool(const Options& options) : options_(options) {}
  friend class ChunkBuffer;
  void GiveBack(std::unique_ptr<char[]> storage, size_t capacity);

  const Options options_;
  mutable std::mutex mu_;
  struct Idle {
    std::unique_ptr<char[]> storage;
    size_t capacity = 0;
  };
  std::vector<Idle> idle_;  // most recently given back last
  uint64_t idle_bytes_ = 0;
};

}  // namespace sparsefill::worker
