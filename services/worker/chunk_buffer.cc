#include "services/worker/chunk_buffer.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sparsefill::worker {

ChunkBuffer& ChunkBuffer::operator=(ChunkBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    storage_ = std::move(other.storage_);
    capacity_ = std::exchange(other.capacity_, 0);
    size_ = std::exchange(other.size_, 0);
    pool_ = std::move(other.pool_);
  }
  return *this;
}

ChunkBuffer::~ChunkBuffer() { Release(); }

void ChunkBuffer::Release() {
  if (storage_ == nullptr) return;
  if (std::shared_ptr<ChunkBufferPool> pool = pool_.lock()) {
    pool->GiveBack(std::move(storage_), capacity_);
  }
  storage_.reset();
  capacity_ = 0;
  size_ = 0;
}

absl::Status ChunkBufferPool::Options::Validate() const {
  if (max_idle_bytes > (1ull << 40)) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk buffer pool: max_idle_bytes ", max_idle_bytes, " is over 1 TiB"));
  }
  return absl::OkStatus();
}

std::shared_ptr<ChunkBufferPool> ChunkBufferPool::Create(const Options& options) {
  return std::shared_ptr<ChunkBufferPool>(new ChunkBufferPool(options));
}

ChunkBuffer ChunkBufferPool::Take(size_t size) {
  ChunkBuffer b;
  b.pool_ = weak_from_this();
  b.size_ = size;
  if (size == 0) return b;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = idle_.size(); i-- > 0;) {
      if (idle_[i].capacity < size) continue;
      b.storage_ = std::move(idle_[i].storage);
      b.capacity_ = idle_[i].capacity;
      idle_bytes_ -= b.capacity_;
      idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
      return b;
    }
  }
  // new char[] leaves the bytes uninitialised: the store writes every one of them.
  b.storage_.reset(new char[size]);
  b.capacity_ = size;
  return b;
}

void ChunkBufferPool::GiveBack(std::unique_ptr<char[]> storage, size_t capacity) {
  std::lock_guard<std::mutex> lock(mu_);
  if (idle_bytes_ + capacity > options_.max_idle_bytes) {
    // Full: the oldest idle buffers go first, unless this one alone is too large.
    if (capacity > options_.max_idle_bytes) return;
    while (!idle_.empty() && idle_bytes_ + capacity > options_.max_idle_bytes) {
      idle_bytes_ -= idle_.front().capacity;
      idle_.erase(idle_.begin());
    }
  }
  idle_.push_back(Idle{std::move(storage), capacity});
  idle_bytes_ += capacity;
}

size_t ChunkBufferPool::idle_buffers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return idle_.size();
}

uint64_t ChunkBufferPool::idle_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return idle_bytes_;
}

}  // namespace sparsefill::worker
