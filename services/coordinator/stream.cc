// Coordinator::StreamCache and FetchBlocks: blocks read from the workers holding the shards and
// passed on with their xxh64. Workers index a shard's blocks from its first block (shard-local);
// decode nodes see global block indices.
#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "services/coordinator/coordinator.h"
#include "services/rpc/convert.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {

absl::Status Coordinator::ReadShardBlocks(
    const CacheEntry& entry, const ShardRange& shard, const std::vector<v1::BlockRange>& ranges,
    Deadline deadline, Cancellation* cancel,
    const std::function<absl::Status(v1::KvChunk&)>& on_chunk) {
  WorkerApi* w = workers_->Find(shard.address);
  if (w == nullptr) {
    return absl::UnavailableError(absl::StrCat("worker ", shard.address, " holding shard ",
                                               shard.rank, " of cache ", entry.id.ToHex(),
                                               " is not configured"));
  }
  // Workers speak global block indices (their ShardManifest maps them onto the shard's store),
  // so ranges and chunks pass through unchanged; the checks below keep them inside the shard.
  const int32_t b = entry.layout.block_size;
  const int64_t first = ShardFirstBlock(shard, b);
  const int64_t end = ShardEndBlock(shard, b);
  v1::FetchBlocksRequest req;
  req.set_cache_id(rpc::CacheIdToBytes(entry.id));
  for (const v1::BlockRange& r : ranges) *req.add_ranges() = r;
  const std::string id_bytes = rpc::CacheIdToBytes(entry.id);
  absl::Status s = w->ReadBlocks(
      req,
      [&](v1::KvChunk& in) -> absl::Status {
        // Structural checks only; the checksums travel on untouched for the decode node to
        // verify (it must anyway: DESIGN §6).
        if (in.layer() < 0 || in.layer() >= entry.layout.num_layers || in.kv_head() < 0 ||
            in.kv_head() >= entry.layout.kv_heads || in.num_blocks() <= 0 ||
            in.first_block() < first || in.first_block() + in.num_blocks() > end ||
            in.xxh64_size() != in.num_blocks()) {
          return absl::DataLossError(absl::StrCat(
              "worker ", w->address(), " sent a malformed chunk for cache ", entry.id.ToHex(),
              ": layer ", in.layer(), " head ", in.kv_head(), " blocks [", in.first_block(), ", ",
              in.first_block() + in.num_blocks(), ") outside its shard [", first, ", ", end,
              ") or with ", in.xxh64_size(), " checksums"));
        }
        in.set_cache_id(id_bytes);  // forwarded in place: the block bytes are not copied
        return on_chunk(in);
      },
      CallControl{deadline, cancel});
  // Cancelled without our asking: the worker's server went away mid-call.
  if (s.code() == absl::StatusCode::kCancelled && !IsCancelled(cancel)) {
    s = absl::UnavailableError(s.message());
  }
  return s;
}

Coordinator::ChunkSink Coordinator::CountedSink(const ChunkSink& sink) const {
  metrics::StreamMetricSet* m = options_.stream_metrics;
  if (m == nullptr) return sink;
  return [m, &sink](const v1::KvChunk& chunk) {
    absl::Status s = sink(chunk);
    if (s.ok()) m->RecordChunk(chunk.data().size(), chunk.hot());
    return s;
  };
}

absl::Status Coordinator::StreamCache(const RequestContext& rc,
                                      const v1::StreamCacheRequest& request,
                                      const ChunkSink& raw_sink) {
  const ChunkSink sink = CountedSink(raw_sink);
  SF_ASSIGN_OR_RETURN(const CacheEntry first, Lookup(rc, request.cache_id()));
  const Deadline deadline = EffectiveDeadline(rc);
  const Deadline worker_deadline = WorkerDeadline(deadline);
  const int32_t num_layers = first.layout.num_layers;
  // Cold runs seen during the hot pass, per shard, fetched after every layer's hot blocks.
  std::vector<std::vector<v1::BlockRange>> cold(first.shards.size());
  for (int32_t layer = 0; layer < num_layers; ++layer) {
    SF_ASSIGN_OR_RETURN(const CacheEntry e,
                        registry_->WaitForLayer(first.id, rc.tenant, layer, deadline, rc.cancel));
    for (size_t s = 0; s < e.shards.size(); ++s) {
      const ShardRange& shard = e.shards[s];
      const int32_t b = e.layout.block_size;
      const int64_t first_block = ShardFirstBlock(shard, b);
      std::vector<v1::BlockRange> ranges;
      for (int32_t h = 0; h < e.layout.kv_heads; ++h) {
        v1::BlockRange r;
        r.set_layer(layer);
        r.set_kv_head(h);
        r.set_first_block(first_block);
        r.set_num_blocks(static_cast<int32_t>(ShardEndBlock(shard, b) - first_block));
        ranges.push_back(r);
      }
      SF_RETURN_IF_ERROR(ReadShardBlocks(
          e, shard, ranges, worker_deadline, rc.cancel, [&](v1::KvChunk& chunk) -> absl::Status {
            if (chunk.layer() != layer) {
              return absl::DataLossError(absl::StrCat("worker ", shard.address, " sent layer ",
                                                      chunk.layer(), " when asked for layer ",
                                                      layer));
            }
            if (chunk.hot()) return sink(chunk);
            v1::BlockRange r;
            r.set_layer(chunk.layer());
            r.set_kv_head(chunk.kv_head());
            r.set_first_block(chunk.first_block());
            r.set_num_blocks(chunk.num_blocks());
            cold[s].push_back(r);
            return absl::OkStatus();
          }));
    }
  }
  if (request.hot_only()) return absl::OkStatus();
  SF_ASSIGN_OR_RETURN(const CacheEntry e, Lookup(rc, request.cache_id()));
  for (size_t s = 0; s < e.shards.size(); ++s) {
    if (cold[s].empty()) continue;
    SF_RETURN_IF_ERROR(ReadShardBlocks(e, e.shards[s], cold[s], worker_deadline, rc.cancel,
                                       [&](v1::KvChunk& chunk) { return sink(chunk); }));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::FetchBlocks(const RequestContext& rc,
                                      const v1::FetchBlocksRequest& request,
                                      const ChunkSink& raw_sink) {
  const ChunkSink sink = CountedSink(raw_sink);
  SF_ASSIGN_OR_RETURN(const CacheEntry e, Lookup(rc, request.cache_id()));
  if (request.ranges().empty()) return absl::InvalidArgumentError("ranges: empty");
  if (e.state == CacheState::kFailed) {
    return absl::FailedPreconditionError(
        absl::StrCat("cache ", e.id.ToHex(), " failed: ", e.failure));
  }
  const kvstore::CacheLayout& l = e.layout;
  for (int i = 0; i < request.ranges_size(); ++i) {
    const v1::BlockRange& r = request.ranges(i);
    const std::string f = absl::StrCat("ranges[", i, "]");
    if (r.layer() < 0 || r.layer() >= l.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".layer: ", r.layer(), " is not in [0, ", l.num_layers, ")"));
    }
    if (r.kv_head() < 0 || r.kv_head() >= l.kv_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".kv_head: ", r.kv_head(), " is not in [0, ", l.kv_heads, ")"));
    }
    if (r.num_blocks() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".num_blocks: must be positive, got ", r.num_blocks()));
    }
    if (r.first_block() < 0 || r.first_block() + r.num_blocks() > l.num_blocks()) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ": blocks [", r.first_block(), ", ", r.first_block() + r.num_blocks(),
                       ") are not inside the cache's ", l.num_blocks(), " blocks"));
    }
    if (r.layer() >= e.layers_ready) {
      return absl::FailedPreconditionError(
          absl::StrCat(f, ".layer: layer ", r.layer(), " of cache ", e.id.ToHex(),
                       " is not ready yet (", e.layers_ready, " of ", l.num_layers, " ready)"));
    }
  }
  const Deadline worker_deadline = WorkerDeadline(EffectiveDeadline(rc));
  for (const v1::BlockRange& r : request.ranges()) {
    const int64_t end = r.first_block() + r.num_blocks();
    for (const ShardRange& shard : e.shards) {
      const int64_t lo = std::max<int64_t>(r.first_block(), ShardFirstBlock(shard, l.block_size));
      const int64_t hi = std::min<int64_t>(end, ShardEndBlock(shard, l.block_size));
      if (lo >= hi) continue;
      v1::BlockRange part = r;
      part.set_first_block(lo);
      part.set_num_blocks(static_cast<int32_t>(hi - lo));
      SF_RETURN_IF_ERROR(ReadShardBlocks(e, shard, {part}, worker_deadline, rc.cancel,
                                         [&](v1::KvChunk& chunk) { return sink(chunk); }));
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::coordinator
