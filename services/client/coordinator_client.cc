#include "sparsefill/client/coordinator_client.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "services/client/client_call.h"
#include "services/client/direct_stream.h"
#include "services/common/auth_channel.h"
#include "services/rpc/convert.h"
#include "services/rpc/kv_chunk.h"
#include "services/rpc/kv_chunk_frame.h"
#include "services/rpc/status.h"
#include "sparsefill/common/status.h"
#include "sparsefill/v1/coordinator.grpc.pb.h"

namespace sparsefill::client {
namespace {

namespace v1 = ::sparsefill::v1;
using client_internal::OpenByteStream;
using client_internal::PrepareContext;
using client_internal::ReadStream;

auth::ChannelSecurityOptions SecurityOf(const ConnectionOptions& o) {
  auth::ChannelSecurityOptions s;
  s.mode = o.security == Security::kTls ? auth::TransportSecurity::kTls
                                        : auth::TransportSecurity::kInsecure;
  s.ca_file = o.ca_file;
  s.cert_file = o.cert_file;
  s.key_file = o.key_file;
  s.target_name_override = o.target_name_override;
  s.allow_token_over_insecure = o.allow_token_over_insecure;
  return s;
}

CacheState StateFromProto(int state) {
  switch (state) {
    case v1::CACHE_STATE_PENDING:
      return CacheState::kPending;
    case v1::CACHE_STATE_READY:
      return CacheState::kReady;
    case v1::CACHE_STATE_FAILED:
      return CacheState::kFailed;
    default:
      return CacheState::kUnspecified;
  }
}

absl::StatusOr<CacheInfo> CacheInfoFromProto(const v1::CacheInfo& p) {
  CacheInfo info;
  SF_ASSIGN_OR_RETURN(info.id, rpc::CacheIdFromBytes(p.cache_id(), "cache.cache_id"));
  info.model = p.model();
  info.state = StateFromProto(p.state());
  SF_ASSIGN_OR_RETURN(info.layout, rpc::CacheLayoutFromProto(p.layout(), "cache.layout"));
  info.created_unix_ms = p.created_unix_ms();
  info.expires_unix_ms = p.expires_unix_ms();
  info.layers_ready = p.layers_ready();
  info.hot_blocks = p.hot_blocks();
  info.cold_blocks = p.cold_blocks();
  info.bytes = p.bytes();
  info.policy = p.policy();
  return info;
}

PrefillStats StatsFromProto(const v1::PrefillStats& p) {
  PrefillStats s;
  s.num_tokens = p.num_tokens();
  s.seconds = p.seconds();
  s.tokens_per_second = p.tokens_per_second();
  s.sparsity = p.sparsity();
  s.selected_keys = p.selected_keys();
  s.causal_keys = p.causal_keys();
  for (const v1::LayerStats& l : p.layers()) {
    s.layers.push_back(
        LayerStats{l.layer(), l.selected_keys(), l.causal_keys(), l.information_loss()});
  }
  s.information_loss = p.information_loss();
  s.information_loss_queries = p.information_loss_queries();
  s.hidden_rel_l2 = p.hidden_rel_l2();
  s.next_token_kl = p.next_token_kl();
  s.workers = p.workers();
  s.hot_blocks = p.hot_blocks();
  s.cold_blocks = p.cold_blocks();
  s.policy = p.policy();
  return s;
}

// A server's reply that no correct server sends is DATA_LOSS: the bytes are not what they claim.
absl::Status BadReply(std::string_view method, const absl::Status& status) {
  return absl::DataLossError(absl::StrCat(AsAbsl(method), ": malformed reply: ", status.message()));
}

absl::Status ToProto(const PrefillRequest& r, v1::PrefillRequest* p) {
  if (r.model.empty()) return absl::InvalidArgumentError("model: empty");
  if (r.tokens.empty() == r.text.empty()) {
    return absl::InvalidArgumentError("prompt: give exactly one of tokens and text");
  }
  if (r.ttl_seconds < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_seconds: must not be negative, got ", r.ttl_seconds));
  }
  if (r.information_loss_queries < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "information_loss_queries: ", r.information_loss_queries,
        ", give a positive number of query positions, -1 (every query) or 0 (the default)"));
  }
  p->set_model(r.model);
  if (!r.tokens.empty()) {
    p->mutable_tokens()->mutable_ids()->Add(r.tokens.begin(), r.tokens.end());
  } else {
    p->set_text(r.text);
  }
  const SelectionOverrides& s = r.selection;
  v1::SelectionOverrides* o = p->mutable_selection();
  if (s.policy) o->set_policy(rpc::PolicyToProto(*s.policy));
  if (s.block_size) o->set_block_size(*s.block_size);
  if (s.kernel_size) o->set_kernel_size(*s.kernel_size);
  if (s.kernel_stride) o->set_kernel_stride(*s.kernel_stride);
  if (s.init_blocks) o->set_init_blocks(*s.init_blocks);
  if (s.local_tokens) o->set_local_tokens(*s.local_tokens);
  if (s.topk) o->set_topk(*s.topk);
  if (s.dense_below) o->set_dense_below(*s.dense_below);
  if (s.lambda) o->set_lambda(*s.lambda);
  if (s.nosa_query_aware) o->set_nosa_query_aware(*s.nosa_query_aware);
  if (s.nosa_observe) o->set_nosa_observe(*s.nosa_observe);
  p->set_measure(r.measure);
  p->set_ttl_seconds(r.ttl_seconds);
  p->set_information_loss_queries(r.information_loss_queries);
  return absl::OkStatus();
}

}  // namespace

std::string_view CacheStateName(CacheState state) {
  switch (state) {
    case CacheState::kPending:
      return "pending";
    case CacheState::kReady:
      return "ready";
    case CacheState::kFailed:
      return "failed";
    case CacheState::kUnspecified:
      break;
  }
  return "unspecified";
}

absl::Status ConnectionOptions::Validate() const {
  if (address.empty()) return absl::InvalidArgumentError("address: empty");
  if (default_timeout.count() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_timeout: must be positive, got ", default_timeout.count(), " ms"));
  }
  if (max_message_bytes < (4 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("max_message_bytes: ", max_message_bytes,
                                                   " is below gRPC's default of 4 MiB"));
  }
  return SecurityOf(*this).Validate();
}

struct CoordinatorClient::Impl {
  ConnectionOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Coordinator::Stub> stub;

  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> OpenFetchBlocks(
      grpc::ClientContext* ctx, const v1::FetchBlocksRequest& req) {
    return OpenByteStream(channel.get(), "/sparsefill.v1.Coordinator/FetchBlocks", ctx, req);
  }

  std::chrono::milliseconds Timeout(const CallOptions& call) const {
    return call.timeout.count() > 0 ? call.timeout : options.default_timeout;
  }

  // Streams chunks of `id` through `on_chunk` after checking each against `layout`. With
  // `plan` (StreamCache with allow_direct), a reply that is a direct plan is stored there instead.
  template <typename Open>
  absl::StatusOr<StreamStats> ReadChunks(std::string_view method, grpc::ClientContext* ctx,
                                         const kvstore::CacheId& id,
                                         const kvstore::CacheLayout& layout, Open&& open,
                                         const ChunkCallback& on_chunk,
                                         std::optional<v1::DirectStreamPlan>* plan = nullptr) {
    StreamStats stats;
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader = open(ctx);
    // Replies read as received: each chunk's data is checked and handed on from gRPC's slices.
    rpc::KvChunkFrame frame;
    const absl::Status status =
        ReadStream(ctx, reader.get(), [&](grpc::ByteBuffer& m) -> absl::Status {
          SF_RETURN_IF_ERROR(frame.Parse(&m));
          v1::KvChunk& p = *frame.mutable_header();
          if (p.has_direct_plan()) {
            if (plan == nullptr || plan->has_value() || stats.chunks > 0) {
              return absl::DataLossError("malformed reply: a direct plan where none can come");
            }
            *plan = std::move(*p.mutable_direct_plan());
            return absl::OkStatus();
          }
          if (plan != nullptr && plan->has_value()) {
            return absl::DataLossError("malformed reply: chunks after a direct plan");
          }
          SF_RETURN_IF_ERROR(rpc::VerifyKvChunkFrame(frame, id, layout));
          ++stats.chunks;
          stats.blocks += p.num_blocks();
          stats.bytes += frame.data_size();
          return Deliver(frame, id, on_chunk);
        });
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat(AsAbsl(method), ": ", status.message()));
    }
    return stats;
  }

  // A checked chunk as the caller sees it. Its data is made contiguous only for a callback.
  static absl::Status Deliver(rpc::KvChunkFrame& frame, const kvstore::CacheId& id,
                              const ChunkCallback& on_chunk) {
    if (!on_chunk) return absl::OkStatus();
    const v1::KvChunk& p = frame.header();
    KvChunk chunk;
    chunk.cache = id;
    chunk.layer = p.layer();
    chunk.kv_head = p.kv_head();
    chunk.first_block = p.first_block();
    chunk.num_blocks = p.num_blocks();
    if (p.tier() != v1::TIER_UNSPECIFIED) {
      SF_ASSIGN_OR_RETURN(chunk.tier, rpc::TierFromProto(p.tier()));
    }
    chunk.hot = p.hot();
    chunk.xxh64.assign(p.xxh64().begin(), p.xxh64().end());
    chunk.data = frame.ContiguousData();  // a view: valid during the callback
    return on_chunk(chunk);
  }

  // StreamCache after a direct plan: the shards from their workers, then through the relay
  // (FetchBlocks) whatever failed shards did not deliver.
  absl::StatusOr<StreamStats> StreamDirect(const kvstore::CacheId& id,
                                           const kvstore::CacheLayout& layout,
                                           const v1::DirectStreamPlan& plan, bool hot_only,
                                           rpc::Deadline deadline, const ChunkCallback& on_chunk) {
    client_internal::DirectStreamOptions direct;
    direct.security = SecurityOf(options);
    direct.security.target_name_override = options.worker_target_name_override;
    direct.max_message_bytes = options.max_message_bytes;
    client_internal::DirectStreamOutcome outcome;
    const absl::Status s = client_internal::StreamDirect(
        plan, direct, id, layout, hot_only, deadline,
        [&](rpc::KvChunkFrame& f) { return Deliver(f, id, on_chunk); }, &outcome);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("StreamCache: ", s.message()));
    StreamStats stats;
    stats.chunks = outcome.chunks;
    stats.blocks = outcome.blocks;
    stats.bytes = outcome.bytes;
    stats.direct_blocks = outcome.blocks;
    stats.relayed_shards = outcome.failed_shards;
    if (outcome.missing.empty()) return stats;
    // The relay takes over what the failed shards did not deliver (for hot_only these ranges
    // include the shard's cold blocks: the worker never said which of them are hot).
    v1::FetchBlocksRequest req;
    req.set_cache_id(rpc::CacheIdToBytes(id));
    for (v1::BlockRange& r : outcome.missing) *req.add_ranges() = std::move(r);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    absl::StatusOr<StreamStats> relayed = ReadChunks(
        "StreamCache", &ctx, id, layout,
        [&](grpc::ClientContext* c) { return OpenFetchBlocks(c, req); }, on_chunk);
    if (!relayed.ok()) {
      return absl::Status(
          relayed.status().code(),
          absl::StrCat(relayed.status().message(),
                       " (relaying the blocks of failed direct streams: ", outcome.failures, ")"));
    }
    stats.chunks += relayed->chunks;
    stats.blocks += relayed->blocks;
    stats.bytes += relayed->bytes;
    return stats;
  }
};

CoordinatorClient::CoordinatorClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CoordinatorClient::~CoordinatorClient() = default;

absl::StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Connect(
    const ConnectionOptions& options) {
  SF_RETURN_IF_ERROR(options.Validate());
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  // A connection of its own: clients in one process (several decode streams) would otherwise
  // share one HTTP/2 connection through gRPC's global subchannel pool and queue behind each
  // other on its transport.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  SF_ASSIGN_OR_RETURN(impl->channel, auth::CreateChannel(options.address, SecurityOf(options),
                                                         options.token, std::move(args)));
  impl->stub = v1::Coordinator::NewStub(impl->channel);
  return std::unique_ptr<CoordinatorClient>(new CoordinatorClient(std::move(impl)));
}

absl::StatusOr<PrefillResult> CoordinatorClient::Prefill(const PrefillRequest& request,
                                                         const ProgressCallback& on_progress,
                                                         const CallOptions& call) {
  v1::PrefillRequest req;
  SF_RETURN_IF_ERROR(ToProto(request, &req));
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(nullptr, &owned, impl_->Timeout(call));
  std::unique_ptr<grpc::ClientReader<v1::PrefillProgress>> reader = impl_->stub->Prefill(ctx, req);
  std::optional<PrefillResult> result;
  const absl::Status status =
      ReadStream(ctx, reader.get(), [&](const v1::PrefillProgress& p) -> absl::Status {
        if (result) return absl::DataLossError("Prefill: progress after the final message");
        PrefillProgress progress;
        switch (p.event_case()) {
          case v1::PrefillProgress::kAdmitted: {
            absl::StatusOr<kvstore::CacheId> id =
                rpc::CacheIdFromBytes(p.admitted().cache_id(), "admitted.cache_id");
            if (!id.ok()) return BadReply("Prefill", id.status());
            progress.kind = PrefillProgress::Kind::kAdmitted;
            progress.cache = *id;
            progress.num_tokens = p.admitted().num_tokens();
            progress.workers = p.admitted().workers();
            progress.num_layers = p.admitted().num_layers();
            break;
          }
          case v1::PrefillProgress::kLayerDone:
            progress.kind = PrefillProgress::Kind::kLayerDone;
            progress.layer = p.layer_done().layer();
            progress.layers_total = p.layer_done().layers_total();
            break;
          case v1::PrefillProgress::kDone: {
            absl::StatusOr<CacheInfo> cache = CacheInfoFromProto(p.done().cache());
            if (!cache.ok()) return BadReply("Prefill", cache.status());
            result = PrefillResult{*std::move(cache), StatsFromProto(p.done().stats())};
            return absl::OkStatus();
          }
          default:
            return absl::DataLossError("Prefill: progress message without an event");
        }
        if (on_progress) on_progress(progress);
        return absl::OkStatus();
      });
  SF_RETURN_IF_ERROR(status);
  if (!result) return absl::DataLossError("Prefill: stream ended without the final message");
  return *std::move(result);
}

absl::StatusOr<CacheInfo> CoordinatorClient::GetCache(const kvstore::CacheId& id,
                                                      const CallOptions& call) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(nullptr, &owned, impl_->Timeout(call));
  v1::GetCacheRequest req;
  req.set_cache_id(rpc::CacheIdToBytes(id));
  v1::CacheInfo reply;
  SF_RETURN_IF_ERROR(rpc::FromGrpcStatus(impl_->stub->GetCache(ctx, req, &reply)));
  absl::StatusOr<CacheInfo> info = CacheInfoFromProto(reply);
  if (!info.ok()) return BadReply("GetCache", info.status());
  return info;
}

absl::StatusOr<StreamStats> CoordinatorClient::StreamCache(const kvstore::CacheId& id,
                                                           bool hot_only,
                                                           const ChunkCallback& on_chunk,
                                                           const CallOptions& call) {
  // One deadline for both calls: the caller's timeout covers the whole stream.
  const rpc::Deadline deadline = rpc::Now() + impl_->Timeout(call);
  grpc::ClientContext info_ctx;
  info_ctx.set_deadline(deadline);
  v1::GetCacheRequest info_req;
  info_req.set_cache_id(rpc::CacheIdToBytes(id));
  v1::CacheInfo info;
  SF_RETURN_IF_ERROR(rpc::FromGrpcStatus(impl_->stub->GetCache(&info_ctx, info_req, &info)));
  absl::StatusOr<kvstore::CacheLayout> layout = rpc::CacheLayoutFromProto(info.layout());
  if (!layout.ok()) return BadReply("StreamCache", layout.status());

  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  v1::StreamCacheRequest req;
  req.set_cache_id(rpc::CacheIdToBytes(id));
  req.set_hot_only(hot_only);
  req.set_allow_direct(impl_->options.direct_streams);
  std::optional<v1::DirectStreamPlan> plan;
  absl::StatusOr<StreamStats> relayed = impl_->ReadChunks(
      "StreamCache", &ctx, id, *layout,
      [&](grpc::ClientContext* c) {
        return OpenByteStream(impl_->channel.get(), "/sparsefill.v1.Coordinator/StreamCache", c,
                              req);
      },
      on_chunk, &plan);
  if (!relayed.ok() || !plan.has_value()) return relayed;
  return impl_->StreamDirect(id, *layout, *plan, hot_only, deadline, on_chunk);
}

absl::StatusOr<StreamStats> CoordinatorClient::FetchBlocks(const kvstore::CacheId& id,
                                                           const std::vector<BlockRange>& ranges,
                                                           const ChunkCallback& on_chunk,
                                                           const CallOptions& call) {
  if (ranges.empty()) return absl::InvalidArgumentError("ranges: empty");
  const rpc::Deadline deadline = rpc::Now() + impl_->Timeout(call);
  grpc::ClientContext info_ctx;
  info_ctx.set_deadline(deadline);
  v1::GetCacheRequest info_req;
  info_req.set_cache_id(rpc::CacheIdToBytes(id));
  v1::CacheInfo info;
  SF_RETURN_IF_ERROR(rpc::FromGrpcStatus(impl_->stub->GetCache(&info_ctx, info_req, &info)));
  absl::StatusOr<kvstore::CacheLayout> layout = rpc::CacheLayoutFromProto(info.layout());
  if (!layout.ok()) return BadReply("FetchBlocks", layout.status());

  v1::FetchBlocksRequest req;
  req.set_cache_id(rpc::CacheIdToBytes(id));
  for (const BlockRange& r : ranges) {
    v1::BlockRange* p = req.add_ranges();
    p->set_layer(r.layer);
    p->set_kv_head(r.kv_head);
    p->set_first_block(r.first_block);
    p->set_num_blocks(r.num_blocks);
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  return impl_->ReadChunks(
      "FetchBlocks", &ctx, id, *layout,
      [&](grpc::ClientContext* c) { return impl_->OpenFetchBlocks(c, req); }, on_chunk);
}

absl::Status CoordinatorClient::DeleteCache(const kvstore::CacheId& id, const CallOptions& call) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(nullptr, &owned, impl_->Timeout(call));
  v1::DeleteCacheRequest req;
  req.set_cache_id(rpc::CacheIdToBytes(id));
  v1::DeleteCacheResponse reply;
  return rpc::FromGrpcStatus(impl_->stub->DeleteCache(ctx, req, &reply));
}

absl::StatusOr<std::vector<ModelInfo>> CoordinatorClient::ListModels(const CallOptions& call) {
  std::unique_ptr<grpc::ClientContext> owned;
  grpc::ClientContext* ctx = PrepareContext(nullptr, &owned, impl_->Timeout(call));
  v1::ListModelsResponse reply;
  SF_RETURN_IF_ERROR(
      rpc::FromGrpcStatus(impl_->stub->ListModels(ctx, v1::ListModelsRequest(), &reply)));
  std::vector<ModelInfo> models;
  for (const v1::ModelInfo& p : reply.models()) {
    ModelInfo m;
    m.name = p.name();
    m.architecture = p.architecture();
    m.num_layers = p.num_layers();
    m.q_heads = p.q_heads();
    m.kv_heads = p.kv_heads();
    m.head_dim = p.head_dim();
    m.vocab_size = p.vocab_size();
    m.max_tokens = p.max_tokens();
    m.has_tokenizer = p.has_tokenizer();
    absl::StatusOr<std::optional<engine::Policy>> policy =
        rpc::PolicyFromProto(p.default_policy(), "models.default_policy");
    if (!policy.ok()) return BadReply("ListModels", policy.status());
    m.default_policy = *policy;
    models.push_back(std::move(m));
  }
  return models;
}

}  // namespace sparsefill::client
