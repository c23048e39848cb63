#include "services/rpc/convert.h"

#include "absl/strings/str_cat.h"
#include "sparsefill/common/status.h"

namespace sparsefill::rpc {
namespace {

absl::Status BadEnum(std::string_view field, int value, std::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat(AsAbsl(field), ": unknown value ", value, " (expected ", AsAbsl(expected), ")"));
}

absl::Status Positive(std::string_view field, std::string_view name, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(AsAbsl(field), ".", AsAbsl(name), ": must be positive, got ", value));
}

}  // namespace

absl::StatusOr<DType> DTypeFromProto(int proto_dtype, std::string_view field) {
  switch (proto_dtype) {
    case v1::DTYPE_F32:
      return DType::kF32;
    case v1::DTYPE_F16:
      return DType::kF16;
    case v1::DTYPE_BF16:
      return DType::kBF16;
    case v1::DTYPE_UNSPECIFIED:
      return absl::InvalidArgumentError(absl::StrCat(AsAbsl(field), ": unspecified"));
    default:
      return BadEnum(field, proto_dtype, "DTYPE_F32, DTYPE_F16 or DTYPE_BF16");
  }
}

v1::DType DTypeToProto(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return v1::DTYPE_F32;
    case DType::kF16:
      return v1::DTYPE_F16;
    case DType::kBF16:
      return v1::DTYPE_BF16;
  }
  return v1::DTYPE_UNSPECIFIED;
}

absl::StatusOr<std::optional<engine::Policy>> PolicyFromProto(int proto_policy,
                                                              std::string_view field) {
  switch (proto_policy) {
    case v1::POLICY_UNSPECIFIED:
      return std::optional<engine::Policy>();
    case v1::POLICY_DENSE:
      return std::optional<engine::Policy>(engine::Policy::kDense);
    case v1::POLICY_INFLLMV2:
      return std::optional<engine::Policy>(engine::Policy::kInfLlmV2);
    case v1::POLICY_PHSA:
      return std::optional<engine::Policy>(engine::Policy::kPhsa);
    case v1::POLICY_NOSA:
      return std::optional<engine::Policy>(engine::Policy::kNosa);
    default:
      return BadEnum(field, proto_policy,
                     "POLICY_UNSPECIFIED, POLICY_DENSE, POLICY_INFLLMV2, POLICY_PHSA or "
                     "POLICY_NOSA");
  }
}

v1::Policy PolicyToProto(engine::Policy policy) {
  switch (policy) {
    case engine::Policy::kDense:
      return v1::POLICY_DENSE;
    case engine::Policy::kInfLlmV2:
      return v1::POLICY_INFLLMV2;
    case engine::Policy::kPhsa:
      return v1::POLICY_PHSA;
    case engine::Policy::kNosa:
      return v1::POLICY_NOSA;
  }
  return v1::POLICY_UNSPECIFIED;
}

engine::Policy DefaultPolicy(const engine::ModelConfig& model) {
  return model.sparse.present ? engine::Policy::kInfLlmV2 : engine::Policy::kPhsa;
}

absl::StatusOr<engine::SelectionConfig> ApplySelectionOverrides(const v1::SelectionOverrides& o,
                                                                engine::SelectionConfig c) {
  SF_ASSIGN_OR_RETURN(const std::optional<engine::Policy> policy, PolicyFromProto(o.policy()));
  if (policy) c.policy = *policy;
  if (o.has_block_size()) c.block_size = o.block_size();
  if (o.has_kernel_size()) c.kernel_size = o.kernel_size();
  if (o.has_kernel_stride()) c.kernel_stride = o.kernel_stride();
  if (o.has_init_blocks()) c.init_blocks = o.init_blocks();
  if (o.has_local_tokens()) c.local_tokens = o.local_tokens();
  if (o.has_topk()) c.topk = o.topk();
  if (o.has_dense_below()) c.dense_below = o.dense_below();
  if (o.has_lambda()) c.lambda = o.lambda();
  if (o.has_nosa_query_aware()) c.nosa_query_aware = o.nosa_query_aware();
  if (o.has_nosa_observe()) c.nosa_observe = o.nosa_observe();
  // Validate says "selection config: <field> <why>" with the config's field names, which are
  // the proto's too: rewrite it as the request's field path "selection.<field>: <why>".
  const absl::Status valid = c.Validate();
  if (!valid.ok()) {
    std::string_view msg(valid.message().data(), valid.message().size());
    constexpr std::string_view kPrefix = "selection config: ";
    if (msg.substr(0, kPrefix.size()) == kPrefix) {
      msg.remove_prefix(kPrefix.size());
      const size_t space = msg.find(' ');
      if (space != std::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat("selection.", AsAbsl(msg.substr(0, space)),
                                                       ": ", AsAbsl(msg.substr(space + 1))));
      }
    }
    return absl::InvalidArgumentError(absl::StrCat("selection: ", AsAbsl(msg)));
  }
  return c;
}

absl::StatusOr<engine::SelectionConfig> ResolveSelection(const v1::SelectionOverrides& overrides,
                                                         const engine::ModelConfig& model) {
  SF_ASSIGN_OR_RETURN(const std::optional<engine::Policy> policy,
                      PolicyFromProto(overrides.policy()));
  return ApplySelectionOverrides(
      overrides, engine::SelectionConfig::ForPolicy(policy.value_or(DefaultPolicy(model)), model));
}

v1::SelectionOverrides SelectionToProto(const engine::SelectionConfig& c) {
  v1::SelectionOverrides o;
  o.set_policy(PolicyToProto(c.policy));
  o.set_block_size(c.block_size);
  o.set_kernel_size(c.kernel_size);
  o.set_kernel_stride(c.kernel_stride);
  o.set_init_blocks(c.init_blocks);
  o.set_local_tokens(c.local_tokens);
  o.set_topk(c.topk);
  o.set_dense_below(c.dense_below);
  o.set_lambda(c.lambda);
  o.set_nosa_query_aware(c.nosa_query_aware);
  o.set_nosa_observe(c.nosa_observe);
  return o;
}

v1::SparseConfigInfo SparseConfigToProto(const engine::SparseConfig& c) {
  v1::SparseConfigInfo p;
  p.set_kernel_size(c.kernel_size);
  p.set_kernel_stride(c.kernel_stride);
  p.set_init_blocks(c.init_blocks);
  p.set_block_size(c.block_size);
  p.set_window_size(c.window_size);
  p.set_topk(c.topk);
  p.set_dense_len(c.dense_len);
  return p;
}

engine::SparseConfig SparseConfigFromProto(const v1::SparseConfigInfo& p) {
  engine::SparseConfig c;
  c.present = true;
  c.kernel_size = p.kernel_size();
  c.kernel_stride = p.kernel_stride();
  c.init_blocks = p.init_blocks();
  c.block_size = p.block_size();
  c.window_size = p.window_size();
  c.topk = p.topk();
  c.dense_len = p.dense_len();
  return c;
}

absl::StatusOr<kvstore::CacheLayout> CacheLayoutFromProto(const v1::CacheLayout& p,
                                                          std::string_view field) {
  kvstore::CacheLayout layout;
  SF_ASSIGN_OR_RETURN(layout.dtype,
                      DTypeFromProto(p.dtype(), absl::StrCat(AsAbsl(field), ".dtype")));
  SF_RETURN_IF_ERROR(Positive(field, "num_layers", p.num_layers()));
  SF_RETURN_IF_ERROR(Positive(field, "kv_heads", p.kv_heads()));
  SF_RETURN_IF_ERROR(Positive(field, "head_dim", p.head_dim()));
  SF_RETURN_IF_ERROR(Positive(field, "block_size", p.block_size()));
  SF_RETURN_IF_ERROR(Positive(field, "num_tokens", p.num_tokens()));
  layout.num_layers = p.num_layers();
  layout.kv_heads = p.kv_heads();
  layout.head_dim = p.head_dim();
  layout.block_size = p.block_size();
  layout.num_tokens = p.num_tokens();
  return layout;
}

v1::CacheLayout CacheLayoutToProto(const kvstore::CacheLayout& layout) {
  v1::CacheLayout p;
  p.set_dtype(DTypeToProto(layout.dtype));
  p.set_num_layers(layout.num_layers);
  p.set_kv_heads(layout.kv_heads);
  p.set_head_dim(layout.head_dim);
  p.set_block_size(layout.block_size);
  p.set_num_tokens(layout.num_tokens);
  return p;
}

absl::StatusOr<kvstore::CacheId> CacheIdFromBytes(std::string_view bytes, std::string_view field) {
  if (bytes.size() != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(field), ": must be 16 bytes, got ", bytes.size()));
  }
  kvstore::CacheId id;
  for (int i = 0; i < 8; ++i) {
    id.hi = (id.hi << 8) | static_cast<unsigned char>(bytes[i]);
    id.lo = (id.lo << 8) | static_cast<unsigned char>(bytes[8 + i]);
  }
  return id;
}

std::string CacheIdToBytes(const kvstore::CacheId& id) {
  std::string bytes(16, '\0');
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<char>(id.hi >> (56 - 8 * i));
    bytes[8 + i] = static_cast<char>(id.lo >> (56 - 8 * i));
  }
  return bytes;
}

std::string CacheIdHex(const kvstore::CacheId& id) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(32, '0');
  for (int i = 0; i < 16; ++i) {
    hex[15 - i] = kDigits[(id.hi >> (4 * i)) & 0xf];
    hex[31 - i] = kDigits[(id.lo >> (4 * i)) & 0xf];
  }
  return hex;
}

absl::StatusOr<kvstore::Tier> TierFromProto(int proto_tier, std::string_view field) {
  switch (proto_tier) {
    case v1::TIER_DEVICE:
      return kvstore::Tier::kDevice;
    case v1::TIER_HOST:
      return kvstore::Tier::kHost;
    case v1::TIER_DISK:
      return kvstore::Tier::kDisk;
    case v1::TIER_UNSPECIFIED:
      return absl::InvalidArgumentError(absl::StrCat(AsAbsl(field), ": unspecified"));
    default:
      return BadEnum(field, proto_tier, "TIER_DEVICE, TIER_HOST or TIER_DISK");
  }
}

v1::Tier TierToProto(kvstore::Tier tier) {
  switch (tier) {
    case kvstore::Tier::kDevice:
      return v1::TIER_DEVICE;
    case kvstore::Tier::kHost:
      return v1::TIER_HOST;
    case kvstore::Tier::kDisk:
      return v1::TIER_DISK;
  }
  return v1::TIER_UNSPECIFIED;
}

}  // namespace sparsefill::rpc
