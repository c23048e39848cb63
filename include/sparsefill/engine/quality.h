// Quality of sparse prefill against dense attention on the same inputs (DESIGN §4):
// information loss, sparsity, relative L2 of outputs, KL of next-token distributions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sparsefill/kernels/attention.h"

namespace sparsefill::engine {

// Sum of per-(query head, query) losses and how many there were, so that layers (and shards)
// can be combined before averaging.
struct InformationLossSum {
  double sum = 0.0;
  int64_t count = 0;
  double mean() const { return count > 0 ? sum / static_cast<double>(count) : 0.0; }
};

// For every query head and query of `p` (fp32 q and k; v, out and lse are not used): the causal
// dense softmax mass that falls on keys outside the selected blocks of its KV head. Exactly 0 for
// a query whose list covers all its causal keys. InvalidArgument for bad shapes or a list entry
// outside [0, the query's block] (other than -1 padding); duplicate entries count once.
absl::StatusOr<InformationLossSum> InformationLoss(const kernels::AttentionParams& p,
                                                   const kernels::BlockSelection& sel);
// The same over some of the queries only: `rows` are indices into p's queries (0 .. num_q - 1,
// strictly increasing; `sel` still holds the lists of all num_q queries). count is rows.size() x
// q_heads. InvalidArgument names the first row out of range or out of order.
absl::StatusOr<InformationLossSum> InformationLoss(const kernels::AttentionParams& p,
                                                   const kernels::BlockSelection& sel,
                                                   std::span<const int64_t> rows);

// The query positions of a prompt of `num_tokens` on which a sampled information loss is
// measured: a stratified sample, one position from each of `count` strata of consecutive
// positions (stratum i = [floor(i n / count), floor((i + 1) n / count))) at a fixed
// pseudo-random offset inside it. The strata spread the sample over the whole prompt (a query's
// loss grows with its position: early queries see all their keys), the offset keeps it from
// locking onto one position inside every block, and the sample is the same for every rank and
// every run. Every position when count < 0 or count >= num_tokens. Sorted and distinct.
std::vector<int64_t> InformationLossPositions(int64_t num_tokens, int64_t count);
// OK for a positive count or kEveryQuery (-1); else InvalidArgument naming
// information_loss_queries (PrefillOptions, ModelRunner::RunOptions).
absl::Status CheckInformationLossQueries(int64_t count);

// ||got - ref|| / ||ref|| (0 when both are zero, +inf when only ref is); InvalidArgument when the
// sizes differ. NaN in either input gives NaN.
absl::StatusOr<double> RelativeL2(std::span<const float> got, std::span<const float> ref);

// Mean over rows of KL(softmax(dense) || softmax(sparse)) in nats; logits [rows, vocab] each,
// log-softmax in double.
absl::StatusOr<double> NextTokenKl(std::span<const float> dense_logits,
                                   std::span<const float> sparse_logits, int64_t rows,
                                   int64_t vocab);

// One layer of one prefill.
struct LayerQualityStats {
  int32_t layer = 0;
  int64_t selected_keys = 0;  // summed over KV heads and queries
  int64_t causal_keys = 0;
  InformationLossSum info_loss;
  double output_rel_l2 = 0.0;  // attention output vs dense; 0 when not measured

  double sparsity() const {
    return causal_keys > 0 ? 1.0 - static_cast<double>(selected_keys) / causal_keys : 0.0;
  }
};

struct QualitySummary {
  int32_t layers = 0;
  int64_t selected_keys = 0;
  int64_t causal_keys = 0;
  double sparsity = 0.0;   // 1 - selected / causal over all layers
  double info_loss = 0.0;  // mean over layers, heads and queries
  double max_layer_info_loss = 0.0;
  double mean_output_rel_l2 = 0.0;   // mean over layers
  double final_hidden_rel_l2 = 0.0;  // set by the caller
  double next_token_kl = 0.0;        // set by the caller

  std::string ToString() const;
};

QualitySummary Summarize(std::span<const LayerQualityStats> layers);

}  // namespace sparsefill::engine
