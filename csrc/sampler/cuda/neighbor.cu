// CUDA steps of the neighbour sampler (contract in neighbor.h): one thread per
// frontier node (count, pick) or per picked edge (relabel), running the
// per-element code of pick.h / relabel.h that the CPU tests also run. The
// graph arrays are read where they lie: device memory, or page-locked host
// memory mapped into the device address space (zero-copy over the bus, so a
// graph larger than the GPU's memory can be sampled). Nothing here
// synchronises; the driver in ibp_gnn.sampler reads two counts per hop.
#include "../../ibp/cuda/launch.h"
#include "../neighbor.h"
#include "../relabel.h"

namespace ibp {
namespace sampler {
namespace {

constexpr unsigned kThreads = 256;

unsigned blocks_for(uint64_t n) {
  const uint64_t want = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(want < (1u << 20) ? want : (1u << 20));
}

__device__ __forceinline__ uint64_t first_index() {
  return blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x;
}
__device__ __forceinline__ uint64_t grid_stride() {
  return static_cast<uint64_t>(gridDim.x) * blockDim.x;
}

template <typename Ptr>
__global__ void count_kernel(const Ptr* __restrict__ indptr, const int64_t* __restrict__ frontier,
                             uint64_t n, int64_t fanout, bool replace, PickMode mode,
                             const int64_t* __restrict__ bounds, int64_t* counts) {
  for (uint64_t i = first_index(); i < n; i += grid_stride()) {
    neighbor_count_one(indptr, frontier, i, fanout, replace, mode, bounds, counts);
  }
}

template <typename Ptr, typename Id>
__global__ void pick_kernel(const Ptr* __restrict__ indptr, const Id* __restrict__ indices,
                            const int64_t* __restrict__ frontier, uint64_t n,
                            uint64_t first_local, int64_t fanout, bool replace, uint64_t seed,
                            uint32_t hop, PickMode mode, const int64_t* __restrict__ bounds,
                            const int64_t* __restrict__ offsets, int64_t* edge, int64_t* nbr,
                            int64_t* col) {
  for (uint64_t i = first_index(); i < n; i += grid_stride()) {
    neighbor_pick_one(indptr, indices, frontier, i, first_local, fanout, replace, seed, hop,
                      mode, bounds, offsets, edge, nbr, col);
  }
}

__global__ void insert_kernel(RelabelTable t, const int64_t* __restrict__ ids, uint64_t n,
                              uint64_t base) {
  for (uint64_t j = first_index(); j < n; j += grid_stride()) relabel_insert_one(t, ids, j, base);
}

__global__ void mark_kernel(RelabelTable t, const int64_t* __restrict__ ids, uint64_t n,
                            uint64_t base, int64_t* first) {
  for (uint64_t j = first_index(); j < n; j += grid_stride()) {
    relabel_mark_one(t, ids, j, base, first);
  }
}

__global__ void finish_kernel(RelabelTable t, const int64_t* __restrict__ ids, uint64_t n,
                              uint64_t base, const int64_t* __restrict__ rank, int64_t* row,
                              int64_t* new_nodes) {
  for (uint64_t j = first_index(); j < n; j += grid_stride()) {
    relabel_finish_one(t, ids, j, base, rank, row, new_nodes);
  }
}

__global__ void commit_kernel(RelabelTable t, const int64_t* __restrict__ ids, uint64_t n,
                              uint64_t base, const int64_t* __restrict__ rank) {
  for (uint64_t j = first_index(); j < n; j += grid_stride()) {
    relabel_commit_one(t, ids, j, base, rank);
  }
}

int launched() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

int neighbor_count_cuda(const CscView& g, const int64_t* frontier, uint64_t n, int64_t fanout,
                        bool replace, const PickMode& mode, const int64_t* bounds,
                        int64_t* counts, void* stream) {
  if (n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  if (g.indptr64) {
    IBP_LAUNCH(count_kernel, blocks_for(n), kThreads, 0, s,
               static_cast<const int64_t*>(g.indptr), frontier, n, fanout, replace, mode, bounds,
               counts);
  } else {
    IBP_LAUNCH(count_kernel, blocks_for(n), kThreads, 0, s,
               static_cast<const int32_t*>(g.indptr), frontier, n, fanout, replace, mode, bounds,
               counts);
  }
  return launched();
}

int neighbor_pick_cuda(const CscView& g, const int64_t* frontier, uint64_t n,
                       uint64_t first_local, int64_t fanout, bool replace, uint64_t seed,
                       uint32_t hop, const PickMode& mode, const int64_t* bounds,
                       const int64_t* offsets, int64_t* edge, int64_t* nbr, int64_t* col,
                       void* stream) {
  if (n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  with_csc_types(g, [&](const auto* indptr, const auto* indices) {
    IBP_LAUNCH(pick_kernel, blocks_for(n), kThreads, 0, s, indptr, indices, frontier, n,
               first_local, fanout, replace, seed, hop, mode, bounds, offsets, edge, nbr, col);
  });
  return launched();
}

int relabel_insert_cuda(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        void* stream) {
  if (n == 0) return 0;
  IBP_LAUNCH(insert_kernel, blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream), t, ids,
             n, base);
  return launched();
}

int relabel_mark_cuda(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                      int64_t* first, void* stream) {
  if (n == 0) return 0;
  IBP_LAUNCH(mark_kernel, blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream), t, ids,
             n, base, first);
  return launched();
}

int relabel_finish_cuda(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        const int64_t* rank, int64_t* row, int64_t* new_nodes, void* stream) {
  if (n == 0) return 0;
  IBP_LAUNCH(finish_kernel, blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream), t, ids,
             n, base, rank, row, new_nodes);
  return launched();
}

int relabel_commit_cuda(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        const int64_t* rank, void* stream) {
  if (n == 0) return 0;
  IBP_LAUNCH(commit_kernel, blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream), t, ids,
             n, base, rank);
  return launched();
}

}  // namespace sampler
}  // namespace ibp
