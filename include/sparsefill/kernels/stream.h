// The CUDA stream type without including the CUDA runtime, so that kernel headers stay usable
// (and CPU references callable) in builds without CUDA.
#pragma once

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;  // NOLINT: identical to the CUDA runtime's typedef
