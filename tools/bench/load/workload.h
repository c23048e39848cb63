// The request mix of the load and soak tests: prompts of real text (the shared novel) as token
// ids and as text, of lengths spread log-uniformly over [min_tokens, max_tokens], from a fixed
// pool (so the same prompt prefilled twice must give the same cache), plus malformed requests
// of every kind the coordinator must refuse with INVALID_ARGUMENT.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/client/types.h"

namespace sparsefill::bench {

enum class RequestKind : uint8_t {
  kTokens,          // valid: token ids of the novel
  kText,            // valid: a slice of the novel's text, tokenized by the server
  kEmpty,           // no prompt at all
  kTooLong,         // max_tokens + 1 .. + 64 tokens
  kTokenOverVocab,  // one id == vocab_size (+ up to 1000)
  kNegativeToken,   // one id < 0
  kUnknownModel,    // a model no worker serves
  kBadSelection,    // an impossible selection override
  kBadTtl,          // a TTL over the coordinator's maximum
};
inline constexpr int kNumRequestKinds = 9;
std::string_view RequestKindName(RequestKind kind);
inline bool IsMalformed(RequestKind kind) {
  return kind != RequestKind::kTokens && kind != RequestKind::kText;
}

struct WorkloadOptions {
  std::string model = "tiny";
  int64_t vocab_size = 0;         // of the model (ListModels); required
  int64_t server_max_tokens = 0;  // the coordinator's --max-tokens; required
  int64_t max_ttl_s = 7 * 24 * 3600;
  int64_t min_tokens = 64;    // valid prompts' lengths
  int64_t max_tokens = 8192;  // (<= server_max_tokens)
  double malformed_fraction = 0.05;
  double text_fraction = 0.25;  // of the valid ones, when `text` is not empty
  int32_t pool = 48;            // distinct valid prompts
  int64_t ttl_seconds = 0;      // of valid requests; 0: the server's default
};

// One request of the mix.
struct LoadRequest {
  RequestKind kind = RequestKind::kTokens;
  int32_t prompt = -1;  // index in the pool of valid prompts; -1 for malformed ones
  int64_t tokens = 0;   // token ids sent (text: bytes sent)
  client::PrefillRequest request;
};

class Workload {
 public:
  // `novel_ids`: the novel's token ids (ids >= vocab_size are folded into it); `novel_text`: its
  // text, or empty for no text requests.
  static absl::StatusOr<Workload> Create(const WorkloadOptions& options,
                                         std::vector<int32_t> novel_ids, std::string novel_text,
                                         uint64_t seed);

  // A valid request (prompt from the pool), or a malformed one with probability
  // malformed_fraction.
  LoadRequest Next(std::mt19937_64& rng) const;
  // A valid request of the pool's shortest prompt (probes of the soak test).
  LoadRequest Smallest() const;
  LoadRequest Valid(int32_t prompt) const;
  LoadRequest Malformed(RequestKind kind, std::mt19937_64& rng) const;
  int32_t pool_size() const { return static_cast<int32_t>(prompts_.size()); }
  const WorkloadOptions& options() const { return options_; }

 private:
  struct Prompt {
    bool text = false;
    std::vector<int32_t> ids;
    std::string bytes;
  };
  Workload() = default;
  WorkloadOptions options_;
  std::vector<Prompt> prompts_;
  std::vector<int32_t> filler_;  // valid ids to build malformed prompts from
};

}  // namespace sparsefill::bench
