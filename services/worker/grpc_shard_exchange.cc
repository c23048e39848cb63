#include "services/worker/grpc_shard_exchange.h"

#include <condition_variable>
#include <cstring>
#include <span>
#include <utility>

#include <grpcpp/client_context.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/str_cat.h"
#include "services/common/auth_channel.h"
#include "services/rpc/convert.h"
#include "services/rpc/status.h"
#include "sparsefill/common/status.h"

namespace sparsefill::worker {
namespace {

using SystemTime = std::chrono::system_clock::time_point;

SteadyTime ToSteady(SystemTime t) {
  if (t == SystemTime::max()) return SteadyTime::max();
  const auto left = t - std::chrono::system_clock::now();
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
}

// How long an abort notice may take: peers that do not answer quickly are dead or will learn
// from their own deadlines.
constexpr std::chrono::milliseconds kAbortTimeout{2000};

}  // namespace

absl::Status PeerChannels::Options::Validate() const {
  if (max_message_bytes < (4 << 20) + 1024) {
    return absl::InvalidArgumentError(absl::StrCat("max_message_bytes: ", max_message_bytes,
                                                   " cannot carry a 4 MiB KvRows message"));
  }
  return security.Validate();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> PeerChannels::Get(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = channels_.find(address);
  if (it != channels_.end()) return it->second;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  // Reconnect quickly after a peer restarts; dead peers are found by the waits' checks.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  SF_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      auth::CreateChannel(address, options_.security, options_.token, args));
  channels_.emplace(address, channel);
  return channel;
}

absl::Status GrpcExchangeOptions::Validate() const {
  if (peer_timeout.count() <= 0 || unreachable_after.count() <= 0 || poll.count() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "peer exchange: peer_timeout (", peer_timeout.count(), " ms), unreachable_after (",
        unreachable_after.count(), " ms) and poll (", poll.count(), " ms) must be positive"));
  }
  if (max_rows_bytes < 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("peer exchange: max_rows_bytes ", max_rows_bytes, " is below 4096"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GrpcShardExchange>> GrpcShardExchange::Create(
    const ShardJob& job, engine::ShardLayout layout, std::shared_ptr<JobMailbox> mailbox,
    PeerChannels* channels, const GrpcExchangeOptions& options) {
  SF_RETURN_IF_ERROR(options.Validate());
  const int32_t world = layout.world_size();
  if (static_cast<int32_t>(job.peer_addresses.size()) != world || job.rank < 0 ||
      job.rank >= world || mailbox == nullptr || channels == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("peer exchange: ", job.peer_addresses.size(),
                                                   " addresses and rank ", job.rank,
                                                   " do not fit a layout of ", world, " ranks"));
  }
  std::unique_ptr<GrpcShardExchange> x(new GrpcShardExchange());
  x->job_bytes_ = rpc::CacheIdToBytes(job.id);
  x->rank_ = job.rank;
  x->layout_ = std::move(layout);
  x->addresses_ = job.peer_addresses;
  x->mailbox_ = std::move(mailbox);
  x->options_ = options;
  x->job_deadline_ = job.deadline;
  x->cancelled_ = job.cancelled;
  x->channels_.resize(static_cast<size_t>(world));
  x->stubs_.resize(static_cast<size_t>(world));
  x->failing_since_.assign(static_cast<size_t>(world), SteadyTime::max());
  for (int32_t r = 0; r < world; ++r) {
    if (r == job.rank) continue;
    if (job.peer_addresses[static_cast<size_t>(r)].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("peers[", r, "].address: empty"));
    }
    auto ch = channels->Get(job.peer_addresses[static_cast<size_t>(r)]);
    if (!ch.ok()) {
      return absl::Status(ch.status().code(),
                          absl::StrCat("peers[", r, "].address: ", ch.status().message()));
    }
    x->channels_[static_cast<size_t>(r)] = *ch;
    x->stubs_[static_cast<size_t>(r)] = v1::Worker::NewStub(*ch);
  }
  x->mailbox_->SetShard(x->layout_.range(job.rank));
  return x;
}

GrpcShardExchange::~GrpcShardExchange() = default;

std::string GrpcShardExchange::Peer(int32_t rank) const {
  return absl::StrCat("rank ", rank, " (", addresses_[static_cast<size_t>(rank)], ")");
}

SystemTime GrpcShardExchange::CallDeadline() const {
  const SystemTime t = std::chrono::system_clock::now() + options_.peer_timeout;
  return std::min(t, job_deadline_);
}

WaitOptions GrpcShardExchange::Wait() const {
  WaitOptions w;
  w.deadline = ToSteady(CallDeadline());
  w.poll = options_.poll;
  w.check = [this](std::span<const int32_t> missing) {
    return const_cast<GrpcShardExchange*>(this)->Check(missing);
  };
  return w;
}

absl::Status GrpcShardExchange::Check(std::span<const int32_t> missing) {
  if (cancelled_ && cancelled_()) {
    return absl::CancelledError("the ExecuteShard call was cancelled by its caller");
  }
  const SteadyTime now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  for (int32_t r : missing) {
    const auto& ch = channels_[static_cast<size_t>(r)];
    if (ch == nullptr) continue;
    const grpc_connectivity_state s = ch->GetState(/*try_to_connect=*/true);
    SteadyTime& since = failing_since_[static_cast<size_t>(r)];
    if (s == GRPC_CHANNEL_READY) {
      since = SteadyTime::max();
    } else if (s == GRPC_CHANNEL_TRANSIENT_FAILURE || s == GRPC_CHANNEL_SHUTDOWN) {
      // CONNECTING between failed attempts keeps the clock running: only READY resets it.
      if (since == SteadyTime::max()) since = now;
    }
    if (since != SteadyTime::max() && now - since >= options_.unreachable_after) {
      return absl::UnavailableError(absl::StrCat(
          Peer(r), " is unreachable: its connection has failed for ",
          std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count(), " ms"));
    }
  }
  return absl::OkStatus();
}

namespace {

// PutPayload of `payload` to every stub at once (null stubs are skipped). Returns each call's
// status, [stubs.size()]. `stop`, polled every `poll`, cancels the calls still in flight and
// ends the wait early (its status is returned for those calls), so a cancelled job does not sit
// out a peer's full deadline.
std::vector<grpc::Status> PostAll(std::span<v1::Worker::Stub* const> stubs,
                                  const v1::PeerPayload& payload, SystemTime deadline,
                                  const std::function<absl::Status()>& stop,
                                  std::chrono::milliseconds poll) {
  struct Call {
    grpc::ClientContext ctx;
    v1::PeerAck ack;
    grpc::Status status;
    bool done = false;
  };
  std::vector<std::unique_ptr<Call>> calls(stubs.size());
  std::mutex mu;
  std::condition_variable cv;
  int pending = 0;
  for (size_t r = 0; r < stubs.size(); ++r) {
    if (stubs[r] == nullptr) continue;
    auto& c = calls[r];
    c = std::make_unique<Call>();
    c->ctx.set_deadline(deadline);
    ++pending;
    Call* call = c.get();
    stubs[r]->async()->PutPayload(&call->ctx, &payload, &call->ack, [&, call](grpc::Status s) {
      std::lock_guard<std::mutex> lock(mu);
      call->status = std::move(s);
      call->done = true;
      if (--pending == 0) cv.notify_all();
    });
  }
  absl::Status stopped;
  {
    std::unique_lock<std::mutex> lock(mu);
    while (pending > 0) {
      if (cv.wait_for(lock, poll, [&] { return pending == 0; })) break;
      if (!stop) continue;
      lock.unlock();
      stopped = stop();
      lock.lock();
      if (stopped.ok()) continue;
      for (auto& c : calls) {
        if (c != nullptr && !c->done) c->ctx.TryCancel();
      }
      // Every callback runs once, cancelled or not; the calls must outlive them.
      cv.wait(lock, [&] { return pending == 0; });
    }
  }
  std::vector<grpc::Status> out(stubs.size());
  for (size_t r = 0; r < stubs.size(); ++r) {
    if (calls[r] == nullptr) continue;
    out[r] = calls[r]->status;
    if (!stopped.ok() && !out[r].ok()) out[r] = rpc::ToGrpcStatus(stopped);
  }
  return out;
}

}  // namespace

absl::Status GrpcShardExchange::PostToPeers(int32_t layer, std::string_view tag,
                                            std::string_view data, SystemTime deadline) {
  v1::PeerPayload payload;
  payload.set_job_id(job_bytes_);
  payload.set_layer(layer);
  payload.set_tag(std::string(tag));
  payload.set_from_rank(rank_);
  payload.set_data(std::string(data));
  std::vector<v1::Worker::Stub*> stubs;
  for (const auto& s : stubs_) stubs.push_back(s.get());
  // An abort notice goes out whatever happened; any other post ends with the job (cancelled by
  // its caller, or aborted by a peer meanwhile).
  std::function<absl::Status()> stop;
  if (tag != kAbortTag) {
    stop = [this]() -> absl::Status {
      if (cancelled_ && cancelled_()) {
        return absl::CancelledError("the ExecuteShard call was cancelled by its caller");
      }
      return mailbox_->failure();
    };
  }
  const std::vector<grpc::Status> statuses = PostAll(stubs, payload, deadline, stop, options_.poll);
  for (int32_t r = 0; r < static_cast<int32_t>(statuses.size()); ++r) {
    const grpc::Status& s = statuses[static_cast<size_t>(r)];
    if (!s.ok()) {
      const absl::Status a = rpc::FromGrpcStatus(s);
      return absl::Status(
          a.code(), absl::StrCat("job ", mailbox_->job_name(), ": posting \"", AsAbsl(tag),
                                 "\" of layer ", layer, " to ", Peer(r), " failed: ", a.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> GrpcShardExchange::AllGather(int32_t layer,
                                                                      std::string_view tag,
                                                                      std::string_view data) {
  if (tag.empty() || tag == kAbortTag) {
    return absl::InvalidArgumentError(
        absl::StrCat("all-gather tag \"", AsAbsl(tag), "\" is empty or reserved"));
  }
  if (layout_.world_size() == 1) return std::vector<std::string>{std::string(data)};
  SF_RETURN_IF_ERROR(mailbox_->failure());
  SF_RETURN_IF_ERROR(PostToPeers(layer, tag, data, CallDeadline()));
  return mailbox_->Collect(layer, tag, rank_, layout_.world_size(), std::string(data), Wait());
}

absl::Status GrpcShardExchange::PublishLayer(int32_t layer, int64_t row_floats,
                                             std::span<const float> k, std::span<const float> v) {
  const engine::TokenRange mine = shard();
  if (row_floats <= 0 || static_cast<int64_t>(k.size()) != mine.size() * row_floats ||
      v.size() != k.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank_, " publishes layer ", layer, " with ", k.size(), "/", v.size(),
                     " floats, expected shard tokens ", mine.size(), " x row ", row_floats));
  }
  row_floats_ = row_floats;
  return mailbox_->Publish(layer, row_floats, k, v);
}

absl::Status GrpcShardExchange::ReleaseLayer(int32_t layer) { return mailbox_->Release(layer); }

absl::StatusOr<engine::KvRows> GrpcShardExchange::FetchKv(
    int32_t layer, int32_t owner, std::span<const engine::TokenRange> ranges) {
  const int32_t world = layout_.world_size();
  if (owner < 0 || owner >= world) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, " fetches layer ", layer,
                                                   " from rank ", owner, " of ", world));
  }
  const engine::TokenRange theirs = layout_.range(owner);
  int64_t rows = 0;
  for (const engine::TokenRange& r : ranges) {
    if (r.begin < theirs.begin || r.end > theirs.end || r.end <= r.begin) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rank ", rank_, " fetches tokens [", r.begin, ", ", r.end, ") of layer ", layer,
          " from rank ", owner, ", whose shard is [", theirs.begin, ", ", theirs.end, ")"));
    }
    rows += r.size();
  }
  std::string bytes;
  if (owner == rank_) {
    SF_ASSIGN_OR_RETURN(bytes, mailbox_->ReadRows(layer, ranges, Wait()));
  } else {
    SF_RETURN_IF_ERROR(mailbox_->failure());
    v1::FetchKvRequest req;
    req.set_job_id(job_bytes_);
    req.set_layer(layer);
    for (const engine::TokenRange& r : ranges) {
      req.add_begins(r.begin);
      req.add_ends(r.end);
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(CallDeadline());
    auto reader = stubs_[static_cast<size_t>(owner)]->FetchKv(&ctx, req);
    v1::KvRows msg;
    while (reader->Read(&msg)) bytes += msg.data();
    const grpc::Status s = reader->Finish();
    if (!s.ok()) {
      const absl::Status a = rpc::FromGrpcStatus(s);
      return absl::Status(a.code(), absl::StrCat("job ", mailbox_->job_name(), ": fetching ", rows,
                                                 " rows of layer ", layer, " from ", Peer(owner),
                                                 " failed: ", a.message()));
    }
  }
  const uint64_t per_row = 2 * sizeof(float) * static_cast<uint64_t>(rows);
  const int64_t row_floats = row_floats_ > 0 ? row_floats_
                                             : (per_row > 0 && bytes.size() % per_row == 0
                                                    ? static_cast<int64_t>(bytes.size() / per_row)
                                                    : -1);
  if (row_floats <= 0 || bytes.size() != per_row * static_cast<uint64_t>(row_floats)) {
    return absl::DataLossError(absl::StrCat("job ", mailbox_->job_name(), ": ", Peer(owner),
                                            " sent ", bytes.size(), " bytes for ", rows,
                                            " rows of layer ", layer));
  }
  engine::KvRows out;
  out.tokens = rows;
  const size_t n = static_cast<size_t>(rows * row_floats);
  out.k.resize(n);
  out.v.resize(n);
  std::memcpy(out.k.data(), bytes.data(), n * sizeof(float));
  std::memcpy(out.v.data(), bytes.data() + n * sizeof(float), n * sizeof(float));
  return out;
}

void GrpcShardExchange::Abort(const absl::Status& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return;
    aborted_ = true;
  }
  // Peers that post to or fetch from this rank from now on learn the same as the notice says.
  mailbox_->Abort(DecodeAbort(EncodeAbort(why), rank_));
  if (layout_.world_size() == 1) return;
  // Not capped by the job's deadline: a job that timed out must still tell its peers.
  const SystemTime deadline = std::chrono::system_clock::now() + kAbortTimeout;
  IgnoreError(PostToPeers(-1, kAbortTag, EncodeAbort(why), deadline),
              "an abort notice is best effort: a peer that misses it fails at its own deadline "
              "or when it cannot reach this rank");
}

void GrpcExchangeFactory::AbortPeers(const ShardJob& job, const absl::Status& why) {
  std::vector<std::unique_ptr<v1::Worker::Stub>> owned;
  std::vector<v1::Worker::Stub*> stubs;
  for (size_t r = 0; r < job.peer_addresses.size(); ++r) {
    const std::string& address = job.peer_addresses[r];
    if (static_cast<int32_t>(r) == job.rank || address.empty()) continue;
    auto ch = channels_->Get(address);
    if (!ch.ok()) continue;  // a peer we cannot dial learns at its own deadline
    owned.push_back(v1::Worker::NewStub(*ch));
    stubs.push_back(owned.back().get());
  }
  if (stubs.empty()) return;
  v1::PeerPayload payload;
  payload.set_job_id(rpc::CacheIdToBytes(job.id));
  payload.set_layer(-1);
  payload.set_tag(std::string(kAbortTag));
  payload.set_from_rank(job.rank);
  payload.set_data(EncodeAbort(why));
  // Best effort: a peer that misses the notice fails at its own deadline; the answers are moot.
  PostAll(stubs, payload, std::chrono::system_clock::now() + kAbortTimeout, nullptr, options_.poll);
}

absl::StatusOr<std::unique_ptr<engine::ShardExchange>> GrpcExchangeFactory::Create(
    const ShardJob& job, const engine::ShardLayout& layout, std::shared_ptr<JobMailbox> mailbox) {
  SF_ASSIGN_OR_RETURN(
      std::unique_ptr<GrpcShardExchange> x,
      GrpcShardExchange::Create(job, layout, std::move(mailbox), channels_, options_));
  return std::unique_ptr<engine::ShardExchange>(std::move(x));
}

}  // namespace sparsefill::worker
