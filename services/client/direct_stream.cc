#include "services/client/direct_stream.h"

#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/str_cat.h"
#include "services/client/client_call.h"
#include "services/common/auth_channel.h"
#include "services/rpc/convert.h"
#include "services/rpc/kv_chunk.h"
#include "services/rpc/kv_chunk_frame.h"
#include "sparsefill/common/status.h"
#include "sparsefill/v1/worker.pb.h"

namespace sparsefill::client_internal {
namespace {

// Which blocks of one shard arrived: [layer][head][block - first].
class Received {
 public:
  Received(const kvstore::CacheLayout& l, int64_t first, int64_t end)
      : layers_(l.num_layers), heads_(l.kv_heads), first_(first), width_(end - first) {
    got_.assign(static_cast<size_t>(layers_) * heads_ * static_cast<size_t>(width_), 0);
  }
  // DATA_LOSS for blocks outside the shard or delivered twice.
  absl::Status Mark(const v1::KvChunk& c, const std::string& address) {
    if (c.first_block() < first_ || c.first_block() - first_ > width_ - c.num_blocks()) {
      return absl::DataLossError(absl::StrCat("worker ", address, " sent blocks [", c.first_block(),
                                              ", +", c.num_blocks(), ") outside its shard [",
                                              first_, ", ", first_ + width_, ")"));
    }
    const size_t base = Index(c.layer(), c.kv_head(), c.first_block() - first_);
    for (int32_t i = 0; i < c.num_blocks(); ++i) {
      if (got_[base + static_cast<size_t>(i)] != 0) {
        return absl::DataLossError(absl::StrCat("worker ", address, " sent layer ", c.layer(),
                                                " head ", c.kv_head(), " block ",
                                                c.first_block() + i, " twice"));
      }
      got_[base + static_cast<size_t>(i)] = 1;
    }
    return absl::OkStatus();
  }
  void AppendMissing(std::vector<v1::BlockRange>* out) const {
    for (int32_t l = 0; l < layers_; ++l) {
      for (int32_t h = 0; h < heads_; ++h) {
        const size_t base = Index(l, h, 0);
        int64_t b = 0;
        while (b < width_) {
          if (got_[base + static_cast<size_t>(b)] != 0) {
            ++b;
            continue;
          }
          int64_t e = b;
          while (e < width_ && got_[base + static_cast<size_t>(e)] == 0 && e - b < (1 << 30)) ++e;
          v1::BlockRange r;
          r.set_layer(l);
          r.set_kv_head(h);
          r.set_first_block(first_ + b);
          r.set_num_blocks(static_cast<int32_t>(e - b));
          out->push_back(r);
          b = e;
        }
      }
    }
  }

 private:
  size_t Index(int32_t layer, int32_t head, int64_t offset) const {
    return (static_cast<size_t>(layer) * heads_ + static_cast<size_t>(head)) *
               static_cast<size_t>(width_) +
           static_cast<size_t>(offset);
  }
  int32_t layers_;
  int32_t heads_;
  int64_t first_;
  int64_t width_;
  std::vector<uint8_t> got_;
};

// Failures the relay may get around: the worker not reachable or gone, the ticket refused (it
// expired before the worker was reached, say), a worker without StreamShard.
bool RelayCanHelp(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::Status CheckDirectPlan(const v1::DirectStreamPlan& plan, const kvstore::CacheLayout& layout) {
  if (plan.shards().empty()) {
    return absl::DataLossError("StreamCache: malformed reply: a direct plan without shards");
  }
  int64_t next = 0;
  for (int i = 0; i < plan.shards_size(); ++i) {
    const v1::DirectShard& s = plan.shards(i);
    if (s.address().empty() || s.ticket().empty() || s.first_block() != next ||
        s.end_block() <= s.first_block() || s.end_block() > layout.num_blocks()) {
      return absl::DataLossError(absl::StrCat(
          "StreamCache: malformed reply: direct plan shard ", i, " (address \"", s.address(),
          "\", blocks [", s.first_block(), ", ", s.end_block(), ")) does not continue at block ",
          next, " of ", layout.num_blocks(), " or has no ticket"));
    }
    next = s.end_block();
  }
  if (next != layout.num_blocks()) {
    return absl::DataLossError(absl::StrCat("StreamCache: malformed reply: the direct plan covers ",
                                            next, " of ", layout.num_blocks(), " blocks"));
  }
  return absl::OkStatus();
}

absl::Status StreamDirect(const v1::DirectStreamPlan& plan, const DirectStreamOptions& options,
                          const kvstore::CacheId& id, const kvstore::CacheLayout& layout,
                          bool hot_only, rpc::Deadline deadline,
                          const std::function<absl::Status(rpc::KvChunkFrame&)>& deliver,
                          DirectStreamOutcome* out) {
  SF_RETURN_IF_ERROR(CheckDirectPlan(plan, layout));
  const size_t n = static_cast<size_t>(plan.shards_size());
  struct Shard {
    std::unique_ptr<grpc::ClientContext> ctx = std::make_unique<grpc::ClientContext>();
    std::unique_ptr<Received> received;
    absl::Status status;
    bool fatal = false;  // the callback's error, a bad chunk: ends everything
  };
  std::vector<Shard> shards(n);
  std::mutex mu;  // deliver, `out`'s counters, and cancelling the others
  bool stopped = false;
  auto stop_all = [&] {
    // Called with `mu` held.
    stopped = true;
    for (Shard& s : shards) s.ctx->TryCancel();
  };
  for (size_t i = 0; i < n; ++i) {
    const v1::DirectShard& d = plan.shards(static_cast<int>(i));
    shards[i].ctx->set_deadline(deadline);
    shards[i].received = std::make_unique<Received>(layout, d.first_block(), d.end_block());
  }
  const std::string id_bytes = rpc::CacheIdToBytes(id);
  auto run = [&](size_t i) {
    Shard& shard = shards[i];
    const v1::DirectShard& d = plan.shards(static_cast<int>(i));
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(options.max_message_bytes);
    args.SetMaxSendMessageSize(options.max_message_bytes);
    // A connection of its own per stream, like the coordinator client's.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    // Bulk bytes one way: the worker may send HTTP/2 frames as large as a chunk, and the socket
    // is read in large pieces (fewer frames, slices and read() calls per MiB).
    args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 16777215);
    args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
    args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
    args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        auth::CreateChannel(d.address(), options.security, /*bearer_token=*/"", std::move(args));
    if (!channel.ok()) {
      shard.status = channel.status();
      return;
    }
    v1::StreamShardRequest req;
    req.set_ticket(d.ticket());
    req.set_cache_id(id_bytes);
    req.set_hot_only(hot_only);
    // Replies read as received: the chunk's data is checked and handed on from gRPC's slices.
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader =
        OpenByteStream(channel->get(), "/sparsefill.v1.Worker/StreamShard", shard.ctx.get(), req);
    rpc::KvChunkFrame frame;
    shard.status =
        ReadStream(shard.ctx.get(), reader.get(), [&](grpc::ByteBuffer& m) -> absl::Status {
          absl::Status s = frame.Parse(&m);
          if (s.ok()) s = rpc::VerifyKvChunkFrame(frame, id, layout);
          std::lock_guard<std::mutex> lock(mu);
          if (stopped) return absl::CancelledError("another shard's stream failed");
          if (s.ok()) s = shard.received->Mark(frame.header(), d.address());
          if (s.ok()) s = deliver(frame);
          if (!s.ok()) {
            shard.fatal = true;
            stop_all();
            return s;
          }
          ++out->chunks;
          out->blocks += frame.header().num_blocks();
          out->bytes += frame.data_size();
          return absl::OkStatus();
        });
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < n; ++i) threads.emplace_back(run, i);
  run(0);
  for (std::thread& t : threads) t.join();

  for (size_t i = 0; i < n; ++i) {
    if (shards[i].fatal) return shards[i].status;
  }
  for (size_t i = 0; i < n; ++i) {
    const Shard& s = shards[i];
    if (s.status.ok()) continue;
    const std::string& address = plan.shards(static_cast<int>(i)).address();
    if (s.status.code() == absl::StatusCode::kDeadlineExceeded || rpc::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("direct stream from worker ", address,
                                                      " did not finish before the "
                                                      "deadline: ",
                                                      s.status.message()));
    }
    if (!RelayCanHelp(s.status.code())) {
      return absl::Status(s.status.code(), absl::StrCat("direct stream from worker ", address, ": ",
                                                        s.status.message()));
    }
    ++out->failed_shards;
    absl::StrAppend(&out->failures, out->failures.empty() ? "" : "; ", "worker ", address, ": ",
                    absl::StatusCodeToString(s.status.code()), ": ", s.status.message());
    s.received->AppendMissing(&out->missing);
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::client_internal
