// Parameter checks shared by the norm reference and its CUDA launcher (private to kernels/).
#pragma once

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/kernels/norm.h"

namespace sparsefill::kernels {

// Dtype-agnostic: shapes, strides and pointers. InvalidArgument names the field.
inline absl::Status CheckRmsNorm(const RmsNormParams& p) {
  if (p.rows < 0) return absl::InvalidArgumentError(absl::StrCat("RmsNorm: rows ", p.rows, " < 0"));
  if (p.dim <= 0) return absl::InvalidArgumentError(absl::StrCat("RmsNorm: dim ", p.dim, " <= 0"));
  if (p.x_stride < p.dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("RmsNorm: x_stride ", p.x_stride, " < dim ", p.dim));
  }
  if (p.out_stride < p.dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("RmsNorm: out_stride ", p.out_stride, " < dim ", p.dim));
  }
  if (!(p.eps >= 0.0f) || !std::isfinite(p.eps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RmsNorm: eps ", p.eps, " must be finite, >= 0"));
  }
  if (p.rows > 0) {
    if (p.x == nullptr) return absl::InvalidArgumentError("RmsNorm: x is null");
    if (p.weight == nullptr) return absl::InvalidArgumentError("RmsNorm: weight is null");
    if (p.out == nullptr) return absl::InvalidArgumentError("RmsNorm: out is null");
    if (p.out == p.x && p.out_stride != p.x_stride) {
      return absl::InvalidArgumentError(
          absl::StrCat("RmsNorm: in place (out == x) needs out_stride == x_stride, got ",
                       p.out_stride, " and ", p.x_stride));
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
