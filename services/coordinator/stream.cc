// Coordinator::StreamCache and FetchBlocks: blocks read from the workers holding the shards and
// passed on with their xxh64. Workers index a shard's blocks from its first block (shard-local);
// decode nodes see global block indices.
#include <algorithm>
#include <iostream>
#include <limits>
#include <map>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "services/coordinator/coordinator.h"
#include "services/rpc/convert.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {
namespace {

// first + n for error messages, saturated: a client or worker may send a first block near 2^63.
int64_t RangeEnd(int64_t first, int64_t n) {
  int64_t end = 0;
  return __builtin_add_overflow(first, n, &end) ? std::numeric_limits<int64_t>::max() : end;
}

}  // namespace

absl::Status Coordinator::ReadShardBlocks(const CacheEntry& entry, const ShardRange& shard,
                                          const std::vector<v1::BlockRange>& ranges,
                                          Deadline deadline, Cancellation* cancel, bool hot_pass,
                                          const WorkerApi::RelayCallback& on_chunk) {
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
  req.set_hot_pass(hot_pass);
  for (const v1::BlockRange& r : ranges) *req.add_ranges() = r;
  const std::string id_bytes = rpc::CacheIdToBytes(entry.id);
  absl::Status s = w->ReadBlocksRelay(
      req,
      [&](RelayChunk& chunk) -> absl::Status {
        // Structural checks only; the checksums travel on untouched for the decode node to
        // verify (it must anyway: DESIGN §6), and so do the bytes: the chunk leaves in the wire
        // message it came in, so it must already name this cache.
        const v1::KvChunk& in = chunk.header;
        // A hot pass announces cold runs without their bytes (FetchBlocksRequest.hot_pass).
        const bool announced =
            hot_pass && !in.hot() && in.xxh64_size() == 0 && chunk.data_bytes == 0;
        if (in.layer() < 0 || in.layer() >= entry.layout.num_layers || in.kv_head() < 0 ||
            in.kv_head() >= entry.layout.kv_heads || in.num_blocks() <= 0 ||
            in.first_block() < first || in.first_block() > end - in.num_blocks() ||
            (!announced && in.xxh64_size() != in.num_blocks())) {
          return absl::DataLossError(absl::StrCat(
              "worker ", w->address(), " sent a malformed chunk for cache ", entry.id.ToHex(),
              ": layer ", in.layer(), " head ", in.kv_head(), " blocks [", in.first_block(), ", ",
              RangeEnd(in.first_block(), in.num_blocks()), ") outside its shard [", first, ", ",
              end, ") or with ", in.xxh64_size(), " checksums"));
        }
        if (in.cache_id() != id_bytes) {
          return absl::DataLossError(absl::StrCat("worker ", w->address(),
                                                  " sent a chunk of another cache when asked for ",
                                                  entry.id.ToHex()));
        }
        return on_chunk(chunk);
      },
      CallControl{deadline, cancel});
  // Cancelled without our asking: the worker's server went away mid-call.
  if (s.code() == absl::StatusCode::kCancelled && !IsCancelled(cancel)) {
    s = absl::UnavailableError(s.message());
  }
  return s;
}

Coordinator::RelaySink Coordinator::CountedSink(const RelaySink& sink) const {
  metrics::StreamMetricSet* m = options_.stream_metrics;
  if (m == nullptr) return sink;
  return [m, &sink](const RelayChunk& chunk) {
    absl::Status s = sink(chunk);
    if (s.ok()) m->RecordChunk(chunk.data_bytes, chunk.header.hot());
    return s;
  };
}

namespace {

Coordinator::RelaySink Parsing(const Coordinator::ChunkSink& sink) {
  return [&sink](const RelayChunk& chunk) -> absl::Status {
    SF_ASSIGN_OR_RETURN(v1::KvChunk parsed, ParseRelayed(chunk));
    return sink(parsed);
  };
}

}  // namespace

absl::Status Coordinator::StreamCache(const RequestContext& rc,
                                      const v1::StreamCacheRequest& request,
                                      const ChunkSink& sink) {
  return StreamCache(rc, request, Parsing(sink));
}

absl::Status Coordinator::FetchBlocks(const RequestContext& rc,
                                      const v1::FetchBlocksRequest& request,
                                      const ChunkSink& sink) {
  return FetchBlocks(rc, request, Parsing(sink));
}

absl::Status Coordinator::StreamCache(const RequestContext& rc,
                                      const v1::StreamCacheRequest& request,
                                      const RelaySink& raw_sink) {
  const RelaySink sink = CountedSink(raw_sink);
  // Open for the whole call, every return path included: the stalled-stream alert reads it.
  metrics::StreamMetricSet* const open_metrics = options_.stream_metrics;
  if (open_metrics != nullptr) open_metrics->StreamOpened();
  const absl::Cleanup close_stream = [open_metrics] {
    if (open_metrics != nullptr) open_metrics->StreamClosed();
  };
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
          e, shard, ranges, worker_deadline, rc.cancel, /*hot_pass=*/true,
          [&](RelayChunk& chunk) -> absl::Status {
            const v1::KvChunk& h = chunk.header;
            if (h.layer() != layer) {
              return absl::DataLossError(absl::StrCat("worker ", shard.address, " sent layer ",
                                                      h.layer(), " when asked for layer ", layer));
            }
            if (h.hot()) return sink(chunk);
            // Cold runs next to each other (the same layer and head) are fetched as one range,
            // so they come back in chunks as large as the worker cuts them.
            std::vector<v1::BlockRange>& runs = cold[s];
            if (!runs.empty() && runs.back().layer() == h.layer() &&
                runs.back().kv_head() == h.kv_head() &&
                runs.back().first_block() + runs.back().num_blocks() == h.first_block()) {
              runs.back().set_num_blocks(runs.back().num_blocks() + h.num_blocks());
              return absl::OkStatus();
            }
            v1::BlockRange r;
            r.set_layer(h.layer());
            r.set_kv_head(h.kv_head());
            r.set_first_block(h.first_block());
            r.set_num_blocks(h.num_blocks());
            runs.push_back(r);
            return absl::OkStatus();
          }));
    }
  }
  if (request.hot_only()) return absl::OkStatus();
  SF_ASSIGN_OR_RETURN(const CacheEntry e, Lookup(rc, request.cache_id()));
  for (size_t s = 0; s < e.shards.size(); ++s) {
    if (cold[s].empty()) continue;
    SF_RETURN_IF_ERROR(ReadShardBlocks(e, e.shards[s], cold[s], worker_deadline, rc.cancel,
                                       /*hot_pass=*/false,
                                       [&](RelayChunk& chunk) { return sink(chunk); }));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::DirectStreamPlan>> Coordinator::PlanDirectStream(
    const RequestContext& rc, const v1::StreamCacheRequest& request) {
  if (!request.allow_direct() || options_.direct_ticket_ttl.count() == 0) return std::nullopt;
  // The same answers as StreamCache for a bad id, a missing cache or another tenant's.
  SF_ASSIGN_OR_RETURN(const CacheEntry e, Lookup(rc, request.cache_id()));
  // A PENDING cache streams layer by layer as layers become ready, which only the relay does.
  if (e.state != CacheState::kReady) return std::nullopt;
  // Registering tickets is a few small calls: they get a short deadline of their own, within the
  // request's, so a slow worker costs the decode node little before the relay takes over.
  const Deadline deadline = std::min(WorkerDeadline(EffectiveDeadline(rc)),
                                     std::chrono::system_clock::now() + options_.health_timeout);
  const int32_t b = e.layout.block_size;
  v1::DirectStreamPlan plan;
  plan.set_ticket_ttl_ms(options_.direct_ticket_ttl.count());
  for (const ShardRange& shard : e.shards) {
    WorkerApi* w = workers_->Find(shard.address);
    if (w == nullptr) return std::nullopt;  // the relay names the missing worker
    v1::StreamTicket ticket;
    // 128 bits from the OS's entropy source, like cache ids.
    ticket.set_ticket(rpc::CacheIdToBytes(kvstore::CacheId::Random()));
    ticket.set_cache_id(rpc::CacheIdToBytes(e.id));
    ticket.set_tenant(e.tenant);
    ticket.set_token_begin(shard.token_begin);
    ticket.set_token_end(shard.token_end);
    ticket.set_ttl_ms(options_.direct_ticket_ttl.count());
    absl::StatusOr<v1::StreamTicketAck> ack =
        w->IssueStreamTicket(ticket, CallControl{deadline, rc.cancel});
    if (!ack.ok()) {
      if (IsCancelled(rc.cancel)) return absl::CancelledError("StreamCache: the caller went away");
      // Tickets already registered with other workers expire unused.
      if (ack.status().code() != absl::StatusCode::kUnimplemented) {
        std::cerr << "coordinator: StreamCache " << e.id.ToHex()
                  << ": relaying instead of a direct plan: " << ack.status().message() << "\n";
      }
      return std::nullopt;
    }
    v1::DirectShard* d = plan.add_shards();
    d->set_address(ack->address().empty() ? shard.address : ack->address());
    d->set_ticket(ticket.ticket());
    d->set_first_block(ShardFirstBlock(shard, b));
    d->set_end_block(ShardEndBlock(shard, b));
  }
  return plan;
}

absl::Status Coordinator::FetchBlocks(const RequestContext& rc,
                                      const v1::FetchBlocksRequest& request,
                                      const RelaySink& raw_sink) {
  const RelaySink sink = CountedSink(raw_sink);
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
    // first_block + num_blocks would overflow for a first_block near 2^63 (found by
    // tests/fuzz/coordinator_request_fuzzer): compare against the difference instead.
    if (r.first_block() < 0 || r.first_block() > l.num_blocks() - r.num_blocks()) {
      return absl::InvalidArgumentError(absl::StrCat(
          f, ": blocks [", r.first_block(), ", ", RangeEnd(r.first_block(), r.num_blocks()),
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
                                         /*hot_pass=*/false,
                                         [&](RelayChunk& chunk) { return sink(chunk); }));
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::coordinator
