// One error vocabulary for sparsefill: absl::Status / absl::StatusOr.
// Debian's Abseil ships no status macros, so these two are ours.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SF_STATUS_CONCAT_INNER(a, b) a##b
#define SF_STATUS_CONCAT(a, b) SF_STATUS_CONCAT_INNER(a, b)

// Returns from the current function when `expr` (an absl::Status) is not OK.
#define SF_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    ::absl::Status sf_status_tmp_ = (expr);       \
    if (!sf_status_tmp_.ok()) return sf_status_tmp_; \
  } while (0)

// `lhs = value of rexpr` when rexpr (an absl::StatusOr<T>) is OK, else returns its status.
#define SF_ASSIGN_OR_RETURN(lhs, rexpr) \
  SF_ASSIGN_OR_RETURN_IMPL(SF_STATUS_CONCAT(sf_statusor_, __LINE__), lhs, rexpr)
#define SF_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                             \
  if (!tmp.ok()) return std::move(tmp).status();  \
  lhs = std::move(tmp).value()

namespace sparsefill {

// Debian's Abseil is built with its own absl::string_view (not std::string_view): pass
// std::string_view to absl::StrCat / absl::Status through this.
inline absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The one greppable place where an error is dropped on purpose. `why` says why it is safe.
void IgnoreError(const absl::Status& status, std::string_view why);

}  // namespace sparsefill
