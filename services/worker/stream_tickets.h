// Stream tickets (coordinator-issued, redeemed by decode nodes): the credential of a direct
// StreamShard call from a decode node to this worker, which knows no client tokens. The
// coordinator authenticates the client, checks its tenant against the cache, draws a 128-bit
// random ticket and registers it here over the internal API; the decode node presents it once.
// Transport-free; the clock is injected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/common/clock.h"

namespace sparsefill::worker {

// What a ticket allows: one stream of the shard [token_begin, token_end) of `cache_id` (16
// bytes, as on the wire) for `tenant`.
struct TicketGrant {
  std::string cache_id;
  std::string tenant;
  int64_t token_begin = 0;
  int64_t token_end = 0;
  int64_t expires_unix_ms = 0;

  // Whether the grant is for a shard of `tenant` covering exactly [token_begin, token_end): a
  // shard that was replaced (another tenant's cache under the same id, another range) since the
  // ticket was issued is not the one it allows.
  bool Matches(std::string_view shard_tenant, int64_t shard_begin, int64_t shard_end) const {
    return tenant == shard_tenant && token_begin == shard_begin && token_end == shard_end;
  }
};

class StreamTickets {
 public:
  static constexpr size_t kTicketBytes = 16;

  struct Options {
    // The longest validity the coordinator may ask for. Default 60 s; in [1 ms, 1 h].
    int64_t max_ttl_ms = 60'000;
    // Unexpired tickets held at once; more is RESOURCE_EXHAUSTED. Default 4096; >= 1.
    size_t max_outstanding = 4096;
    // Expiry is judged on this clock. Default null: real time. Not owned.
    const Clock* clock = nullptr;
    absl::Status Validate() const;
  };

  // `options` must be valid (Validate()).
  explicit StreamTickets(Options options);

  // Registers `ticket` for `grant` (its expires_unix_ms is ignored): valid for `ttl_ms` from now.
  // InvalidArgument naming the field for a ticket that is not kTicketBytes long, a cache id that
  // is not 16 bytes or a ttl outside (0, max_ttl_ms]; AlreadyExists for a ticket held already;
  // ResourceExhausted when max_outstanding unexpired tickets are held.
  absl::Status Issue(std::string_view ticket, TicketGrant grant, int64_t ttl_ms);

  // Takes the ticket (a ticket is good for one stream) if it is held, unexpired and granted for
  // `cache_id`. UNAUTHENTICATED when `ticket` is empty; PERMISSION_DENIED with one message for
  // every other refusal, so a caller learns nothing about which caches exist. A ticket presented
  // for another cache is consumed too: it was leaked or guessed.
  absl::StatusOr<TicketGrant> Redeem(std::string_view ticket, std::string_view cache_id);

  // Unexpired tickets held (expired ones are dropped first).
  size_t size();

  // The message of every PERMISSION_DENIED refusal (also used by the service for a grant whose
  // shard no longer matches).
  static absl::Status Denied();

 private:
  void DropExpiredLocked(int64_t now);

  const Options options_;
  const Clock* clock_;
  std::mutex mu_;
  std::map<std::string, TicketGrant, std::less<>> tickets_;
};

}  // namespace sparsefill::worker
