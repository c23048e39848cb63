#include "services/coordinator/selection_resolver.h"

#include "services/rpc/convert.h"
#include "sparsefill/common/status.h"

namespace sparsefill::coordinator {

absl::StatusOr<ResolvedSelection> ResolveSelection(const v1::SelectionOverrides& requested,
                                                   const v1::ModelInfo& model) {
  v1::SelectionOverrides with_policy = requested;
  if (with_policy.policy() == v1::POLICY_UNSPECIFIED) {
    with_policy.set_policy(model.default_policy() == v1::POLICY_UNSPECIFIED
                               ? v1::POLICY_PHSA
                               : model.default_policy());
  }
  // The facts the policy defaults depend on, as the worker described the model (the
  // coordinator never loads a checkpoint): shape, and a MiniCPM4-style sparse_config.
  engine::ModelConfig facts;
  if (model.has_sparse_config()) facts.sparse = rpc::SparseConfigFromProto(model.sparse_config());
  facts.num_layers = model.num_layers();
  facts.num_heads = model.q_heads();
  facts.num_kv_heads = model.kv_heads();
  facts.head_dim = model.head_dim();
  facts.vocab_size = model.vocab_size();
  SF_ASSIGN_OR_RETURN(const auto config, rpc::ResolveSelection(with_policy, facts));
  ResolvedSelection out;
  out.config = rpc::SelectionToProto(config);
  out.block_size = config.block_size;
  out.policy = std::string(engine::PolicyName(config.policy));
  return out;
}

}  // namespace sparsefill::coordinator
