#include "services/coordinator/admission.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace sparsefill::coordinator {

absl::Status AdmissionController::Options::Validate() const {
  if (max_queue < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue: must be >= 0, got ", max_queue));
  }
  if (max_inflight_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_inflight_tokens: must be positive, got ", max_inflight_tokens));
  }
  return absl::OkStatus();
}

AdmissionController::Slot& AdmissionController::Slot::operator=(Slot&& o) noexcept {
  if (this != &o) {
    Release();
    owner_ = o.owner_;
    tokens_ = o.tokens_;
    o.owner_ = nullptr;
  }
  return *this;
}

void AdmissionController::Slot::Release() {
  if (owner_ != nullptr) owner_->Return(tokens_);
  owner_ = nullptr;
}

void AdmissionController::Return(int64_t tokens) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    inflight_tokens_ -= tokens;
    --running_;
    Publish();
  }
  cv_.notify_all();
}

absl::StatusOr<AdmissionController::Slot> AdmissionController::Admit(int64_t tokens,
                                                                     Deadline deadline,
                                                                     const Cancellation* cancel) {
  if (tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("admission: ", tokens, " tokens"));
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (tokens > options_.max_inflight_tokens) {
    Reject("over_budget");
    return absl::ResourceExhaustedError(absl::StrCat(
        "admission: a prompt of ", tokens, " tokens exceeds the in-flight token budget of ",
        options_.max_inflight_tokens));
  }
  auto fits = [&] { return inflight_tokens_ + tokens <= options_.max_inflight_tokens; };
  if (queue_.empty() && fits()) {
    inflight_tokens_ += tokens;
    ++running_;
    Publish();
    return Slot(this, tokens);
  }
  if (static_cast<int64_t>(queue_.size()) >= options_.max_queue) {
    Reject("queue_full");
    return absl::ResourceExhaustedError(
        absl::StrCat("admission: queue full (", queue_.size(), " waiting, max_queue ",
                     options_.max_queue, "); in-flight tokens ", inflight_tokens_, " + ", tokens,
                     " over the budget of ", options_.max_inflight_tokens));
  }
  const uint64_t ticket = next_ticket_++;
  queue_.push_back(ticket);
  Publish();
  absl::Status status;
  while (true) {
    if (queue_.front() == ticket && fits()) break;
    if (IsCancelled(cancel)) {
      status = absl::CancelledError("admission: cancelled while queued");
      break;
    }
    const auto now = std::chrono::system_clock::now();
    if (deadline != kNoDeadline && now >= deadline) {
      status = absl::DeadlineExceededError(absl::StrCat(
          "admission: deadline passed while queued for ", tokens, " tokens (in-flight ",
          inflight_tokens_, " of ", options_.max_inflight_tokens, ")"));
      break;
    }
    // Cancellation has no condition variable of its own: wake up periodically to look at it.
    auto wake = now + std::chrono::milliseconds(20);
    if (deadline < wake) wake = deadline;
    cv_.wait_until(lock, wake);
  }
  queue_.erase(std::find(queue_.begin(), queue_.end(), ticket));
  if (!status.ok()) {
    Reject(status.code() == absl::StatusCode::kCancelled ? "cancelled" : "deadline");
    Publish();
    lock.unlock();
    cv_.notify_all();  // the next in line may be at the front now
    return status;
  }
  inflight_tokens_ += tokens;
  ++running_;
  Publish();
  lock.unlock();
  cv_.notify_all();
  return Slot(this, tokens);
}

void AdmissionController::Publish() const {
  if (options_.metrics != nullptr) {
    options_.metrics->SetState(static_cast<int64_t>(queue_.size()), running_, inflight_tokens_);
  }
}

void AdmissionController::Reject(std::string_view reason) const {
  if (options_.metrics != nullptr) options_.metrics->RecordRejection(reason);
}

int64_t AdmissionController::inflight_tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return inflight_tokens_;
}
int32_t AdmissionController::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}
int32_t AdmissionController::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int32_t>(queue_.size());
}

}  // namespace sparsefill::coordinator
