// Bearer tokens mapped to tenants (DESIGN §7: a tenant sees only its own caches). The tenant of
// a call comes from its "authorization: Bearer <token>" metadata, never from the request.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sparsefill::auth {

// gRPC metadata keys are lowercase.
inline constexpr std::string_view kAuthorizationKey = "authorization";
inline constexpr std::string_view kBearerPrefix = "Bearer ";
// Short tokens are guessable; the tokens file must hold at least this many characters each.
inline constexpr size_t kMinTokenChars = 16;

class TokenTable {
 public:
  TokenTable() = default;

  // Parses the tokens file format: one "token tenant" per line, separated by spaces or tabs;
  // blank lines and lines starting with '#' are skipped. Tokens are printable ASCII without
  // spaces, at least kMinTokenChars long and unique; tenants are 1-64 characters of
  // [A-Za-z0-9._-]. InvalidArgument names `source`, the line and what is wrong; a table without
  // tokens is an error too (every call would be refused).
  static absl::StatusOr<TokenTable> Parse(std::string_view text, std::string_view source);
  static absl::StatusOr<TokenTable> LoadFile(std::string_view path);

  // The tenant of `token`, or nullopt. Compares against every entry in constant time per entry
  // and never stops early, so timing does not reveal which token prefix matched.
  std::optional<std::string> Lookup(std::string_view token) const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string token;
    std::string tenant;
  };
  std::vector<Entry> entries_;
};

// "Bearer <token>" -> "<token>" (scheme case-insensitive, as RFC 6750); nullopt when malformed.
std::optional<std::string_view> ParseBearer(std::string_view authorization);

// The tenant of a server call: UNAUTHENTICATED when the "authorization" metadata is missing,
// repeated, not a bearer token, or unknown to `tokens`. Messages never echo the token.
absl::StatusOr<std::string> AuthenticateCall(const grpc::ServerContext& ctx,
                                             const TokenTable& tokens);

}  // namespace sparsefill::auth
