# `bench prefill`: the cuda engine end to end against a dense PyTorch reference (CUDA builds).
if(SPARSEFILL_HAVE_CUDA AND TARGET sparsefill_engine)
  list(APPEND SPARSEFILL_BENCH_SRCS prefill/prefill_command.cc prefill/gpu_memory.cc)
  list(APPEND SPARSEFILL_BENCH_DEPS sparsefill_engine sparsefill_engine_cuda CUDA::cudart)
  list(APPEND SPARSEFILL_BENCH_DEFINES SPARSEFILL_BENCH_PREFILL=1)
endif()
