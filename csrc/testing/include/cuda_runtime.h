// Stands in for the CUDA runtime header when the .cu sources are compiled as
// host C++ for the emulation (csrc/testing/cuda_emu.h).
#pragma once
#include "../cuda_emu.h"
