// One launch macro for every kernel of the project, so each .cu source serves
// both builds: nvcc gets a triple-chevron launch; the CUDA-on-CPU emulation
// (csrc/testing/cuda_emu.h, built with -DIBP_CUDA_EMU) runs the kernel's
// threads as fibers on the calling thread before returning.
//   IBP_LAUNCH(kernel, grid, block, shared_bytes, stream, args...)
#pragma once

#include <cuda_runtime.h>

#if defined(IBP_CUDA_EMU)
#define IBP_LAUNCH(kernel, grid, block, shared_bytes, stream, ...)                        \
  ((void)(stream), ::ibp_emu::launch(#kernel, __FILE__, __LINE__, dim3(grid), dim3(block),   \
                                     shared_bytes, [&]() { kernel(__VA_ARGS__); }))
#else
#define IBP_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  kernel<<<grid, block, shared_bytes, stream>>>(__VA_ARGS__)
#endif
