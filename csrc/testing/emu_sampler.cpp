// The CUDA sampler steps compiled as host C++ for the emulation (the build
// force-includes cuda_emu.h first).
#include "sampler/cuda/neighbor.cu"
