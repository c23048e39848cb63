# `bench attention` (issue 5): attention kernels and block selection against torch SDPA and
# FlexAttention on one GPU. Included by tools/bench/CMakeLists.txt; paths relative to tools/bench.
# The bookkeeping (tile unions, pair counts) builds and is unit-tested everywhere; the subcommand
# itself only with the CUDA backend.
sf_cc_library(sparsefill_bench_attention_plan
  SRCS attention/attention_plan.cc
  DEPS sparsefill_common absl::status absl::statusor absl::strings)
sf_cc_test(bench_attention_plan_test
  SRCS attention/attention_plan_test.cc
  DEPS sparsefill_bench_attention_plan
  LABELS unit)
if(SPARSEFILL_HAVE_CUDA)
  list(APPEND SPARSEFILL_BENCH_SRCS attention/attention_command.cc attention/attention_inputs.cu
       attention/torch_runner.cc)
  list(APPEND SPARSEFILL_BENCH_DEPS sparsefill_bench_attention_plan sparsefill_kernels_cuda
       sparsefill_kernels_ref CUDA::cudart)
  list(APPEND SPARSEFILL_BENCH_DEFINES SPARSEFILL_BENCH_ATTENTION=1)
endif()
