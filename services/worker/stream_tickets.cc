#include "services/worker/stream_tickets.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sparsefill::worker {

absl::Status StreamTickets::Options::Validate() const {
  if (max_ttl_ms < 1 || max_ttl_ms > 3'600'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_ttl_ms: ", max_ttl_ms, " is outside [1, 3600000]"));
  }
  if (max_outstanding < 1) return absl::InvalidArgumentError("max_outstanding: must be >= 1");
  return absl::OkStatus();
}

StreamTickets::StreamTickets(Options options)
    : options_(options), clock_(options.clock != nullptr ? options.clock : Clock::Real()) {}

absl::Status StreamTickets::Denied() {
  return absl::PermissionDeniedError(
      "StreamShard: the stream ticket is not valid (unknown, used, expired, or for another "
      "cache); ask the coordinator for a new plan");
}

void StreamTickets::DropExpiredLocked(int64_t now) {
  for (auto it = tickets_.begin(); it != tickets_.end();) {
    it = it->second.expires_unix_ms <= now ? tickets_.erase(it) : std::next(it);
  }
}

absl::Status StreamTickets::Issue(std::string_view ticket, TicketGrant grant, int64_t ttl_ms) {
  if (ticket.size() != kTicketBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("ticket: must be ", kTicketBytes, " bytes, got ", ticket.size()));
  }
  if (grant.cache_id.size() != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("cache_id: must be 16 bytes, got ", grant.cache_id.size()));
  }
  if (ttl_ms <= 0 || ttl_ms > options_.max_ttl_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_ms: ", ttl_ms, " is outside (0, ", options_.max_ttl_ms, "]"));
  }
  const int64_t now = clock_->NowUnixMillis();
  grant.expires_unix_ms = now + ttl_ms;
  std::lock_guard<std::mutex> lock(mu_);
  DropExpiredLocked(now);
  if (tickets_.size() >= options_.max_outstanding) {
    return absl::ResourceExhaustedError(absl::StrCat("stream tickets: ", tickets_.size(),
                                                     " unexpired tickets held (max_outstanding)"));
  }
  if (!tickets_.emplace(std::string(ticket), std::move(grant)).second) {
    return absl::AlreadyExistsError("ticket: already registered");
  }
  return absl::OkStatus();
}

absl::StatusOr<TicketGrant> StreamTickets::Redeem(std::string_view ticket,
                                                  std::string_view cache_id) {
  if (ticket.empty()) {
    return absl::UnauthenticatedError(
        "StreamShard: no stream ticket (get one from the coordinator's StreamCache with "
        "allow_direct)");
  }
  const int64_t now = clock_->NowUnixMillis();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tickets_.find(ticket);
  if (it == tickets_.end()) return Denied();
  TicketGrant grant = std::move(it->second);
  tickets_.erase(it);
  if (grant.expires_unix_ms <= now || grant.cache_id != cache_id) return Denied();
  return grant;
}

size_t StreamTickets::size() {
  std::lock_guard<std::mutex> lock(mu_);
  DropExpiredLocked(clock_->NowUnixMillis());
  return tickets_.size();
}

}  // namespace sparsefill::worker
