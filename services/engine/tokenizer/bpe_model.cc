#include "services/engine/tokenizer/bpe_model.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::engine::tokenizer_internal {
namespace {

using nlohmann::json;

absl::Status Bad(std::string_view where, std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(AsAbsl(where), ".", AsAbsl(field), ": ", AsAbsl(what)));
}

// Quotes a token for an error message, cut short so a huge token does not flood the log.
std::string Quoted(std::string_view s) {
  if (s.size() > 64) return absl::StrCat("'", AsAbsl(s.substr(0, 64)), "...'");
  return absl::StrCat("'", AsAbsl(s), "'");
}

// Optional string fields that must be absent, null or "" for a byte-level vocabulary.
absl::Status RequireEmptyString(const json& model, std::string_view where, const char* field) {
  const auto it = model.find(field);
  if (it == model.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string() && it->get_ref<const std::string&>().empty()) return absl::OkStatus();
  return Bad(where, field, "only null or \"\" is supported");
}

absl::StatusOr<bool> OptionalBool(const json& obj, std::string_view where, const char* field) {
  const auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return false;
  if (!it->is_boolean()) return Bad(where, field, "must be a boolean");
  return it->get<bool>();
}

}  // namespace

absl::StatusOr<BpeModel> BpeModel::FromJson(const json& model, std::string_view where,
                                            const ByteLevelAlphabet& alphabet) {
  BpeModel m;
  m.alphabet_ = &alphabet;
  if (!model.is_object())
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(where), ": must be an object"));
  const auto type = model.find("type");
  if (type != model.end() && !(type->is_string() && type->get_ref<const std::string&>() == "BPE")) {
    return Bad(where, "type",
               absl::StrCat("unsupported model type ", type->dump(), " (only \"BPE\")"));
  }
  SF_RETURN_IF_ERROR(RequireEmptyString(model, where, "continuing_subword_prefix"));
  SF_RETURN_IF_ERROR(RequireEmptyString(model, where, "end_of_word_suffix"));
  SF_ASSIGN_OR_RETURN(const bool byte_fallback, OptionalBool(model, where, "byte_fallback"));
  if (byte_fallback) return Bad(where, "byte_fallback", "true is not supported");
  SF_ASSIGN_OR_RETURN(m.ignore_merges_, OptionalBool(model, where, "ignore_merges"));
  SF_ASSIGN_OR_RETURN(m.fuse_unk_, OptionalBool(model, where, "fuse_unk"));
  if (const auto d = model.find("dropout"); d != model.end() && !d->is_null()) {
    if (!d->is_number() || d->get<double>() != 0.0) {
      return Bad(where, "dropout", "only null or 0 is supported (encoding must be deterministic)");
    }
  }

  const auto vocab = model.find("vocab");
  if (vocab == model.end()) return Bad(where, "vocab", "missing");
  if (!vocab->is_object()) return Bad(where, "vocab", "must be an object of token -> id");
  m.vocab_.reserve(vocab->size());
  int64_t max_id = -1;
  for (const auto& [token, id_json] : vocab->items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
        id_json.get<int64_t>() > kMaxTokenId) {
      return Bad(where, "vocab",
                 absl::StrCat("token ", Quoted(token), " has id ", id_json.dump(),
                              " (must be an integer in [0, 2^22))"));
    }
    const auto id = static_cast<int32_t>(id_json.get<int64_t>());
    m.vocab_.emplace(token, id);
    max_id = std::max<int64_t>(max_id, id);
  }
  m.tokens_.assign(static_cast<size_t>(max_id + 1), std::string());
  m.has_id_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : m.vocab_) {
    if (m.has_id_[id]) {
      return Bad(where, "vocab",
                 absl::StrCat("id ", id, " is used by both ", Quoted(m.tokens_[id]), " and ",
                              Quoted(token)));
    }
    m.has_id_[id] = true;
    m.tokens_[id] = token;
  }

  if (const auto unk = model.find("unk_token"); unk != model.end() && !unk->is_null()) {
    if (!unk->is_string()) return Bad(where, "unk_token", "must be a string or null");
    const auto it = m.vocab_.find(unk->get_ref<const std::string&>());
    if (it == m.vocab_.end()) {
      return Bad(where, "unk_token",
                 absl::StrCat(Quoted(unk->get_ref<const std::string&>()), " is not in the vocab"));
    }
    m.unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = m.vocab_.find(alphabet.CharFor(static_cast<uint8_t>(b)));
    m.byte_id_[b] = it == m.vocab_.end() ? -1 : it->second;
  }

  const auto merges = model.find("merges");
  if (merges == model.end()) return Bad(where, "merges", "missing");
  if (!merges->is_array()) return Bad(where, "merges", "must be an array");
  m.merges_.reserve(merges->size());
  std::string joined;
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const json& e = (*merges)[rank];
    std::string_view a, b;
    if (e.is_string()) {
      // Legacy "a b" form: exactly one space, as tokenizers requires.
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return Bad(where, absl::StrCat("merges[", rank, "]"),
                   absl::StrCat(Quoted(s), " is not two tokens separated by one space"));
      }
      a = std::string_view(s).substr(0, sp);
      b = std::string_view(s).substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get_ref<const std::string&>();
      b = e[1].get_ref<const std::string&>();
    } else {
      return Bad(where, absl::StrCat("merges[", rank, "]"),
                 "must be \"a b\" or a pair [\"a\", \"b\"] of strings");
    }
    const auto ia = m.vocab_.find(a);
    const auto ib = m.vocab_.find(b);
    if (ia == m.vocab_.end() || ib == m.vocab_.end()) {
      return Bad(
          where, absl::StrCat("merges[", rank, "]"),
          absl::StrCat("token ", Quoted(ia == m.vocab_.end() ? a : b), " is not in the vocab"));
    }
    joined.assign(a).append(b);
    const auto inew = m.vocab_.find(joined);
    if (inew == m.vocab_.end()) {
      return Bad(where, absl::StrCat("merges[", rank, "]"),
                 absl::StrCat("merged token ", Quoted(joined), " is not in the vocab"));
    }
    // A repeated pair keeps its last rank, as tokenizers' HashMap collect does.
    m.merges_.insert_or_assign(PairKey(ia->second, ib->second),
                               MergeTarget{static_cast<uint32_t>(rank), inew->second});
  }
  return m;
}

std::optional<int32_t> BpeModel::TokenId(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::EncodeWord(std::string_view bytes, std::vector<int32_t>& out) const {
  if (bytes.empty()) return;
  if (bytes.size() == 1 && byte_id_[static_cast<uint8_t>(bytes[0])] >= 0) {
    out.push_back(byte_id_[static_cast<uint8_t>(bytes[0])]);
    return;
  }
  if (ignore_merges_) {
    std::string word;
    alphabet_->Encode(bytes, word);
    if (const auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(bytes.size());
  // Characters missing from the vocabulary become unk (fused or not) or vanish, as in
  // tokenizers' merge_word.
  bool pending_unk = false;
  for (const char c : bytes) {
    const int32_t id = byte_id_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      if (pending_unk) symbols.push_back(*unk_id_);
      pending_unk = false;
      symbols.push_back(id);
    } else if (unk_id_.has_value()) {
      if (pending_unk && !fuse_unk_) symbols.push_back(*unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) symbols.push_back(*unk_id_);
  MergeAll(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

void BpeModel::MergeAll(std::vector<int32_t>& ids) const {
  const size_t n = ids.size();
  if (n < 2) return;
  struct Symbol {
    int32_t id;
    int64_t prev;
    int64_t next;
    bool removed;
  };
  struct Merge {
    size_t pos;
    uint32_t rank;
    int32_t new_id;
  };
  // Lowest rank first, then leftmost position (tokenizers' Merge ordering).
  const auto later = [](const Merge& x, const Merge& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  std::vector<Symbol> sym(n);
  for (size_t i = 0; i < n; ++i) {
    sym[i] = Symbol{ids[i], static_cast<int64_t>(i) - 1,
                    i + 1 < n ? static_cast<int64_t>(i + 1) : -1, false};
  }
  std::vector<Merge> heap_storage;
  heap_storage.reserve(n);
  std::priority_queue<Merge, std::vector<Merge>, decltype(later)> queue(later,
                                                                        std::move(heap_storage));
  for (size_t i = 0; i + 1 < n; ++i) {
    if (const MergeTarget* t = FindMerge(sym[i].id, sym[i + 1].id)) {
      queue.push(Merge{i, t->rank, t->new_id});
    }
  }
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = sym[top.pos];
    if (cur.removed || cur.next < 0) continue;
    const auto next_pos = static_cast<size_t>(cur.next);
    const Symbol right = sym[next_pos];
    // An entry is stale when the pair at its position no longer merges into the same token.
    const MergeTarget* t = FindMerge(cur.id, right.id);
    if (t == nullptr || t->new_id != top.new_id) continue;
    cur.id = top.new_id;
    cur.next = right.next;
    sym[next_pos].removed = true;
    if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = static_cast<int64_t>(top.pos);
    if (cur.prev >= 0) {
      const auto prev_pos = static_cast<size_t>(cur.prev);
      if (const MergeTarget* p = FindMerge(sym[prev_pos].id, cur.id)) {
        queue.push(Merge{prev_pos, p->rank, p->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const MergeTarget* p = FindMerge(cur.id, sym[static_cast<size_t>(cur.next)].id)) {
        queue.push(Merge{top.pos, p->rank, p->new_id});
      }
    }
  }
  ids.clear();
  for (const Symbol& s : sym) {
    if (!s.removed) ids.push_back(s.id);
  }
}

}  // namespace sparsefill::engine::tokenizer_internal
