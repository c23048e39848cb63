#include "services/coordinator/options.h"

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {
namespace {

absl::Status Positive(const char* field, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, ": must be positive, got ", value));
}

}  // namespace

absl::Status CoordinatorOptions::Validate() const {
  SF_RETURN_IF_ERROR(Positive("max_tokens", max_tokens));
  SF_RETURN_IF_ERROR(admission.Validate());
  SF_RETURN_IF_ERROR(Positive("default_ttl_s", default_ttl_s));
  SF_RETURN_IF_ERROR(Positive("max_ttl_s", max_ttl_s));
  if (default_ttl_s > max_ttl_s) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_ttl_s: ", default_ttl_s, " exceeds max_ttl_s ", max_ttl_s));
  }
  SF_RETURN_IF_ERROR(Positive("default_deadline", default_deadline.count()));
  if (deadline_margin.count() < 0) {
    return absl::InvalidArgumentError("deadline_margin: must not be negative");
  }
  SF_RETURN_IF_ERROR(Positive("health_timeout", health_timeout.count()));
  SF_RETURN_IF_ERROR(Positive("health_interval", health_interval.count()));
  SF_RETURN_IF_ERROR(Positive("maintenance_interval", maintenance_interval.count()));
  SF_RETURN_IF_ERROR(Positive("cleanup_timeout", cleanup_timeout.count()));
  if (direct_ticket_ttl.count() < 0 || direct_ticket_ttl > std::chrono::seconds(60)) {
    return absl::InvalidArgumentError(absl::StrCat("direct_ticket_ttl: ", direct_ticket_ttl.count(),
                                                   " ms is outside [0, 60000]"));
  }
  if (clock == nullptr) return absl::InvalidArgumentError("clock: null");
  return absl::OkStatus();
}

}  // namespace sparsefill::coordinator
