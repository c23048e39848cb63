# Small wrappers so every target gets the same warnings, include paths and labels.
set(SPARSEFILL_WARNINGS -Wall -Wextra -Wno-unused-parameter)
# x86-64-v3 (AVX2 + FMA) when the build machine has it: the CPU backend's loops vectorise 2-4x
# wider. Binaries built here run on any machine of that level (CI, the GPU hosts).
set(SPARSEFILL_CPU_ARCH_FLAGS "")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64" AND EXISTS /proc/cpuinfo)
  file(READ /proc/cpuinfo SPARSEFILL_CPUINFO)
  if(SPARSEFILL_CPUINFO MATCHES " avx2 " AND SPARSEFILL_CPUINFO MATCHES " fma ")
    set(SPARSEFILL_CPU_ARCH_FLAGS -march=x86-64-v3)
  endif()
endif()
if(SPARSEFILL_WERROR)
  list(APPEND SPARSEFILL_WARNINGS -Werror)
endif()

function(sf_apply_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${SPARSEFILL_WARNINGS} ${SPARSEFILL_CPU_ARCH_FLAGS}>
    $<$<COMPILE_LANGUAGE:CUDA>:${SPARSEFILL_CUDA_GENCODE} --expt-relaxed-constexpr -Xcompiler=-Wall -Werror=all-warnings>)
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
  if(COMMAND sf_apply_sanitizers)  # cmake/SparsefillSanitizers.cmake
    sf_apply_sanitizers(${target})
  endif()
endfunction()

# sf_cc_library(NAME SRCS ... [DEPS public deps...] [PRIVATE_DEPS ...])
function(sf_cc_library name)
  cmake_parse_arguments(A "" "" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${A_SRCS})
  sf_apply_defaults(${name})
  target_link_libraries(${name} PUBLIC ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
endfunction()

# sf_cc_binary(NAME SRCS ... [DEPS ...] [OUTPUT_NAME name])
function(sf_cc_binary name)
  cmake_parse_arguments(A "" "OUTPUT_NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${A_SRCS})
  sf_apply_defaults(${name})
  target_link_libraries(${name} PRIVATE ${A_DEPS})
  if(A_OUTPUT_NAME)
    set_target_properties(${name} PROPERTIES OUTPUT_NAME ${A_OUTPUT_NAME})
  endif()
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
endfunction()

# sf_cc_test(NAME SRCS ... [DEPS ...] [LABELS unit|integration|gpu] [TIMEOUT s])
# Tests run from the source root so fixtures resolve as tests/fixtures/...;
# SPARSEFILL_SHARED_DATA points at ../shared/data when it exists.
function(sf_cc_test name)
  cmake_parse_arguments(A "" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT A_LABELS)
    set(A_LABELS unit)
  endif()
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 600)
  endif()
  add_executable(${name} ${A_SRCS})
  sf_apply_defaults(${name})
  target_link_libraries(${name} PRIVATE ${A_DEPS} sparsefill_testing GTest::gtest GTest::gmock GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT}
      ENVIRONMENT "SPARSEFILL_BIN_DIR=${PROJECT_BINARY_DIR}/bin;SPARSEFILL_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
    DISCOVERY_TIMEOUT 60)
endfunction()
include(GoogleTest)
