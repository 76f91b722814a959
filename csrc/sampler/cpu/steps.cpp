// Host twins of the CUDA sampler's steps (neighbor.h): the per-element code of
// pick.h and relabel.h in serial loops over host pointers, so that
// ibp_gnn.sampler can drive the GPU algorithm on the CPU in tests. Also the
// stand-ins for the CUDA entry points when the module is built without nvcc.
#include "../neighbor.h"
#include "../relabel.h"

namespace ibp {
namespace sampler {

int neighbor_count_host(const CscView& g, const int64_t* frontier, uint64_t n, int64_t fanout,
                        bool replace, const PickMode& mode, const int64_t* bounds,
                        int64_t* counts) {
  with_csc_types(g, [&](const auto* indptr, const auto*) {
    for (uint64_t i = 0; i < n; ++i) {
      neighbor_count_one(indptr, frontier, i, fanout, replace, mode, bounds, counts);
    }
  });
  return 0;
}

int neighbor_pick_host(const CscView& g, const int64_t* frontier, uint64_t n,
                       uint64_t first_local, int64_t fanout, bool replace, uint64_t seed,
                       uint32_t hop, const PickMode& mode, const int64_t* bounds,
                       const int64_t* offsets, int64_t* edge, int64_t* nbr, int64_t* col) {
  with_csc_types(g, [&](const auto* indptr, const auto* indices) {
    for (uint64_t i = 0; i < n; ++i) {
      neighbor_pick_one(indptr, indices, frontier, i, first_local, fanout, replace, seed, hop,
                        mode, bounds, offsets, edge, nbr, col);
    }
  });
  return 0;
}

int relabel_insert_host(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base) {
  for (uint64_t j = 0; j < n; ++j) relabel_insert_one(t, ids, j, base);
  return 0;
}

int relabel_mark_host(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                      int64_t* first) {
  for (uint64_t j = 0; j < n; ++j) relabel_mark_one(t, ids, j, base, first);
  return 0;
}

int relabel_finish_host(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        const int64_t* rank, int64_t* row, int64_t* new_nodes) {
  for (uint64_t j = 0; j < n; ++j) relabel_finish_one(t, ids, j, base, rank, row, new_nodes);
  return 0;
}

int relabel_commit_host(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        const int64_t* rank) {
  for (uint64_t j = 0; j < n; ++j) relabel_commit_one(t, ids, j, base, rank);
  return 0;
}

#if !defined(IBP_WITH_CUDA)
int neighbor_count_cuda(const CscView&, const int64_t*, uint64_t, int64_t, bool, const PickMode&,
                        const int64_t*, int64_t*, void*) {
  return -1;
}
int neighbor_pick_cuda(const CscView&, const int64_t*, uint64_t, uint64_t, int64_t, bool, uint64_t,
                       uint32_t, const PickMode&, const int64_t*, const int64_t*, int64_t*,
                       int64_t*, int64_t*, void*) {
  return -1;
}
int relabel_insert_cuda(const RelabelTable&, const int64_t*, uint64_t, uint64_t, void*) {
  return -1;
}
int relabel_mark_cuda(const RelabelTable&, const int64_t*, uint64_t, uint64_t, int64_t*, void*) {
  return -1;
}
int relabel_finish_cuda(const RelabelTable&, const int64_t*, uint64_t, uint64_t, const int64_t*,
                        int64_t*, int64_t*, void*) {
  return -1;
}
int relabel_commit_cuda(const RelabelTable&, const int64_t*, uint64_t, uint64_t, const int64_t*,
                        void*) {
  return -1;
}
#endif

}  // namespace sampler
}  // namespace ibp
