#include "services/engine/tokenizer/added_tokens.h"

#include <algorithm>

#include "services/engine/tokenizer/utf8.h"

namespace sparsefill::engine::tokenizer_internal {
namespace {

// Last code point of s[0, end) (valid UTF-8), or nullopt at the start.
std::optional<char32_t> CodepointBefore(std::string_view s, size_t end) {
  if (end == 0) return std::nullopt;
  size_t i = end - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return NextCodepoint(s, i);
}

std::optional<char32_t> CodepointAt(std::string_view s, size_t begin) {
  if (begin >= s.size()) return std::nullopt;
  return NextCodepoint(s, begin);
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) {
  for (AddedToken& t : tokens) {
    if (!t.content.empty()) tokens_.push_back(std::move(t));
  }
  for (uint32_t i = 0; i < tokens_.size(); ++i) {
    by_first_byte_[static_cast<uint8_t>(tokens_[i].content[0])].push_back(i);
  }
  for (auto& bucket : by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](uint32_t a, uint32_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
  }
}

void AddedTokenMatcher::Split(std::string_view text, std::vector<Segment>& out) const {
  size_t start_offset = 0;  // end of the last emitted segment
  size_t pos = 0;
  const size_t n = text.size();
  while (pos < n) {
    const auto& bucket = by_first_byte_[static_cast<uint8_t>(text[pos])];
    const AddedToken* hit = nullptr;
    for (const uint32_t idx : bucket) {
      const std::string& c = tokens_[idx].content;
      if (text.compare(pos, c.size(), c) == 0) {
        hit = &tokens_[idx];
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + hit->content.size();
    // The automaton has consumed this match whatever happens next: the search resumes after it.
    pos = stop;
    if (hit->single_word) {
      const auto before = CodepointBefore(text, start);
      const auto after = CodepointAt(text, stop);
      if ((before && IsWordChar(*before)) || (after && IsWordChar(*after))) continue;
    }
    if (hit->lstrip) {
      size_t s = start;
      while (true) {
        const auto cp = CodepointBefore(text, s);
        if (!cp || !IsWhiteSpace(*cp)) break;
        size_t k = s - 1;
        while (k > 0 && (static_cast<uint8_t>(text[k]) & 0xC0) == 0x80) --k;
        s = k;
      }
      // Spaces a previous token's rstrip already took stay with it.
      start = std::max(s, start_offset);
    }
    if (hit->rstrip) {
      while (stop < n) {
        size_t k = stop;
        const char32_t cp = NextCodepoint(text, k);
        if (!IsWhiteSpace(cp)) break;
        stop = k;
      }
      pos = std::max(pos, stop);
    }
    if (start_offset < start) out.push_back(Segment{start_offset, start, -1});
    out.push_back(Segment{start, stop, hit->id});
    start_offset = stop;
  }
  if (start_offset < n) out.push_back(Segment{start_offset, n, -1});
}

}  // namespace sparsefill::engine::tokenizer_internal
