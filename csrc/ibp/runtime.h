// The CUDA driver and runtime this module runs with.
//
// _C links the CUDA runtime statically, so it needs a driver at least as new as
// the toolkit it was built with; an older driver makes every CUDA call fail
// (cudaErrorInsufficientDriver) while torch, built for an older CUDA, still
// sees the GPUs. cuda_versions() reports both versions so the Python layer can
// name them instead of silently finding no device.
#pragma once

namespace ibp {

struct CudaVersions {
  int driver;        // cudaDriverGetVersion (e.g. 12040 = 12.4; 0 = no driver), -1 without CUDA
  int runtime;       // cudaRuntimeGetVersion: the runtime linked in, -1 without CUDA
  int device_count;  // cudaGetDeviceCount (0 when it failed)
  int count_error;   // the cudaError_t of cudaGetDeviceCount (0 = success), -1 without CUDA
};

CudaVersions cuda_versions();

}  // namespace ibp
