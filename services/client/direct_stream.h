// The decode node's side of a direct plan (StreamCache with allow_direct): every shard streamed
// at once from its worker with the shard's ticket (Worker.StreamShard), each chunk checked like a
// relayed one and also against its shard, and handed to one callback at a time. A shard whose
// stream fails for a reason the relay can get around (the worker unreachable, its ticket refused,
// the worker too old) is reported with the blocks it did not deliver, for the caller to fetch
// through the relay; the other failures end the whole stream.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/common/auth_tls.h"
#include "services/rpc/deadline.h"
#include "services/rpc/kv_chunk_frame.h"
#include "sparsefill/kvstore/layout.h"
#include "sparsefill/v1/common.pb.h"
#include "sparsefill/v1/coordinator.pb.h"

namespace sparsefill::client_internal {

struct DirectStreamOptions {
  auth::ChannelSecurityOptions security;  // towards the workers (no bearer token is sent)
  int max_message_bytes = 64 << 20;
};

struct DirectStreamOutcome {
  int64_t chunks = 0;
  int64_t blocks = 0;
  uint64_t bytes = 0;
  // Blocks of failed shards that did not arrive, as ranges in (layer, head, block) order.
  std::vector<v1::BlockRange> missing;
  int32_t failed_shards = 0;
  std::string failures;  // "worker A: cause; worker B: cause" of the failed shards
};

// Checks that `plan` covers the cache's blocks once, shard after shard; DATA_LOSS otherwise.
absl::Status CheckDirectPlan(const v1::DirectStreamPlan& plan, const kvstore::CacheLayout& layout);

// Streams every shard of `plan` (checked) until `deadline`. `deliver` gets each verified chunk
// as received (rpc::KvChunkFrame: its data still in gRPC's slices), serialized (never two at
// once); its error cancels every stream and is returned, as is a chunk that fails verification
// or lies outside its shard (DATA_LOSS) and a deadline that passes (DEADLINE_EXCEEDED).
// Otherwise OK with the failed shards' missing blocks in `out`.
absl::Status StreamDirect(const v1::DirectStreamPlan& plan, const DirectStreamOptions& options,
                          const kvstore::CacheId& id, const kvstore::CacheLayout& layout,
                          bool hot_only, rpc::Deadline deadline,
                          const std::function<absl::Status(rpc::KvChunkFrame&)>& deliver,
                          DirectStreamOutcome* out);

}  // namespace sparsefill::client_internal
