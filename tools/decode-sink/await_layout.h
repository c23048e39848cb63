// GetCache for a decode node that starts at admission. When the workers do not describe their
// KV dtype, the coordinator learns a PENDING cache's dtype only once the first layer is stored;
// until then it answers DTYPE_UNSPECIFIED, which the client library refuses as a malformed
// layout (DATA_LOSS "...dtype: unspecified"). This waits for the layout instead of failing.
#pragma once

#include <chrono>

#include "absl/status/statusor.h"
#include "sparsefill/client/coordinator_client.h"

namespace sparsefill::tools {

// GetCache until the answer has a complete layout, polling every `poll`; any other error, or
// `timeout` passing, ends the wait with that status.
absl::StatusOr<client::CacheInfo> AwaitCacheLayout(
    client::CoordinatorClient& client, const kvstore::CacheId& id,
    std::chrono::milliseconds timeout,
    std::chrono::milliseconds poll = std::chrono::milliseconds(20));

}  // namespace sparsefill::tools
