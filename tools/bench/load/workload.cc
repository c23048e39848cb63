#include "tools/bench/load/workload.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace sparsefill::bench {

std::string_view RequestKindName(RequestKind kind) {
  switch (kind) {
    case RequestKind::kTokens:
      return "tokens";
    case RequestKind::kText:
      return "text";
    case RequestKind::kEmpty:
      return "empty_prompt";
    case RequestKind::kTooLong:
      return "too_long";
    case RequestKind::kTokenOverVocab:
      return "token_over_vocab";
    case RequestKind::kNegativeToken:
      return "negative_token";
    case RequestKind::kUnknownModel:
      return "unknown_model";
    case RequestKind::kBadSelection:
      return "bad_selection";
    case RequestKind::kBadTtl:
      return "bad_ttl";
  }
  return "?";
}

absl::StatusOr<Workload> Workload::Create(const WorkloadOptions& o, std::vector<int32_t> novel_ids,
                                          std::string novel_text, uint64_t seed) {
  if (o.vocab_size < 2) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size: ", o.vocab_size, " < 2"));
  }
  if (o.min_tokens < 1 || o.max_tokens < o.min_tokens || o.max_tokens > o.server_max_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt lengths: need 1 <= min_tokens (", o.min_tokens, ") <= max_tokens (",
                     o.max_tokens, ") <= the server's maximum (", o.server_max_tokens, ")"));
  }
  if (!(o.malformed_fraction >= 0 && o.malformed_fraction <= 1) ||
      !(o.text_fraction >= 0 && o.text_fraction <= 1)) {
    return absl::InvalidArgumentError("malformed_fraction and text_fraction must be in [0, 1]");
  }
  if (o.pool < 2) return absl::InvalidArgumentError(absl::StrCat("pool: ", o.pool, " < 2"));
  if (static_cast<int64_t>(novel_ids.size()) < o.server_max_tokens + 64) {
    return absl::FailedPreconditionError(absl::StrCat("the novel has ", novel_ids.size(),
                                                      " tokens; the workload needs ",
                                                      o.server_max_tokens + 64));
  }
  for (int32_t& id : novel_ids) {
    if (id < 0 || id >= o.vocab_size) id = static_cast<int32_t>(std::abs(id) % o.vocab_size);
  }
  Workload w;
  w.options_ = o;
  std::mt19937_64 rng(seed);
  const double lo = std::log(static_cast<double>(o.min_tokens));
  const double hi = std::log(static_cast<double>(o.max_tokens));
  for (int32_t i = 0; i < o.pool; ++i) {
    // The first prompt is the shortest and the second the longest: both ends are always used.
    const double u = i == 0 ? 0.0 : i == 1 ? 1.0 : std::uniform_real_distribution<>(0, 1)(rng);
    const int64_t n =
        std::clamp<int64_t>(std::llround(std::exp(lo + u * (hi - lo))), o.min_tokens, o.max_tokens);
    Prompt p;
    const bool text = !novel_text.empty() && i >= 2 &&
                      std::uniform_real_distribution<>(0, 1)(rng) < o.text_fraction;
    if (text) {
      // ~4.4 bytes per token in the novel; never more bytes than the server's token limit, so
      // the text cannot tokenize past it. Cut at spaces: a whole UTF-8 sequence on both ends.
      const size_t want = static_cast<size_t>(std::min<int64_t>(n * 4, o.server_max_tokens));
      const size_t max_start = novel_text.size() > want ? novel_text.size() - want : 0;
      size_t start = std::uniform_int_distribution<size_t>(0, max_start)(rng);
      start = std::min(novel_text.find(' ', start) + 1, max_start);
      size_t end = std::min(novel_text.size(), start + want);
      const size_t space = novel_text.rfind(' ', end);
      if (space != std::string::npos && space > start) end = space;
      p.text = true;
      p.bytes = novel_text.substr(start, end - start);
    } else {
      const size_t start =
          std::uniform_int_distribution<size_t>(0, novel_ids.size() - static_cast<size_t>(n))(rng);
      p.ids.assign(novel_ids.begin() + static_cast<std::ptrdiff_t>(start),
                   novel_ids.begin() + static_cast<std::ptrdiff_t>(start + n));
    }
    w.prompts_.push_back(std::move(p));
  }
  w.filler_.assign(novel_ids.begin(),
                   novel_ids.begin() + static_cast<std::ptrdiff_t>(o.server_max_tokens + 64));
  return w;
}

LoadRequest Workload::Valid(int32_t prompt) const {
  const Prompt& p = prompts_[static_cast<size_t>(prompt)];
  LoadRequest r;
  r.kind = p.text ? RequestKind::kText : RequestKind::kTokens;
  r.prompt = prompt;
  r.request.model = options_.model;
  r.request.ttl_seconds = options_.ttl_seconds;
  if (p.text) {
    r.request.text = p.bytes;
    r.tokens = static_cast<int64_t>(p.bytes.size());
  } else {
    r.request.tokens = p.ids;
    r.tokens = static_cast<int64_t>(p.ids.size());
  }
  return r;
}

LoadRequest Workload::Smallest() const { return Valid(0); }

LoadRequest Workload::Malformed(RequestKind kind, std::mt19937_64& rng) const {
  LoadRequest r;
  r.kind = kind;
  r.request.model = options_.model;
  const auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  // A short valid prompt the fault is planted in.
  const int64_t n = pick(std::min<int64_t>(16, options_.min_tokens), options_.min_tokens);
  r.request.tokens.assign(filler_.begin(), filler_.begin() + n);
  switch (kind) {
    case RequestKind::kTokens:
    case RequestKind::kText:
      break;
    case RequestKind::kEmpty:
      r.request.tokens.clear();
      break;
    case RequestKind::kTooLong:
      r.request.tokens.assign(filler_.begin(),
                              filler_.begin() + options_.server_max_tokens + pick(1, 64));
      break;
    case RequestKind::kTokenOverVocab:
      r.request.tokens[static_cast<size_t>(pick(0, n - 1))] =
          static_cast<int32_t>(std::min<int64_t>(options_.vocab_size + pick(0, 1000), INT32_MAX));
      break;
    case RequestKind::kNegativeToken:
      r.request.tokens[static_cast<size_t>(pick(0, n - 1))] = static_cast<int32_t>(-pick(1, 5));
      break;
    case RequestKind::kUnknownModel:
      r.request.model = absl::StrCat(options_.model, "-no-such-model-", pick(0, 99));
      break;
    case RequestKind::kBadSelection:
      switch (pick(0, 3)) {
        case 0:
          r.request.selection.block_size = 0;
          break;
        case 1:
          r.request.selection.topk = -static_cast<int32_t>(pick(1, 4));
          break;
        case 2:
          r.request.selection.lambda = 1.5f;
          break;
        default:
          r.request.selection.init_blocks = -static_cast<int32_t>(pick(1, 4));
          break;
      }
      break;
    case RequestKind::kBadTtl:
      r.request.ttl_seconds = options_.max_ttl_s + pick(1, 1000);
      break;
  }
  r.tokens = static_cast<int64_t>(r.request.tokens.size());
  return r;
}

LoadRequest Workload::Next(std::mt19937_64& rng) const {
  if (std::uniform_real_distribution<>(0, 1)(rng) < options_.malformed_fraction) {
    const auto kind =
        static_cast<RequestKind>(std::uniform_int_distribution<int>(2, kNumRequestKinds - 1)(rng));
    return Malformed(kind, rng);
  }
  return Valid(std::uniform_int_distribution<int32_t>(0, pool_size() - 1)(rng));
}

}  // namespace sparsefill::bench
