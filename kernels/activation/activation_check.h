// Parameter checks shared by the activation reference and its CUDA launcher (private to kernels/).
#pragma once

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sparsefill/kernels/activation.h"

namespace sparsefill::kernels {

// Dtype-agnostic: shapes, strides and pointers. InvalidArgument names the field.
inline absl::Status CheckSwiGlu(const SwiGluParams& p) {
  if (p.rows < 0) return absl::InvalidArgumentError(absl::StrCat("SwiGlu: rows ", p.rows, " < 0"));
  if (p.dim <= 0) return absl::InvalidArgumentError(absl::StrCat("SwiGlu: dim ", p.dim, " <= 0"));
  if (p.gate_stride < p.dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("SwiGlu: gate_stride ", p.gate_stride, " < dim ", p.dim));
  }
  if (p.up_stride < p.dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("SwiGlu: up_stride ", p.up_stride, " < dim ", p.dim));
  }
  if (p.out_stride < p.dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("SwiGlu: out_stride ", p.out_stride, " < dim ", p.dim));
  }
  if (p.rows > 0) {
    if (p.gate == nullptr) return absl::InvalidArgumentError("SwiGlu: gate is null");
    if (p.up == nullptr) return absl::InvalidArgumentError("SwiGlu: up is null");
    if (p.out == nullptr) return absl::InvalidArgumentError("SwiGlu: out is null");
    if (p.out == p.gate && p.out_stride != p.gate_stride) {
      return absl::InvalidArgumentError(absl::StrCat("SwiGlu: out aliases gate but out_stride ",
                                                     p.out_stride, " != gate_stride ",
                                                     p.gate_stride));
    }
    if (p.out == p.up && p.out_stride != p.up_stride) {
      return absl::InvalidArgumentError(absl::StrCat("SwiGlu: out aliases up but out_stride ",
                                                     p.out_stride, " != up_stride ", p.up_stride));
    }
  }
  return absl::OkStatus();
}

}  // namespace sparsefill::kernels
