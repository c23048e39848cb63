#include "services/common/auth_tokens.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "sparsefill/common/status.h"

namespace sparsefill::auth {
namespace {

constexpr size_t kMaxTenantChars = 64;
constexpr size_t kMaxTokenChars = 4096;
constexpr size_t kMaxFileBytes = 16 << 20;

bool IsTenantChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

// Printable, no space: what an HTTP/2 header value carries without quoting.
bool IsTokenChar(char c) { return c > 0x20 && c < 0x7f; }

// Time depends only on expected.size(), which is the server's, not the caller's secret.
bool ConstantTimeEquals(std::string_view expected, std::string_view given) {
  unsigned diff = expected.size() == given.size() ? 0u : 1u;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(expected[i]) ^ g;
  }
  return diff == 0;
}

std::vector<std::string_view> SplitFields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t begin = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > begin) fields.push_back(line.substr(begin, i - begin));
  }
  return fields;
}

constexpr std::string_view kExpiresPrefix = "expires=";

// "expires=<RFC 3339>" -> Unix milliseconds. The zone is required: a token file read on servers
// in different zones must end a token at one instant.
absl::StatusOr<int64_t> ParseExpires(std::string_view field) {
  if (!absl::StartsWith(AsAbsl(field), AsAbsl(kExpiresPrefix))) {
    return absl::InvalidArgumentError(
        absl::StrCat("third field \"", AsAbsl(field.substr(0, 64)),
                     "\" is not expires=<RFC 3339 time, e.g. 2027-01-31T00:00:00Z>"));
  }
  const std::string value(field.substr(kExpiresPrefix.size()));
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, value, &t, &err)) {
    return absl::InvalidArgumentError(
        absl::StrCat("expires \"", value.substr(0, 64),
                     "\" is not an RFC 3339 time with a zone (e.g. 2027-01-31T00:00:00Z): ", err));
  }
  if (t == absl::InfiniteFuture() || t == absl::InfinitePast()) {
    return absl::InvalidArgumentError(absl::StrCat("expires \"", value, "\" is out of range"));
  }
  return absl::ToUnixMillis(t);
}

}  // namespace

absl::StatusOr<TokenTable> TokenTable::Parse(std::string_view text, std::string_view source) {
  TokenTable table;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto where = [&] { return absl::StrCat(AsAbsl(source), ":", line_no, ": "); };
    const std::vector<std::string_view> fields = SplitFields(line);
    if (fields.empty() || fields[0].front() == '#') continue;
    if (fields.size() != 2 && fields.size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          where(), "expected \"token tenant [expires=TIME]\", got ", fields.size(), " fields"));
    }
    int64_t expires_unix_ms = kNeverExpires;
    if (fields.size() == 3) {
      absl::StatusOr<int64_t> e = ParseExpires(fields[2]);
      if (!e.ok()) return absl::InvalidArgumentError(absl::StrCat(where(), e.status().message()));
      expires_unix_ms = *e;
    }
    const std::string_view token = fields[0];
    const std::string_view tenant = fields[1];
    if (token.size() < kMinTokenChars || token.size() > kMaxTokenChars) {
      return absl::InvalidArgumentError(absl::StrCat(where(), "token must be ", kMinTokenChars, "-",
                                                     kMaxTokenChars, " characters, got ",
                                                     token.size()));
    }
    for (char c : token) {
      if (!IsTokenChar(c)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), "token holds a non-printable character"));
      }
    }
    if (tenant.size() > kMaxTenantChars) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), "tenant is longer than ", kMaxTenantChars, " characters"));
    }
    for (char c : tenant) {
      if (!IsTenantChar(c)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), "tenant \"", AsAbsl(tenant), "\" may only hold [A-Za-z0-9._-]"));
      }
    }
    for (const Entry& e : table.entries_) {
      if (e.token == token) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), "duplicate token (also given for tenant \"", e.tenant, "\")"));
      }
    }
    table.entries_.push_back(Entry{std::string(token), std::string(tenant), expires_unix_ms});
  }
  if (table.entries_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(source), ": no tokens (every call would be refused)"));
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::LoadFile(std::string_view path) {
  std::ifstream in{std::string(path), std::ios::binary};
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokens file: cannot open \"", AsAbsl(path), "\""));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  const std::string text = std::move(buf).str();
  if (text.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tokens file \"", AsAbsl(path),
                                                   "\" is larger than ", kMaxFileBytes, " bytes"));
  }
  return Parse(text, path);
}

TokenMatch TokenTable::Check(std::string_view token, int64_t now_unix_ms) const {
  const Entry* found = nullptr;
  for (const Entry& e : entries_) {
    if (ConstantTimeEquals(e.token, token)) found = &e;
  }
  TokenMatch m;
  if (found == nullptr) return m;
  m.state = now_unix_ms >= found->expires_unix_ms ? TokenState::kExpired : TokenState::kValid;
  m.tenant = found->tenant;
  m.expires_unix_ms = found->expires_unix_ms;
  return m;
}

std::optional<std::string> TokenTable::Lookup(std::string_view token, int64_t now_unix_ms) const {
  TokenMatch m = Check(token, now_unix_ms);
  if (m.state != TokenState::kValid) return std::nullopt;
  return std::move(m.tenant);
}

std::optional<std::string_view> ParseBearer(std::string_view authorization) {
  if (authorization.size() <= kBearerPrefix.size()) return std::nullopt;
  for (size_t i = 0; i + 1 < kBearerPrefix.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(authorization[i])) !=
        absl::ascii_tolower(static_cast<unsigned char>(kBearerPrefix[i]))) {
      return std::nullopt;
    }
  }
  if (authorization[kBearerPrefix.size() - 1] != ' ') return std::nullopt;
  std::string_view token = authorization.substr(kBearerPrefix.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

absl::StatusOr<std::string> AuthenticateCall(const grpc::ServerContext& ctx,
                                             const TokenTable& tokens, const Clock* clock) {
  const auto& md = ctx.client_metadata();
  const auto range =
      md.equal_range(grpc::string_ref(kAuthorizationKey.data(), kAuthorizationKey.size()));
  if (range.first == range.second) {
    return absl::UnauthenticatedError(
        "missing bearer token: send metadata \"authorization: Bearer <token>\"");
  }
  if (std::next(range.first) != range.second) {
    return absl::UnauthenticatedError("more than one \"authorization\" metadata entry");
  }
  const grpc::string_ref value = range.first->second;
  const std::optional<std::string_view> token =
      ParseBearer(std::string_view(value.data(), value.size()));
  if (!token) {
    return absl::UnauthenticatedError(
        "\"authorization\" metadata is not of the form \"Bearer <token>\"");
  }
  if (clock == nullptr) clock = Clock::Real();
  TokenMatch m = tokens.Check(*token, clock->NowUnixMillis());
  switch (m.state) {
    case TokenState::kUnknown:
      return absl::UnauthenticatedError("unknown bearer token");
    case TokenState::kExpired:
      // The caller holds this token, so saying it expired (and when) reveals nothing new and
      // tells an operator what to rotate.
      return absl::UnauthenticatedError(
          absl::StrCat("bearer token expired at ",
                       absl::FormatTime(absl::RFC3339_sec, absl::FromUnixMillis(m.expires_unix_ms),
                                        absl::UTCTimeZone())));
    case TokenState::kValid:
      break;
  }
  return std::move(m.tenant);
}

}  // namespace sparsefill::auth
