// Manifest wire format (little-endian, versioned, trailing xxh64 over everything before it):
//   "SFKVMAN\0" u32 version | u64 id.hi u64 id.lo | str model | str tenant |
//   u8 dtype i32 layers i32 kv_heads i32 head_dim i32 block_size i64 num_tokens |
//   u8 state i64 created_ms i64 expires_ms | u32 n + n x u8 layers_written |
//   u64 n + n x (u8 tier, u8 hot, u64 checksum) | u64 xxh64
// A PENDING manifest may carry no layers/blocks (only the header is needed to clean it up after
// a crash); a READY one carries all of them.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"
#include "sparsefill/kvstore/kv_store.h"
#include "xxhash.h"

namespace sparsefill::kvstore {
namespace {

constexpr char kMagic[8] = {'S', 'F', 'K', 'V', 'M', 'A', 'N', '\0'};
constexpr uint32_t kVersion = 1;
constexpr size_t kBlockRecordBytes = 10;
constexpr uint32_t kMaxStringBytes = 1 << 16;

class Writer {
 public:
  void Bytes(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  template <typename T>
  void Pod(T v) {
    Bytes(&v, sizeof(v));  // the build targets little-endian hosts only (x86-64, aarch64)
  }
  void Str(const std::string& s) {
    Pod(static_cast<uint32_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  absl::Status Bytes(void* p, size_t n, std::string_view field) {
    if (n > in_.size() - pos_) {
      return absl::DataLossError(absl::StrCat("manifest truncated at ", AsAbsl(field), " (offset ",
                                              pos_, ", need ", n, " of ", in_.size() - pos_,
                                              " bytes left)"));
    }
    if (n == 0) return absl::OkStatus();  // p may be an empty vector's null data()
    std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Pod(T* v, std::string_view field) {
    return Bytes(v, sizeof(T), field);
  }
  absl::Status Str(std::string* s, std::string_view field) {
    uint32_t n = 0;
    SF_RETURN_IF_ERROR(Pod(&n, field));
    if (n > kMaxStringBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest ", AsAbsl(field), " length ", n, " exceeds ", kMaxStringBytes));
    }
    s->resize(n);
    return Bytes(s->data(), n, field);
  }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace

std::string_view CacheStateName(CacheState s) {
  switch (s) {
    case CacheState::kPending:
      return "PENDING";
    case CacheState::kReady:
      return "READY";
  }
  return "UNKNOWN";
}

std::string Manifest::Serialize() const {
  Writer w;
  w.Bytes(kMagic, sizeof(kMagic));
  w.Pod(kVersion);
  w.Pod(id.hi);
  w.Pod(id.lo);
  w.Str(model);
  w.Str(tenant);
  w.Pod(static_cast<uint8_t>(layout.dtype));
  w.Pod(layout.num_layers);
  w.Pod(layout.kv_heads);
  w.Pod(layout.head_dim);
  w.Pod(layout.block_size);
  w.Pod(layout.num_tokens);
  w.Pod(static_cast<uint8_t>(state));
  w.Pod(created_unix_ms);
  w.Pod(expires_unix_ms);
  w.Pod(static_cast<uint32_t>(layers_written.size()));
  w.Bytes(layers_written.data(), layers_written.size());
  w.Pod(static_cast<uint64_t>(blocks.size()));
  w.out().reserve(w.out().size() + blocks.size() * kBlockRecordBytes + 8);
  for (const BlockMeta& b : blocks) {
    w.Pod(static_cast<uint8_t>(b.tier));
    w.Pod(static_cast<uint8_t>(b.hot ? 1 : 0));
    w.Pod(b.checksum);
  }
  w.Pod(static_cast<uint64_t>(XXH64(w.out().data(), w.out().size(), 0)));
  return std::move(w.out());
}

absl::StatusOr<Manifest> Manifest::Parse(std::string_view bytes) {
  if (bytes.size() < sizeof(kMagic) + sizeof(uint32_t) + sizeof(uint64_t)) {
    return absl::DataLossError(
        absl::StrCat("manifest truncated: ", bytes.size(), " bytes is shorter than its header"));
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError("manifest has a bad magic (not a sparsefill KV manifest)");
  }
  uint64_t stored_sum = 0;
  std::memcpy(&stored_sum, bytes.data() + bytes.size() - 8, 8);
  const std::string_view body = bytes.substr(0, bytes.size() - 8);
  if (XXH64(body.data(), body.size(), 0) != stored_sum) {
    return absl::DataLossError(absl::StrCat("manifest checksum mismatch over ", body.size(),
                                            " bytes (garbled or truncated)"));
  }
  Reader r(body.substr(sizeof(kMagic)));
  uint32_t version = 0;
  SF_RETURN_IF_ERROR(r.Pod(&version, "version"));
  if (version != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest version ", version, " is not supported (expected ", kVersion, ")"));
  }
  Manifest m;
  SF_RETURN_IF_ERROR(r.Pod(&m.id.hi, "id"));
  SF_RETURN_IF_ERROR(r.Pod(&m.id.lo, "id"));
  SF_RETURN_IF_ERROR(r.Str(&m.model, "model"));
  SF_RETURN_IF_ERROR(r.Str(&m.tenant, "tenant"));
  uint8_t dtype = 0;
  SF_RETURN_IF_ERROR(r.Pod(&dtype, "dtype"));
  m.layout.dtype = static_cast<DType>(dtype);
  SF_RETURN_IF_ERROR(r.Pod(&m.layout.num_layers, "num_layers"));
  SF_RETURN_IF_ERROR(r.Pod(&m.layout.kv_heads, "kv_heads"));
  SF_RETURN_IF_ERROR(r.Pod(&m.layout.head_dim, "head_dim"));
  SF_RETURN_IF_ERROR(r.Pod(&m.layout.block_size, "block_size"));
  SF_RETURN_IF_ERROR(r.Pod(&m.layout.num_tokens, "num_tokens"));
  if (absl::Status s = m.layout.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("manifest ", s.message()));
  }
  uint8_t state = 0;
  SF_RETURN_IF_ERROR(r.Pod(&state, "state"));
  if (state > static_cast<uint8_t>(CacheState::kReady)) {
    return absl::InvalidArgumentError(absl::StrCat("manifest state ", int{state}, " is unknown"));
  }
  m.state = static_cast<CacheState>(state);
  SF_RETURN_IF_ERROR(r.Pod(&m.created_unix_ms, "created_unix_ms"));
  SF_RETURN_IF_ERROR(r.Pod(&m.expires_unix_ms, "expires_unix_ms"));

  uint32_t n_layers = 0;
  SF_RETURN_IF_ERROR(r.Pod(&n_layers, "layers_written count"));
  const bool header_only_ok = m.state == CacheState::kPending;
  if (n_layers != static_cast<uint32_t>(m.layout.num_layers) &&
      !(header_only_ok && n_layers == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest layers_written has ", n_layers, " entries for ", m.layout.num_layers, " layers"));
  }
  m.layers_written.resize(n_layers);
  SF_RETURN_IF_ERROR(r.Bytes(m.layers_written.data(), n_layers, "layers_written"));
  for (uint32_t l = 0; l < n_layers; ++l) {
    if (m.layers_written[l] > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest layers_written[", l, "] = ", int{m.layers_written[l]}));
    }
  }

  uint64_t n_blocks = 0;
  SF_RETURN_IF_ERROR(r.Pod(&n_blocks, "block count"));
  const uint64_t want = static_cast<uint64_t>(m.layout.total_blocks());
  if (n_blocks != want && !(header_only_ok && n_blocks == 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest has ", n_blocks, " block entries; the layout has ", want));
  }
  if (n_blocks > r.remaining() / kBlockRecordBytes) {
    return absl::DataLossError(absl::StrCat("manifest truncated in its ", n_blocks,
                                            " block entries (", r.remaining(), " bytes left)"));
  }
  m.blocks.resize(n_blocks);
  for (uint64_t i = 0; i < n_blocks; ++i) {
    uint8_t tier = 0, hot = 0;
    SF_RETURN_IF_ERROR(r.Pod(&tier, "block tier"));
    SF_RETURN_IF_ERROR(r.Pod(&hot, "block hot flag"));
    SF_RETURN_IF_ERROR(r.Pod(&m.blocks[i].checksum, "block checksum"));
    if (tier > static_cast<uint8_t>(Tier::kDisk) || hot > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest block entry ", i, " has tier ", int{tier}, " hot ", int{hot}));
    }
    m.blocks[i].tier = static_cast<Tier>(tier);
    m.blocks[i].hot = hot != 0;
  }
  if (r.remaining() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest has ", r.remaining(), " trailing bytes after its block entries"));
  }
  return m;
}

}  // namespace sparsefill::kvstore
