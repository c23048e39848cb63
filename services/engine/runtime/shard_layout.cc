// ShardLayout (who owns which tokens) and GatherKvRows (rows of any owners, one fetch per owner).
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/shard.h"

namespace sparsefill::engine {

absl::StatusOr<ShardLayout> ShardLayout::Even(int64_t num_tokens, int32_t world_size,
                                              int32_t block_size) {
  if (num_tokens <= 0 || world_size <= 0 || block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("shard layout: num_tokens ", num_tokens,
                                                   ", world_size ", world_size, " and block_size ",
                                                   block_size, " must be positive"));
  }
  const int64_t blocks = (num_tokens + block_size - 1) / block_size;
  if (blocks < world_size) {
    return absl::InvalidArgumentError(absl::StrCat("shard layout: ", num_tokens, " tokens make ",
                                                   blocks, " blocks of ", block_size,
                                                   ", fewer than the ", world_size, " ranks"));
  }
  std::vector<int64_t> bounds(static_cast<size_t>(world_size) + 1);
  for (int32_t r = 0; r <= world_size; ++r) {
    bounds[static_cast<size_t>(r)] =
        std::min(num_tokens, blocks * r / world_size * int64_t{block_size});
  }
  return FromBounds(std::move(bounds), block_size);
}

absl::StatusOr<ShardLayout> ShardLayout::FromBounds(std::vector<int64_t> bounds,
                                                    int32_t block_size) {
  if (block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard layout: block_size ", block_size, " must be positive"));
  }
  if (bounds.size() < 2 || bounds.front() != 0) {
    return absl::InvalidArgumentError(
        "shard layout: bounds must hold world_size + 1 >= 2 values starting at 0");
  }
  for (size_t i = 1; i < bounds.size(); ++i) {
    if (bounds[i] <= bounds[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat("shard layout: bound ", i, " = ", bounds[i],
                                                     " is not after bound ", i - 1, " = ",
                                                     bounds[i - 1], " (empty shard)"));
    }
    if (i + 1 < bounds.size() && bounds[i] % block_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat("shard layout: bound ", i, " = ", bounds[i],
                                                     " is not a multiple of the block size ",
                                                     block_size));
    }
  }
  ShardLayout layout;
  layout.bounds_ = std::move(bounds);
  layout.block_size_ = block_size;
  return layout;
}

int32_t ShardLayout::OwnerOf(int64_t token) const {
  const auto it = std::upper_bound(bounds_.begin(), bounds_.end(), token);
  return std::clamp(static_cast<int32_t>(it - bounds_.begin()) - 1, 0, world_size() - 1);
}

std::string ShardLayout::ToString() const {
  return absl::StrCat("ShardLayout{block=", block_size_, " bounds=[", absl::StrJoin(bounds_, ","),
                      "]}");
}

absl::StatusOr<KvRows> GatherKvRows(ShardExchange& exchange, int32_t layer,
                                    std::span<const TokenRange> ranges, int64_t row_floats,
                                    std::span<const float> local_k,
                                    std::span<const float> local_v) {
  const ShardLayout& layout = exchange.layout();
  const TokenRange mine = exchange.shard();
  if (static_cast<int64_t>(local_k.size()) != mine.size() * row_floats ||
      local_v.size() != local_k.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GatherKvRows: local K/V hold ", local_k.size(), "/", local_v.size(),
                     " floats, expected shard tokens ", mine.size(), " x row ", row_floats));
  }
  // Split every range at shard boundaries; remember where each piece goes in the output.
  struct Piece {
    TokenRange range;
    int64_t out_row;
  };
  std::vector<std::vector<Piece>> by_owner(static_cast<size_t>(layout.world_size()));
  int64_t rows = 0;
  int64_t prev_end = 0;
  for (const TokenRange& r : ranges) {
    if (r.begin < prev_end || r.end <= r.begin || r.end > layout.num_tokens()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GatherKvRows: range [", r.begin, ", ", r.end, ") is empty, out of order or outside the ",
          layout.num_tokens(), " tokens (layer ", layer, ")"));
    }
    prev_end = r.end;
    for (int64_t t = r.begin; t < r.end;) {
      const int32_t owner = layout.OwnerOf(t);
      const int64_t end = std::min(r.end, layout.range(owner).end);
      by_owner[static_cast<size_t>(owner)].push_back({{t, end}, rows + (t - r.begin)});
      t = end;
    }
    rows += r.size();
  }
  KvRows out;
  out.tokens = rows;
  out.k.resize(static_cast<size_t>(rows * row_floats));
  out.v.resize(out.k.size());
  for (int32_t owner = 0; owner < layout.world_size(); ++owner) {
    const std::vector<Piece>& pieces = by_owner[static_cast<size_t>(owner)];
    if (pieces.empty()) continue;
    if (owner == exchange.rank()) {
      for (const Piece& p : pieces) {
        const size_t src = static_cast<size_t>((p.range.begin - mine.begin) * row_floats);
        const size_t n = static_cast<size_t>(p.range.size() * row_floats);
        const size_t dst = static_cast<size_t>(p.out_row * row_floats);
        std::copy_n(local_k.begin() + src, n, out.k.begin() + dst);
        std::copy_n(local_v.begin() + src, n, out.v.begin() + dst);
      }
      continue;
    }
    std::vector<TokenRange> want;
    want.reserve(pieces.size());
    int64_t want_rows = 0;
    for (const Piece& p : pieces) {
      want.push_back(p.range);
      want_rows += p.range.size();
    }
    SF_ASSIGN_OR_RETURN(KvRows got, exchange.FetchKv(layer, owner, want));
    if (got.tokens != want_rows || static_cast<int64_t>(got.k.size()) != want_rows * row_floats ||
        got.v.size() != got.k.size()) {
      return absl::DataLossError(absl::StrCat(
          "FetchKv from rank ", owner, " (layer ", layer, ") returned ", got.tokens, " rows / ",
          got.k.size(), " floats, expected ", want_rows, " rows of ", row_floats));
    }
    int64_t src_row = 0;
    for (const Piece& p : pieces) {
      const size_t src = static_cast<size_t>(src_row * row_floats);
      const size_t n = static_cast<size_t>(p.range.size() * row_floats);
      const size_t dst = static_cast<size_t>(p.out_row * row_floats);
      std::copy_n(got.k.begin() + src, n, out.k.begin() + dst);
      std::copy_n(got.v.begin() + src, n, out.v.begin() + dst);
      src_row += p.range.size();
    }
  }
  return out;
}

}  // namespace sparsefill::engine
