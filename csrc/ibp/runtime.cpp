// cuda_versions(): plain host calls into the CUDA runtime linked into _C.
#include "ibp/runtime.h"

#if defined(IBP_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace ibp {

#if defined(IBP_WITH_CUDA)
CudaVersions cuda_versions() {
  CudaVersions v{0, 0, 0, 0};
  if (cudaDriverGetVersion(&v.driver) != cudaSuccess) v.driver = 0;
  if (cudaRuntimeGetVersion(&v.runtime) != cudaSuccess) v.runtime = 0;
  const cudaError_t e = cudaGetDeviceCount(&v.device_count);
  if (e != cudaSuccess) {
    v.device_count = 0;
    v.count_error = static_cast<int>(e);
    cudaGetLastError();
  }
  return v;
}
#else
CudaVersions cuda_versions() { return CudaVersions{-1, -1, 0, -1}; }
#endif

}  // namespace ibp
