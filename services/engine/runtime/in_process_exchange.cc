// InProcessExchange: the ShardExchange of N ranks living in one process (threads). One hub holds
// the posted payloads and published layers under a mutex; waiting calls sleep on a condition
// variable until the data is there, the deadline passes or a rank aborts.
#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "sparsefill/engine/shard.h"

namespace sparsefill::engine {

struct InProcessExchange::Hub {
  struct Gather {
    std::vector<std::optional<std::string>> data;  // [world], by rank
    int32_t posted = 0;
    int32_t read = 0;
  };
  struct Layer {
    int64_t row_floats = 0;
    std::vector<float> k, v;  // [shard tokens, row_floats]
  };

  ShardLayout layout;
  std::chrono::milliseconds timeout{0};
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::pair<int32_t, std::string>, Gather> gathers;
  std::map<std::pair<int32_t, int32_t>, Layer> layers;  // (owner, layer)
  absl::Status aborted;                                 // OK while no rank failed

  // Waits under `lock` until `ready()` or the deadline / an abort; `what` describes the wait.
  template <typename Ready>
  absl::Status Wait(std::unique_lock<std::mutex>& lock, Ready ready, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (!aborted.ok()) {
        return absl::Status(aborted.code(), absl::StrCat(what, ": ", aborted.message()));
      }
      if (ready()) return absl::OkStatus();
      if (cv.wait_until(lock, deadline) == std::cv_status::timeout && !ready()) {
        return absl::DeadlineExceededError(
            absl::StrCat(what, ": no answer within ", timeout.count(), " ms"));
      }
    }
  }
};

namespace {

class Endpoint final : public ShardExchange {
 public:
  Endpoint(std::shared_ptr<InProcessExchange::Hub> hub, int32_t rank)
      : hub_(std::move(hub)), rank_(rank) {}

  int32_t rank() const override { return rank_; }
  const ShardLayout& layout() const override { return hub_->layout; }

  absl::StatusOr<std::vector<std::string>> AllGather(int32_t layer, std::string_view tag,
                                                     std::string_view data) override {
    InProcessExchange::Hub& h = *hub_;
    const int32_t world = h.layout.world_size();
    std::unique_lock<std::mutex> lock(h.mu);
    const auto key = std::make_pair(layer, std::string(tag));
    auto& g = h.gathers[key];
    if (g.data.empty()) g.data.resize(static_cast<size_t>(world));
    auto& slot = g.data[static_cast<size_t>(rank_)];
    if (slot.has_value()) {
      return absl::FailedPreconditionError(
          absl::StrCat("rank ", rank_, " posted \"", AsAbsl(tag), "\" of layer ", layer, " twice"));
    }
    slot = std::string(data);
    ++g.posted;
    h.cv.notify_all();
    const std::string what =
        absl::StrCat("rank ", rank_, " all-gather \"", AsAbsl(tag), "\" of layer ", layer);
    SF_RETURN_IF_ERROR(h.Wait(
        lock, [&] { return g.posted == world; }, what));
    std::vector<std::string> out;
    out.reserve(static_cast<size_t>(world));
    for (const auto& d : g.data) out.push_back(*d);
    if (++g.read == world) h.gathers.erase(key);
    return out;
  }

  absl::Status PublishLayer(int32_t layer, int64_t row_floats, std::span<const float> k,
                            std::span<const float> v) override {
    const TokenRange mine = shard();
    if (row_floats <= 0 || static_cast<int64_t>(k.size()) != mine.size() * row_floats ||
        v.size() != k.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rank ", rank_, " publishes layer ", layer, " with ", k.size(), "/", v.size(),
          " floats, expected shard tokens ", mine.size(), " x row ", row_floats));
    }
    InProcessExchange::Hub& h = *hub_;
    std::lock_guard<std::mutex> lock(h.mu);
    auto [it, inserted] = h.layers.try_emplace({rank_, layer});
    if (!inserted) {
      return absl::FailedPreconditionError(
          absl::StrCat("rank ", rank_, " published layer ", layer, " twice"));
    }
    it->second.row_floats = row_floats;
    it->second.k.assign(k.begin(), k.end());
    it->second.v.assign(v.begin(), v.end());
    h.cv.notify_all();
    return absl::OkStatus();
  }

  absl::Status ReleaseLayer(int32_t layer) override {
    InProcessExchange::Hub& h = *hub_;
    std::lock_guard<std::mutex> lock(h.mu);
    if (h.layers.erase({rank_, layer}) == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("rank ", rank_, " releases layer ", layer, " that it did not publish"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<KvRows> FetchKv(int32_t layer, int32_t owner,
                                 std::span<const TokenRange> ranges) override {
    InProcessExchange::Hub& h = *hub_;
    if (owner < 0 || owner >= h.layout.world_size()) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, " fetches layer ", layer,
                                                     " from rank ", owner, " of ",
                                                     h.layout.world_size()));
    }
    const TokenRange theirs = h.layout.range(owner);
    int64_t rows = 0;
    for (const TokenRange& r : ranges) {
      if (r.begin < theirs.begin || r.end > theirs.end || r.end <= r.begin) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rank ", rank_, " fetches tokens [", r.begin, ", ", r.end, ") of layer ", layer,
            " from rank ", owner, ", whose shard is [", theirs.begin, ", ", theirs.end, ")"));
      }
      rows += r.size();
    }
    std::unique_lock<std::mutex> lock(h.mu);
    const auto key = std::make_pair(owner, layer);
    SF_RETURN_IF_ERROR(h.Wait(
        lock, [&] { return h.layers.count(key) > 0; },
        absl::StrCat("rank ", rank_, " fetching layer ", layer, " from rank ", owner)));
    const InProcessExchange::Hub::Layer& l = h.layers.at(key);
    KvRows out;
    out.tokens = rows;
    out.k.reserve(static_cast<size_t>(rows * l.row_floats));
    out.v.reserve(out.k.capacity());
    for (const TokenRange& r : ranges) {
      const auto b = static_cast<size_t>((r.begin - theirs.begin) * l.row_floats);
      const auto e = static_cast<size_t>((r.end - theirs.begin) * l.row_floats);
      out.k.insert(out.k.end(), l.k.begin() + b, l.k.begin() + e);
      out.v.insert(out.v.end(), l.v.begin() + b, l.v.begin() + e);
    }
    return out;
  }

  void Abort(const absl::Status& why) override {
    InProcessExchange::Hub& h = *hub_;
    std::lock_guard<std::mutex> lock(h.mu);
    if (h.aborted.ok()) {
      h.aborted = absl::Status(why.ok() ? absl::StatusCode::kAborted : why.code(),
                               absl::StrCat("rank ", rank_, " aborted: ", why.message()));
    }
    h.cv.notify_all();
  }

 private:
  std::shared_ptr<InProcessExchange::Hub> hub_;
  int32_t rank_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<InProcessExchange>> InProcessExchange::Create(
    ShardLayout layout, const Options& options) {
  if (layout.world_size() <= 0) {
    return absl::InvalidArgumentError("in-process exchange: the layout has no ranks");
  }
  if (options.timeout.count() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "in-process exchange: timeout ", options.timeout.count(), " ms must be positive"));
  }
  std::unique_ptr<InProcessExchange> x(new InProcessExchange());
  x->hub_ = std::make_shared<Hub>();
  x->hub_->layout = std::move(layout);
  x->hub_->timeout = options.timeout;
  for (int32_t r = 0; r < x->hub_->layout.world_size(); ++r) {
    x->endpoints_.push_back(std::make_unique<Endpoint>(x->hub_, r));
  }
  return x;
}

InProcessExchange::~InProcessExchange() = default;

int32_t InProcessExchange::world_size() const { return hub_->layout.world_size(); }

ShardExchange& InProcessExchange::endpoint(int32_t rank) {
  return *endpoints_[static_cast<size_t>(rank)];
}

}  // namespace sparsefill::engine
