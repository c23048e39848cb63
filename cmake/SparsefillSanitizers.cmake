# Sanitizer and fuzzer builds of sparsefill's own targets (tools/sanitize, tools/fuzz).
#   SPARSEFILL_SANITIZE=address,undefined | thread   gcc or clang; the unit/integration tests
#   SPARSEFILL_FUZZ=ON                                clang only; ASan+UBSan + libFuzzer coverage,
#                                                     builds tests/fuzz
# Third-party libraries (Debian's absl, protobuf, gRPC, RocksDB) stay uninstrumented: ASan and
# UBSan see our code, and TSan's few false positives there are suppressed in tools/sanitizers/.
set(SPARSEFILL_SANITIZE "" CACHE STRING "Sanitizers for sparsefill's own code: address,undefined | thread")
option(SPARSEFILL_FUZZ "Build the libFuzzer fuzzers in tests/fuzz (clang; ASan+UBSan)" OFF)

set(SPARSEFILL_SANITIZER_COMPILE_FLAGS "")
set(SPARSEFILL_SANITIZER_LINK_FLAGS "")

if(SPARSEFILL_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SPARSEFILL_FUZZ=ON needs clang (libFuzzer): configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang (tools/fuzz does)")
  endif()
  if(NOT SPARSEFILL_SERVICES)
    message(FATAL_ERROR "SPARSEFILL_FUZZ=ON needs SPARSEFILL_SERVICES=ON (the request and KV "
                        "chunk fuzzers link the services)")
  endif()
  if(SPARSEFILL_SANITIZE AND NOT SPARSEFILL_SANITIZE STREQUAL "address,undefined")
    message(FATAL_ERROR "SPARSEFILL_FUZZ=ON runs under address,undefined only")
  endif()
  set(SPARSEFILL_SANITIZE "address,undefined")
  # Coverage instrumentation everywhere; only the fuzzer executables link libFuzzer's main.
  list(APPEND SPARSEFILL_SANITIZER_COMPILE_FLAGS -fsanitize=fuzzer-no-link)
endif()

if(SPARSEFILL_SANITIZE STREQUAL "address,undefined")
  list(APPEND SPARSEFILL_SANITIZER_COMPILE_FLAGS
    -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
  list(APPEND SPARSEFILL_SANITIZER_LINK_FLAGS -fsanitize=address,undefined)
elseif(SPARSEFILL_SANITIZE STREQUAL "thread")
  list(APPEND SPARSEFILL_SANITIZER_COMPILE_FLAGS -fsanitize=thread -fno-omit-frame-pointer -g)
  list(APPEND SPARSEFILL_SANITIZER_LINK_FLAGS -fsanitize=thread)
elseif(SPARSEFILL_SANITIZE)
  message(FATAL_ERROR "SPARSEFILL_SANITIZE=${SPARSEFILL_SANITIZE}: expected \"address,undefined\" "
                      "or \"thread\"")
endif()
if(SPARSEFILL_SANITIZE)
  message(STATUS "sparsefill: sanitizers ${SPARSEFILL_SANITIZE} on sparsefill's own targets")
endif()

# Called by sf_apply_defaults for every sparsefill target (CXX sources only; CUDA stays as is).
function(sf_apply_sanitizers target)
  if(NOT SPARSEFILL_SANITIZE)
    return()
  endif()
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${SPARSEFILL_SANITIZER_COMPILE_FLAGS}>)
  # INTERFACE too, so every executable that links a sanitized library gets the runtime.
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    target_link_options(${target} PRIVATE ${SPARSEFILL_SANITIZER_LINK_FLAGS})
  else()
    target_link_options(${target} INTERFACE ${SPARSEFILL_SANITIZER_LINK_FLAGS})
  endif()
endfunction()
