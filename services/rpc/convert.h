// proto <-> domain types shared with the engine and the KV store. Every bad value is
// INVALID_ARGUMENT naming the field path as the API spells it ("selection.block_size").
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sparsefill/common/dtype.h"
#include "sparsefill/engine/model_config.h"
#include "sparsefill/engine/selection.h"
#include "sparsefill/kvstore/layout.h"
#include "sparsefill/v1/common.pb.h"
#include "sparsefill/v1/coordinator.pb.h"

namespace sparsefill::rpc {

namespace v1 = ::sparsefill::v1;

// DTYPE_UNSPECIFIED and values outside the enum are InvalidArgument naming `field`.
absl::StatusOr<DType> DTypeFromProto(int proto_dtype, std::string_view field = "dtype");
v1::DType DTypeToProto(DType dtype);

// POLICY_UNSPECIFIED -> nullopt (the model's default); out-of-range values are InvalidArgument.
absl::StatusOr<std::optional<engine::Policy>> PolicyFromProto(
    int proto_policy, std::string_view field = "selection.policy");
v1::Policy PolicyToProto(engine::Policy policy);

// The policy a model gets when the request leaves it unspecified: InfLLM-V2 for checkpoints
// with a sparse_config (MiniCPM4-style), else PHSA.
engine::Policy DefaultPolicy(const engine::ModelConfig& model);

// `base` with every set field of `overrides` applied (a set policy replaces only the policy
// field), then Validate()d. InvalidArgument names the field ("selection.topk: ...").
absl::StatusOr<engine::SelectionConfig> ApplySelectionOverrides(
    const v1::SelectionOverrides& overrides, engine::SelectionConfig base);

// What the coordinator resolves once per request: the policy (the override's, else the model's
// default) with that policy's defaults for `model`, then the overrides.
absl::StatusOr<engine::SelectionConfig> ResolveSelection(const v1::SelectionOverrides& overrides,
                                                         const engine::ModelConfig& model);

// Every field set: the fully resolved form the coordinator sends to workers.
v1::SelectionOverrides SelectionToProto(const engine::SelectionConfig& config);

// A checkpoint's MiniCPM4 sparse_config as ModelInfo carries it (workers describe models; the
// coordinator, which never loads one, resolves policy defaults from it). FromProto sets present.
v1::SparseConfigInfo SparseConfigToProto(const engine::SparseConfig& config);
engine::SparseConfig SparseConfigFromProto(const v1::SparseConfigInfo& info);

// Fields copied; dtype checked; non-positive sizes are InvalidArgument naming `field`.<name>.
absl::StatusOr<kvstore::CacheLayout> CacheLayoutFromProto(const v1::CacheLayout& layout,
                                                          std::string_view field = "layout");
v1::CacheLayout CacheLayoutToProto(const kvstore::CacheLayout& layout);

// Cache ids travel as exactly 16 bytes, big-endian (hi then lo: the bytes in hex are ToHex()).
absl::StatusOr<kvstore::CacheId> CacheIdFromBytes(std::string_view bytes,
                                                  std::string_view field = "cache_id");
std::string CacheIdToBytes(const kvstore::CacheId& id);
// 32 lowercase hex digits, as CacheId::ToHex (kept here so clients need not link the KV store).
std::string CacheIdHex(const kvstore::CacheId& id);

absl::StatusOr<kvstore::Tier> TierFromProto(int proto_tier, std::string_view field = "tier");
v1::Tier TierToProto(kvstore::Tier tier);

}  // namespace sparsefill::rpc
