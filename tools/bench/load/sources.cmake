# `bench load` and `bench soak` (issue 9 items 3-4): the real server processes on loopback, driven
# by the public client. The library is shared with tests/integration/load_test.cc and soak_test.cc.
if(SPARSEFILL_SERVICES AND TARGET sparsefill_client AND TARGET sparsefill_local_cluster)
  sf_cc_library(sparsefill_bench_load
    SRCS ${CMAKE_CURRENT_LIST_DIR}/cache_check.cc ${CMAKE_CURRENT_LIST_DIR}/cluster_setup.cc
         ${CMAKE_CURRENT_LIST_DIR}/load_run.cc ${CMAKE_CURRENT_LIST_DIR}/metrics_probe.cc
         ${CMAKE_CURRENT_LIST_DIR}/proc_stats.cc ${CMAKE_CURRENT_LIST_DIR}/soak_run.cc
         ${CMAKE_CURRENT_LIST_DIR}/workload.cc
    DEPS sparsefill_client sparsefill_local_cluster sparsefill_tool_io sparsefill_kvstore
         nlohmann_json::nlohmann_json absl::status absl::statusor absl::strings)
  list(APPEND SPARSEFILL_BENCH_SRCS ${CMAKE_CURRENT_LIST_DIR}/load_command.cc
       ${CMAKE_CURRENT_LIST_DIR}/soak_command.cc)
  list(APPEND SPARSEFILL_BENCH_DEPS sparsefill_bench_load)
  list(APPEND SPARSEFILL_BENCH_DEFINES SPARSEFILL_BENCH_LOAD=1)
endif()
