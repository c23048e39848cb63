#include "tools/decode-sink/await_layout.h"

#include <thread>

#include "absl/strings/str_cat.h"

namespace sparsefill::tools {

absl::StatusOr<client::CacheInfo> AwaitCacheLayout(client::CoordinatorClient& client,
                                                   const kvstore::CacheId& id,
                                                   std::chrono::milliseconds timeout,
                                                   std::chrono::milliseconds poll) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    client::CallOptions call;
    call.timeout = std::max(left, std::chrono::milliseconds(1));
    absl::StatusOr<client::CacheInfo> info = client.GetCache(id, call);
    const bool dtype_pending =
        !info.ok() && info.status().code() == absl::StatusCode::kDataLoss &&
        info.status().message().find("dtype: unspecified") != absl::string_view::npos;
    if (!dtype_pending) return info;
    if (std::chrono::steady_clock::now() + poll >= end) {
      return absl::DeadlineExceededError(
          absl::StrCat("cache ", id.ToHex(), ": its layout was still unknown after ",
                       timeout.count(), " ms (", info.status().message(), ")"));
    }
    std::this_thread::sleep_for(poll);
  }
}

}  // namespace sparsefill::tools
