// The CUDA gather-decoder compiled as host C++ for the emulation (the build
// force-includes cuda_emu.h first).
#include "ibp/cuda/gather.cu"
