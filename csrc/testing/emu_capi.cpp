// C entry points of the emulated CUDA build (loaded with ctypes by
// ibp_gnn/emulation.py). They take host pointers, run the real kernels of
// csrc/ibp/cuda and csrc/sampler/cuda through cuda_emu.h, and return the
// cudaError_t of the launch, or -2 with a message in err when the kernel
// broke a rule of the CUDA execution model.
#include <cstring>
#include <string>

#include "ibp/format.h"
#include "ibp/gather.h"
#include "sampler/neighbor.h"

#include "cuda_emu.h"

#define IBP_EMU_API extern "C" __attribute__((visibility("default")))

namespace {

template <typename Fn>
int run(char* err, size_t errlen, const Fn& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    if (err && errlen) {
      std::strncpy(err, e.what(), errlen - 1);
      err[errlen - 1] = 0;
    }
    return -2;
  }
}

ibp::sampler::CscView csc(const void* indptr, int indptr64, const void* indices, int indices64,
                          uint64_t num_nodes, uint64_t num_edges) {
  return ibp::sampler::CscView{indptr, indices, indptr64 != 0, indices64 != 0, num_nodes,
                               num_edges};
}

}  // namespace

IBP_EMU_API int ibp_emu_sanitized() {
#if defined(__SANITIZE_ADDRESS__)
  return 1;
#else
  return 0;
#endif
}

IBP_EMU_API void ibp_emu_counters(uint64_t* out) {
  const ibp_emu::Counters c = ibp_emu::counters();
  const uint64_t v[] = {c.launches,        c.host_loads,       c.host_bytes,
                        c.sector_requests, c.distinct_sectors, c.round_trips};
  std::memcpy(out, v, sizeof v);
}

IBP_EMU_API void ibp_emu_reset_counters() { ibp_emu::reset_counters(); }

// The payload is the host memory whose traffic is counted.
IBP_EMU_API int ibp_emu_gather(const void* header, const uint32_t* table, const uint64_t* bases,
                               const void* rel, const uint32_t* payload, const void* ids,
                               int ids64, uint64_t n, const int64_t* positions, uint8_t* out,
                               char* err, size_t errlen) {
  return run(err, errlen, [&] {
    ibp::FileHeader h;
    std::memcpy(&h, header, sizeof h);
    const ibp::CompressedView c{geometry_of(h), table, bases, rel, payload};
    const ibp_emu::HostRange host(payload, 4 * c.geo.payload_words);
    return ibp::gather_cuda(c, ids, ids64 != 0, n, positions, out, nullptr);
  });
}

IBP_EMU_API int ibp_emu_neighbor_count(const void* indptr, int indptr64, const void* indices,
                                       int indices64, uint64_t num_nodes, uint64_t num_edges,
                                       const int64_t* frontier, uint64_t n, int64_t fanout,
                                       int replace, int64_t* counts, const double* wcum,
                                       const int64_t* etime, int last, const int64_t* bounds,
                                       char* err, size_t errlen) {
  return run(err, errlen, [&] {
    ibp::sampler::PickMode mode;
    mode.wcum = wcum;
    mode.etime = etime;
    mode.last = last != 0;
    return ibp::sampler::neighbor_count_cuda(
        csc(indptr, indptr64, indices, indices64, num_nodes, num_edges), frontier, n, fanout,
        replace != 0, mode, bounds, counts, nullptr);
  });
}

IBP_EMU_API int ibp_emu_neighbor_pick(const void* indptr, int indptr64, const void* indices,
                                      int indices64, uint64_t num_nodes, uint64_t num_edges,
                                      const int64_t* frontier, uint64_t n, uint64_t first_local,
                                      int64_t fanout, int replace, uint64_t seed, uint32_t hop,
                                      const int64_t* offsets, int64_t* edge, int64_t* nbr,
                                      int64_t* col, const double* wcum, const int64_t* etime,
                                      int last, const int64_t* bounds, char* err, size_t errlen) {
  return run(err, errlen, [&] {
    ibp::sampler::PickMode mode;
    mode.wcum = wcum;
    mode.etime = etime;
    mode.last = last != 0;
    return ibp::sampler::neighbor_pick_cuda(
        csc(indptr, indptr64, indices, indices64, num_nodes, num_edges), frontier, n,
        first_local, fanout, replace != 0, seed, hop, mode, bounds, offsets, edge, nbr, col,
        nullptr);
  });
}

IBP_EMU_API int ibp_emu_relabel_insert(uint64_t* keys, uint64_t* vals, uint64_t capacity,
                                       const int64_t* ids, uint64_t n, uint64_t base, char* err,
                                       size_t errlen) {
  return run(err, errlen, [&] {
    return ibp::sampler::relabel_insert_cuda({keys, vals, capacity}, ids, n, base, nullptr);
  });
}

IBP_EMU_API int ibp_emu_relabel_mark(uint64_t* keys, uint64_t* vals, uint64_t capacity,
                                     const int64_t* ids, uint64_t n, uint64_t base,
                                     int64_t* first, char* err, size_t errlen) {
  return run(err, errlen, [&] {
    return ibp::sampler::relabel_mark_cuda({keys, vals, capacity}, ids, n, base, first, nullptr);
  });
}

IBP_EMU_API int ibp_emu_relabel_finish(uint64_t* keys, uint64_t* vals, uint64_t capacity,
                                       const int64_t* ids, uint64_t n, uint64_t base,
                                       const int64_t* rank, int64_t* row, int64_t* new_nodes,
                                       char* err, size_t errlen) {
  return run(err, errlen, [&] {
    return ibp::sampler::relabel_finish_cuda({keys, vals, capacity}, ids, n, base, rank, row,
                                             new_nodes, nullptr);
  });
}

IBP_EMU_API int ibp_emu_relabel_commit(uint64_t* keys, uint64_t* vals, uint64_t capacity,
                                       const int64_t* ids, uint64_t n, uint64_t base,
                                       const int64_t* rank, char* err, size_t errlen) {
  return run(err, errlen, [&] {
    return ibp::sampler::relabel_commit_cuda({keys, vals, capacity}, ids, n, base, rank,
                                             nullptr);
  });
}
