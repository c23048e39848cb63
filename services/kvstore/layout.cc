#include "sparsefill/kvstore/layout.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "xxhash.h"

namespace sparsefill::kvstore {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Limits that keep every size product in CacheLayout far from overflow and manifests bounded.
constexpr int64_t kMaxTokens = int64_t{1} << 36;
constexpr int32_t kMaxHeadDim = 1 << 16;
constexpr int32_t kMaxBlockSize = 1 << 16;
constexpr int64_t kMaxTotalBlocks = int64_t{1} << 32;

}  // namespace

CacheId CacheId::Random() {
  uint64_t words[2] = {0, 0};
  size_t got = 0;
  auto* p = reinterpret_cast<uint8_t*>(words);
  while (got < sizeof(words)) {
    const ssize_t n = getrandom(p + got, sizeof(words) - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      // Only kernels older than 3.17 lack getrandom; random_device still reads the OS source.
      std::random_device rd;
      words[0] = (uint64_t{rd()} << 32) ^ rd();
      words[1] = (uint64_t{rd()} << 32) ^ rd();
      break;
    }
  }
  return CacheId{words[0], words[1]};
}

absl::StatusOr<CacheId> CacheId::FromHex(std::string_view hex) {
  if (hex.size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat("cache id \"", AsAbsl(hex.substr(0, 64)),
                                                   "\" must be 32 hex digits, got ", hex.size()));
  }
  CacheId id;
  for (size_t i = 0; i < 32; ++i) {
    const int d = HexDigit(hex[i]);
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache id \"", AsAbsl(hex), "\" has a non-hex character at ", i));
    }
    uint64_t& word = i < 16 ? id.hi : id.lo;
    word = (word << 4) | static_cast<uint64_t>(d);
  }
  return id;
}

std::string CacheId::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(32, '0');
  for (int i = 0; i < 16; ++i) {
    s[15 - i] = kDigits[(hi >> (4 * i)) & 0xf];
    s[31 - i] = kDigits[(lo >> (4 * i)) & 0xf];
  }
  return s;
}

int64_t CacheLayout::BlockTokens(int64_t b) const {
  const int64_t begin = b * block_size;
  const int64_t end = std::min<int64_t>(begin + block_size, num_tokens);
  return end > begin ? end - begin : 0;
}

size_t CacheLayout::BlockBytes(int64_t b) const {
  return static_cast<size_t>(BlockTokens(b)) * static_cast<size_t>(head_dim) * 2 * DTypeSize(dtype);
}

uint64_t CacheLayout::total_bytes() const {
  return static_cast<uint64_t>(num_layers) * static_cast<uint64_t>(kv_heads) *
         static_cast<uint64_t>(num_tokens) * static_cast<uint64_t>(head_dim) * 2 * DTypeSize(dtype);
}

absl::Status CacheLayout::Validate() const {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout dtype ", static_cast<int>(dtype), " is not F32, F16 or BF16"));
  }
  if (num_layers <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout num_layers must be > 0, got ", num_layers));
  }
  if (kv_heads <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("layout kv_heads must be > 0, got ", kv_heads));
  }
  if (head_dim <= 0 || head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout head_dim must be in [1, ", kMaxHeadDim, "], got ", head_dim));
  }
  if (block_size <= 0 || block_size > kMaxBlockSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout block_size must be in [1, ", kMaxBlockSize, "], got ", block_size));
  }
  if (num_tokens <= 0 || num_tokens > kMaxTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout num_tokens must be in [1, ", kMaxTokens, "], got ", num_tokens));
  }
  // Checked in floating point first so the integer product below cannot overflow.
  const double blocks = static_cast<double>(num_layers) * kv_heads * num_blocks();
  if (blocks > static_cast<double>(kMaxTotalBlocks)) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout has ", blocks, " blocks (layers x kv_heads x blocks); the limit is ",
                     kMaxTotalBlocks));
  }
  return absl::OkStatus();
}

std::string BlockKey::ToString() const {
  return absl::StrCat("cache ", cache.ToHex(), " layer ", layer, " head ", head, " block ", block);
}

std::string_view TierName(Tier t) {
  switch (t) {
    case Tier::kDevice:
      return "device";
    case Tier::kHost:
      return "host";
    case Tier::kDisk:
      return "disk";
  }
  return "unknown";
}

uint64_t BlockChecksum(const void* data, size_t n) { return XXH64(data, n, 0); }

}  // namespace sparsefill::kvstore
