// Parameter checks shared by the rope reference and its CUDA launcher (private to kernels/).
#pragma once

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/kernels/rope.h"

namespace sparsefill::kernels {

// Dtype-agnostic: shapes, strides and pointers. InvalidArgument names the field.
inline absl::Status CheckRope(const RopeParams& p) {
  if (p.tokens < 0)
    return absl::InvalidArgumentError(absl::StrCat("Rope: tokens ", p.tokens, " < 0"));
  if (p.heads <= 0)
    return absl::InvalidArgumentError(absl::StrCat("Rope: heads ", p.heads, " <= 0"));
  if (p.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("Rope: head_dim ", p.head_dim, " <= 0"));
  }
  if (p.rotary_dim <= 0 || p.rotary_dim % 2 != 0 || p.rotary_dim > p.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Rope: rotary_dim ", p.rotary_dim, " must be even and in (0, head_dim ", p.head_dim, "]"));
  }
  if (!std::isfinite(p.attention_scaling)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Rope: attention_scaling ", p.attention_scaling, " is not finite"));
  }
  if (p.tokens > 0) {
    if (p.x == nullptr) return absl::InvalidArgumentError("Rope: x is null");
    if (p.positions == nullptr) return absl::InvalidArgumentError("Rope: positions is null");
    if (p.inv_freq == nullptr) return absl::InvalidArgumentError("Rope: inv_freq is null");
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
