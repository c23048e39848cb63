#include "services/worker/job_mailbox.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sparsefill/common/status.h"

namespace sparsefill::worker {
namespace {

// Ranks beyond this are malformed posts, not a big job (they would index per-rank tables).
constexpr int32_t kMaxRanks = 4096;

std::string RankList(std::span<const int32_t> ranks) { return absl::StrJoin(ranks, ", "); }

}  // namespace

std::string EncodeAbort(const absl::Status& why) {
  const absl::StatusCode code = why.ok() ? absl::StatusCode::kAborted : why.code();
  return absl::StrCat(static_cast<int>(code), " ", why.message());
}

absl::Status DecodeAbort(std::string_view data, int32_t from_rank) {
  const size_t space = data.find(' ');
  int code = static_cast<int>(absl::StatusCode::kAborted);
  std::string_view message = data;
  if (space != std::string_view::npos && absl::SimpleAtoi(AsAbsl(data.substr(0, space)), &code) &&
      code > 0 && code <= 16) {
    message = data.substr(space + 1);
  } else {
    code = static_cast<int>(absl::StatusCode::kAborted);
  }
  return absl::Status(static_cast<absl::StatusCode>(code),
                      absl::StrCat("rank ", from_rank, " aborted: ", AsAbsl(message)));
}

template <typename Ready, typename Missing>
absl::Status JobMailbox::WaitLocked(std::unique_lock<std::mutex>& lock, Ready ready,
                                    Missing missing, const WaitOptions& wait,
                                    const std::string& what) {
  while (true) {
    if (!failure_.ok()) {
      return absl::Status(failure_.code(), absl::StrCat(what, ": ", failure_.message()));
    }
    if (ready()) return absl::OkStatus();
    const SteadyTime now = std::chrono::steady_clock::now();
    if (now >= wait.deadline) {
      const std::vector<int32_t> m = missing();
      return absl::DeadlineExceededError(absl::StrCat(
          what, ": no answer before the deadline",
          m.empty() ? std::string() : absl::StrCat(" (waiting for rank ", RankList(m), ")")));
    }
    if (wait.check) {
      const std::vector<int32_t> m = missing();
      lock.unlock();
      absl::Status checked = wait.check(m);
      lock.lock();
      if (!checked.ok()) {
        return absl::Status(checked.code(), absl::StrCat(what, ": ", checked.message()));
      }
      if (!failure_.ok() || ready()) continue;
    }
    const SteadyTime until = wait.deadline - now > wait.poll ? now + wait.poll : wait.deadline;
    cv_.wait_until(lock, until);
  }
}

absl::Status JobMailbox::Deliver(int32_t layer, std::string_view tag, int32_t from_rank,
                                 std::string data) {
  if (from_rank < 0 || from_rank >= kMaxRanks) {
    return absl::InvalidArgumentError(
        absl::StrCat("job ", job_, ": from_rank ", from_rank, " is outside [0, ", kMaxRanks, ")"));
  }
  if (tag == kAbortTag) {
    Abort(DecodeAbort(data, from_rank));
    return absl::OkStatus();
  }
  if (tag.empty()) return absl::InvalidArgumentError(absl::StrCat("job ", job_, ": empty tag"));
  std::lock_guard<std::mutex> lock(mu_);
  if (!failure_.ok()) return failure_;
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_, " already finished on this worker; rank ", from_rank,
                     " posted \"", AsAbsl(tag), "\" of layer ", layer, " too late"));
  }
  auto& slot = payloads_[{layer, std::string(tag)}];
  if (!slot.emplace(from_rank, std::move(data)).second) {
    return absl::FailedPreconditionError(absl::StrCat("job ", job_, ": rank ", from_rank,
                                                      " posted \"", AsAbsl(tag), "\" of layer ",
                                                      layer, " twice"));
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> JobMailbox::Collect(int32_t layer, std::string_view tag,
                                                             int32_t self_rank, int32_t world,
                                                             std::string self_data,
                                                             const WaitOptions& wait) {
  const auto key = std::make_pair(layer, std::string(tag));
  std::unique_lock<std::mutex> lock(mu_);
  auto missing = [&] {
    std::vector<int32_t> m;
    auto it = payloads_.find(key);
    for (int32_t r = 0; r < world; ++r) {
      if (r == self_rank) continue;
      if (it == payloads_.end() || it->second.count(r) == 0) m.push_back(r);
    }
    return m;
  };
  const std::string what = absl::StrCat("job ", job_, " rank ", self_rank, " all-gather \"",
                                        AsAbsl(tag), "\" of layer ", layer);
  SF_RETURN_IF_ERROR(WaitLocked(
      lock, [&] { return missing().empty(); }, missing, wait, what));
  std::vector<std::string> out(static_cast<size_t>(world));
  auto it = payloads_.find(key);
  for (int32_t r = 0; r < world; ++r) {
    out[static_cast<size_t>(r)] = r == self_rank ? std::move(self_data) : std::move(it->second[r]);
  }
  if (it != payloads_.end()) payloads_.erase(it);
  return out;
}

absl::Status JobMailbox::Publish(int32_t layer, int64_t row_floats, std::span<const float> k,
                                 std::span<const float> v) {
  if (row_floats <= 0 || k.size() != v.size() || k.size() % static_cast<size_t>(row_floats) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("job ", job_, ": layer ", layer, " with ",
                                                   k.size(), "/", v.size(),
                                                   " floats is not whole rows of ", row_floats));
  }
  auto l = std::make_shared<Layer>();
  l->row_floats = row_floats;
  l->k.assign(k.begin(), k.end());
  l->v.assign(v.begin(), v.end());
  std::lock_guard<std::mutex> lock(mu_);
  if (!layers_.emplace(layer, std::move(l)).second) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_, ": layer ", layer, " published twice"));
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status JobMailbox::Release(int32_t layer) {
  std::lock_guard<std::mutex> lock(mu_);
  if (layers_.erase(layer) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_, ": layer ", layer, " released but not published"));
  }
  return absl::OkStatus();
}

void JobMailbox::SetShard(engine::TokenRange shard) {
  std::lock_guard<std::mutex> lock(mu_);
  shard_ = shard;
}

absl::StatusOr<std::string> JobMailbox::ReadRows(int32_t layer,
                                                 std::span<const engine::TokenRange> ranges,
                                                 const WaitOptions& wait) {
  std::shared_ptr<const Layer> l;
  engine::TokenRange shard;
  {
    std::unique_lock<std::mutex> lock(mu_);
    SF_RETURN_IF_ERROR(WaitLocked(
        lock, [&] { return layers_.count(layer) > 0; }, [] { return std::vector<int32_t>(); }, wait,
        absl::StrCat("job ", job_, ": waiting for the local layer ", layer)));
    l = layers_.at(layer);
    shard = shard_;
  }
  // Ascending and disjoint (what GatherKvRows asks), so a reply never exceeds the shard.
  int64_t rows = 0, prev_end = shard.begin;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const engine::TokenRange& r = ranges[i];
    if (r.begin < prev_end || r.end > shard.end || r.end <= r.begin) {
      return absl::InvalidArgumentError(
          absl::StrCat("job ", job_, ": range ", i, " [", r.begin, ", ", r.end, ") of layer ",
                       layer, " is empty, out of order or outside this worker's shard [",
                       shard.begin, ", ", shard.end, ")"));
    }
    prev_end = r.end;
    rows += r.size();
  }
  if (static_cast<int64_t>(l->k.size()) != shard.size() * l->row_floats) {
    return absl::InternalError(absl::StrCat("job ", job_, ": layer ", layer, " holds ", l->k.size(),
                                            " floats, not shard tokens ", shard.size(), " x ",
                                            l->row_floats));
  }
  const size_t row_bytes = static_cast<size_t>(l->row_floats) * sizeof(float);
  std::string out(static_cast<size_t>(rows) * row_bytes * 2, '\0');
  char* dst = out.data();
  for (const std::vector<float>* src : {&l->k, &l->v}) {
    for (const engine::TokenRange& r : ranges) {
      const size_t n = static_cast<size_t>(r.size()) * row_bytes;
      std::memcpy(dst, src->data() + (r.begin - shard.begin) * l->row_floats, n);
      dst += n;
    }
  }
  return out;
}

void JobMailbox::Abort(const absl::Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failure_.ok() && !finished_) {
    failure_ = why.ok() ? absl::AbortedError(absl::StrCat("job ", job_, " aborted")) : why;
  }
  cv_.notify_all();
}

absl::Status JobMailbox::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

void JobMailbox::Finish(const absl::Status& how) {
  std::lock_guard<std::mutex> lock(mu_);
  finished_ = true;
  if (failure_.ok() && !how.ok()) failure_ = how;
  payloads_.clear();
  layers_.clear();
  cv_.notify_all();
}

bool JobMailbox::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

absl::Status PeerMailbox::Options::Validate() const {
  if (linger.count() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("linger: must be positive, got ", linger.count(), " ms"));
  }
  if (max_jobs == 0) return absl::InvalidArgumentError("max_jobs: must be positive");
  return absl::OkStatus();
}

PeerMailbox::PeerMailbox() : PeerMailbox(Options{}) {}

size_t PeerMailbox::CollectGarbage() {
  std::lock_guard<std::mutex> lock(mu_);
  return CollectGarbageLocked(std::chrono::steady_clock::now());
}

size_t PeerMailbox::CollectGarbageLocked(SteadyTime now) {
  size_t dropped = 0;
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    const bool idle = !it->second.attached || it->second.box->finished();
    if (idle && now - it->second.touched > options_.linger) {
      // A mailbox nobody attached to: its posters wait for a rank that never came.
      if (!it->second.attached) {
        it->second.box->Abort(absl::DeadlineExceededError(
            absl::StrCat("job ", it->first, " was never started on this worker")));
      }
      it = jobs_.erase(it);
      ++dropped;
    } else {
      ++it;
    }
  }
  return dropped;
}

absl::StatusOr<std::shared_ptr<JobMailbox>> PeerMailbox::Open(const std::string& job) {
  std::lock_guard<std::mutex> lock(mu_);
  const SteadyTime now = std::chrono::steady_clock::now();
  auto it = jobs_.find(job);
  if (it != jobs_.end()) return it->second.box;
  CollectGarbageLocked(now);
  if (jobs_.size() >= options_.max_jobs) {
    return absl::ResourceExhaustedError(
        absl::StrCat("job ", job, ": this worker already holds ", jobs_.size(), " job mailboxes"));
  }
  Entry e;
  e.box = std::make_shared<JobMailbox>(job);
  e.touched = now;
  return jobs_.emplace(job, std::move(e)).first->second.box;
}

absl::StatusOr<std::shared_ptr<JobMailbox>> PeerMailbox::Attach(const std::string& job) {
  SF_ASSIGN_OR_RETURN(std::shared_ptr<JobMailbox> box, Open(job));
  std::lock_guard<std::mutex> lock(mu_);
  Entry& e = jobs_.at(job);
  if (e.attached) {
    return absl::AlreadyExistsError(
        absl::StrCat("job ", job, " already ran or runs on this worker"));
  }
  e.attached = true;
  return box;
}

void PeerMailbox::Detach(const std::string& job, const absl::Status& how) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job);
  if (it == jobs_.end()) return;
  it->second.box->Finish(how);
  it->second.touched = std::chrono::steady_clock::now();
}

size_t PeerMailbox::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

}  // namespace sparsefill::worker
