// Bearer tokens mapped to tenants (DESIGN §7: a tenant sees only its own caches). The tenant of
// a call comes from its "authorization: Bearer <token>" metadata, never from the request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/common/clock.h"

namespace sparsefill::auth {

// gRPC metadata keys are lowercase.
inline constexpr std::string_view kAuthorizationKey = "authorization";
inline constexpr std::string_view kBearerPrefix = "Bearer ";
// Short tokens are guessable; the tokens file must hold at least this many characters each.
inline constexpr size_t kMinTokenChars = 16;
// expires_unix_ms of a token without an expiry.
inline constexpr int64_t kNeverExpires = std::numeric_limits<int64_t>::max();

enum class TokenState : uint8_t { kUnknown, kExpired, kValid };

struct TokenMatch {
  TokenState state = TokenState::kUnknown;
  std::string tenant;                       // empty when kUnknown
  int64_t expires_unix_ms = kNeverExpires;  // of the matched entry
};

class TokenTable {
 public:
  TokenTable() = default;

  // Parses the tokens file format: one "token tenant [expires=TIME]" per line, separated by
  // spaces or tabs; blank lines and lines starting with '#' are skipped. Tokens are printable
  // ASCII without spaces, at least kMinTokenChars long and unique; tenants are 1-64 characters
  // of [A-Za-z0-9._-]. TIME is RFC 3339 with a zone ("2027-01-31T00:00:00Z",
  // "2027-01-31T09:30:00+09:00"): from that instant on the token is refused (UNAUTHENTICATED),
  // judged on every call with the server's clock, so rotating a token needs no restart to end
  // the old one. Without it a token never expires. InvalidArgument names `source`, the line
  // and what is wrong; a table without tokens is an error too (every call would be refused).
  static absl::StatusOr<TokenTable> Parse(std::string_view text, std::string_view source);
  static absl::StatusOr<TokenTable> LoadFile(std::string_view path);

  // Whether `token` is known and, at `now_unix_ms`, still valid. Compares against every entry in
  // constant time per entry and never stops early, so timing does not reveal which token prefix
  // matched.
  TokenMatch Check(std::string_view token, int64_t now_unix_ms) const;
  // The tenant of `token` when it is known and not expired at `now_unix_ms`, else nullopt.
  std::optional<std::string> Lookup(std::string_view token, int64_t now_unix_ms) const;
  // The same on the real clock.
  std::optional<std::string> Lookup(std::string_view token) const {
    return Lookup(token, Clock::Real()->NowUnixMillis());
  }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string token;
    std::string tenant;
    int64_t expires_unix_ms = kNeverExpires;
  };
  std::vector<Entry> entries_;
};

// "Bearer <token>" -> "<token>" (scheme case-insensitive, as RFC 6750); nullopt when malformed.
std::optional<std::string_view> ParseBearer(std::string_view authorization);

// The tenant of a server call: UNAUTHENTICATED when the "authorization" metadata is missing,
// repeated, not a bearer token, unknown to `tokens`, or expired on `clock` (default: real time).
// Messages never echo the token.
absl::StatusOr<std::string> AuthenticateCall(const grpc::ServerContext& ctx,
                                             const TokenTable& tokens,
                                             const Clock* clock = Clock::Real());

}  // namespace sparsefill::auth
