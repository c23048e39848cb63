// Context-parallel ("sharded") prefill, transport-free (DESIGN §1 step 3).
//
// The prompt is cut into contiguous token ranges, one per rank; boundaries are multiples of the
// selection block size (the last range may end anywhere). Ranks run the model layer by layer in
// lockstep and talk only through a ShardExchange: small all-gathers (block summaries, the NOSA
// importance pieces, per-layer counters) and fetches of the K/V rows they attend to. The worker
// process plugs a gRPC implementation in (PutPayload / FetchKv of worker.proto); tests and a
// single-process run use InProcessExchange. Nothing here includes gRPC or protobuf.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sparsefill::engine {

// Tokens [begin, end) at absolute positions.
struct TokenRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const TokenRange&) const = default;
};

// Which rank owns which tokens: bounds[r] .. bounds[r + 1].
class ShardLayout {
 public:
  ShardLayout() = default;
  // `world_size` ranges of whole blocks as even as possible (the last takes the remainder);
  // InvalidArgument when there are fewer blocks than ranks or a value is not positive.
  static absl::StatusOr<ShardLayout> Even(int64_t num_tokens, int32_t world_size,
                                          int32_t block_size);
  // Explicit boundaries [world_size + 1]: bounds[0] == 0, strictly increasing, every inner
  // boundary a multiple of block_size. InvalidArgument names the offending boundary.
  static absl::StatusOr<ShardLayout> FromBounds(std::vector<int64_t> bounds, int32_t block_size);

  int32_t world_size() const { return static_cast<int32_t>(bounds_.size()) - 1; }
  int64_t num_tokens() const { return bounds_.empty() ? 0 : bounds_.back(); }
  int32_t block_size() const { return block_size_; }
  TokenRange range(int32_t rank) const { return {bounds_[rank], bounds_[rank + 1]}; }
  const std::vector<int64_t>& bounds() const { return bounds_; }
  // The rank holding `token` (0 <= token < num_tokens).
  int32_t OwnerOf(int64_t token) const;
  std::string ToString() const;

 private:
  std::vector<int64_t> bounds_;
  int32_t block_size_ = 0;
};

// fp32 K and V rows, [tokens, kv_heads, head_dim] each, in the order they were asked for.
struct KvRows {
  int64_t tokens = 0;
  std::vector<float> k;
  std::vector<float> v;
};

// One rank's view of the peer exchange of one job. Every call blocks until the peers have done
// their part or the implementation's deadline passes (DeadlineExceeded); every failure names the
// peer and the layer. `layer` is the exchange step: layers 0 .. L-1 of the prefill, and
// L .. 2L-1 for the dense reference pass of a measured run (so the two never share keys).
class ShardExchange {
 public:
  virtual ~ShardExchange() = default;

  virtual int32_t rank() const = 0;
  virtual const ShardLayout& layout() const = 0;
  int32_t world_size() const { return layout().world_size(); }
  TokenRange shard() const { return layout().range(rank()); }

  // Posts this rank's payload for (layer, tag) and returns the payloads of every rank in rank
  // order (this rank's included). Each (layer, tag) is gathered once per job.
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::string>> AllGather(
      int32_t layer, std::string_view tag, std::string_view data) = 0;

  // Makes this rank's K/V of `layer` (its whole shard, [shard tokens, kv_heads, head_dim] each,
  // `row_floats` = kv_heads * head_dim) fetchable by peers until ReleaseLayer or the end of the
  // job. The implementation copies what it needs.
  [[nodiscard]] virtual absl::Status PublishLayer(int32_t layer, int64_t row_floats,
                                                  std::span<const float> k,
                                                  std::span<const float> v) = 0;
  // Peers will not fetch `layer` of this rank any more (the runner calls it after the layer's
  // closing all-gather, which every peer reaches only after its fetches).
  [[nodiscard]] virtual absl::Status ReleaseLayer(int32_t layer) = 0;

  // Rows of `ranges` (absolute positions, each inside `owner`'s shard), concatenated in the
  // given order. Blocks until `owner` has published `layer`.
  [[nodiscard]] virtual absl::StatusOr<KvRows> FetchKv(int32_t layer, int32_t owner,
                                                       std::span<const TokenRange> ranges) = 0;

  // This rank failed: wake every peer blocked on it with an error naming this rank (a transport
  // may also cancel its calls). Later calls of any rank fail with that status.
  virtual void Abort(const absl::Status& why) = 0;
};

// Rows of `ranges` (absolute positions, any owners, ascending and disjoint), split by owner with
// one FetchKv per owner, in the order of `ranges`; rows this rank owns come from `local_k` /
// `local_v` (its shard, [shard tokens, row_floats]) without a fetch.
[[nodiscard]] absl::StatusOr<KvRows> GatherKvRows(ShardExchange& exchange, int32_t layer,
                                                  std::span<const TokenRange> ranges,
                                                  int64_t row_floats,
                                                  std::span<const float> local_k,
                                                  std::span<const float> local_v);

// N ranks in one process (threads), for tests and single-process runs. Thread-safe: rank r's
// endpoint is used by one thread at a time, different endpoints concurrently.
class InProcessExchange {
 public:
  struct Options {
    // How long a call waits for the peers (default 120 s).
    std::chrono::milliseconds timeout{120000};
  };
  static absl::StatusOr<std::unique_ptr<InProcessExchange>> Create(ShardLayout layout,
                                                                   const Options& options);
  ~InProcessExchange();
  InProcessExchange(const InProcessExchange&) = delete;
  InProcessExchange& operator=(const InProcessExchange&) = delete;

  int32_t world_size() const;
  // The endpoint of `rank` (0 <= rank < world_size), owned by this object.
  ShardExchange& endpoint(int32_t rank);

  struct Hub;

 private:
  InProcessExchange() = default;
  std::shared_ptr<Hub> hub_;
  std::vector<std::unique_ptr<ShardExchange>> endpoints_;
};

// One shard's own share of a layer (what a worker reports per layer).
struct ShardLayerPart {
  int32_t layer = 0;
  int64_t selected_keys = 0;  // over this shard's queries and all KV heads
  int64_t causal_keys = 0;
  double information_loss_sum = 0.0;  // measured runs: sum over (query head, query)
  int64_t information_loss_count = 0;
  double seconds = 0.0;
};

}  // namespace sparsefill::engine
