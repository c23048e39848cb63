#include "tools/bench/load/cache_check.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::bench {

uint64_t CacheDigest::Fold() const {
  uint64_t h = 0x84222325cbf29ce4ull;
  for (uint64_t c : checksums) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

absl::StatusOr<CacheDigest> StreamAndVerify(client::CoordinatorClient& client,
                                            const kvstore::CacheId& id,
                                            std::chrono::milliseconds timeout) {
  CacheDigest d;
  std::vector<uint8_t> seen;
  bool have_layout = false;
  const auto on_chunk = [&](const client::KvChunk& c) -> absl::Status {
    if (!have_layout) {
      return absl::InternalError("a chunk came before the layout was known");
    }
    const kvstore::CacheLayout& l = d.layout;
    if (c.layer < 0 || c.layer >= l.num_layers || c.kv_head < 0 || c.kv_head >= l.kv_heads ||
        c.first_block < 0 || c.num_blocks < 1 || c.first_block + c.num_blocks > l.num_blocks() ||
        c.xxh64.size() != static_cast<size_t>(c.num_blocks)) {
      return absl::DataLossError(absl::StrCat("cache ", id.ToHex(), ": chunk layer ", c.layer,
                                              " head ", c.kv_head, " blocks ", c.first_block, "+",
                                              c.num_blocks, " is outside the layout"));
    }
    size_t offset = 0;
    for (int32_t i = 0; i < c.num_blocks; ++i) {
      const int64_t b = c.first_block + i;
      const size_t n = l.BlockBytes(b);
      if (offset + n > c.data.size()) {
        return absl::DataLossError(absl::StrCat("cache ", id.ToHex(), ": layer ", c.layer, " head ",
                                                c.kv_head, " block ", b, " is short"));
      }
      const uint64_t sum = kvstore::BlockChecksum(c.data.data() + offset, n);
      if (sum != c.xxh64[static_cast<size_t>(i)]) {
        return absl::DataLossError(absl::StrCat("cache ", id.ToHex(), ": layer ", c.layer, " head ",
                                                c.kv_head, " block ", b,
                                                ": bytes do not match their xxh64"));
      }
      const size_t x = static_cast<size_t>(l.Index(c.layer, c.kv_head, b));
      if (seen[x]) {
        return absl::DataLossError(absl::StrCat("cache ", id.ToHex(), ": layer ", c.layer, " head ",
                                                c.kv_head, " block ", b, " came twice"));
      }
      seen[x] = 1;
      d.checksums[x] = sum;
      ++d.blocks;
      offset += n;
    }
    if (offset != c.data.size()) {
      return absl::DataLossError(absl::StrCat("cache ", id.ToHex(), ": chunk of ", c.num_blocks,
                                              " blocks has ", c.data.size() - offset,
                                              " bytes too many"));
    }
    d.bytes += c.data.size();
    return absl::OkStatus();
  };
  const auto start = std::chrono::steady_clock::now();
  SF_ASSIGN_OR_RETURN(const client::CacheInfo info, client.GetCache(id, {.timeout = timeout}));
  if (info.state != client::CacheState::kReady) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cache ", id.ToHex(), " is ", AsAbsl(client::CacheStateName(info.state)), ", not ready"));
  }
  d.layout = info.layout;
  if (d.layout.num_layers < 1 || d.layout.kv_heads < 1 || d.layout.block_size < 1 ||
      d.layout.num_tokens < 1) {
    return absl::DataLossError(absl::StrCat("cache ", id.ToHex(), ": empty layout"));
  }
  seen.assign(static_cast<size_t>(d.layout.total_blocks()), 0);
  d.checksums.assign(seen.size(), 0);
  have_layout = true;
  const auto left = std::max(std::chrono::milliseconds(1),
                             timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::steady_clock::now() - start));
  SF_RETURN_IF_ERROR(
      client.StreamCache(id, /*hot_only=*/false, on_chunk, {.timeout = left}).status());
  for (size_t x = 0; x < seen.size(); ++x) {
    if (!seen[x]) {
      return absl::DataLossError(
          absl::StrCat("cache ", id.ToHex(), ": block ", x, " of ", seen.size(), " never came"));
    }
  }
  return d;
}

absl::Status CompareDigests(const CacheDigest& first, const CacheDigest& again) {
  if (first.checksums.size() != again.checksums.size()) {
    return absl::DataLossError(absl::StrCat("the cache had ", first.checksums.size(),
                                            " blocks and now has ", again.checksums.size()));
  }
  for (size_t x = 0; x < first.checksums.size(); ++x) {
    if (first.checksums[x] != again.checksums[x]) {
      return absl::DataLossError(absl::StrCat("block ", x, " changed between two reads"));
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::bench
