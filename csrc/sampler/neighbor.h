// neighbor_sample: uniform multi-hop neighbour sampling over a CSC graph held
// in host memory (or, for the CUDA steps, in pinned host or device memory).
//
// Graph. The in-neighbours of node v are indices[indptr[v] .. indptr[v+1]);
// indptr has num_nodes + 1 entries (int32, or int64 for graphs of 2^31 edges
// or more), indices has num_edges node ids (int32 or int64). A CSR graph works
// the same way and samples out-neighbours.
//
// Output layout (PyG's SamplerOutput, directed sampling):
//   node  the sampled nodes, global ids: the seeds exactly as given (duplicates
//         kept, each seed sampled at its own position), then the nodes first
//         reached at hop 1 in order of first appearance, then hop 2, ...
//   row   per sampled edge, the local index (into node) of the neighbour picked;
//   col   per sampled edge, the local index of the node it was picked for;
//   edge  per sampled edge, its CSC position (index into indices);
//   num_sampled_nodes  [num_seeds, new nodes of hop 1, ...]  (num_hops + 1)
//   num_sampled_edges  [edges of hop 1, ...]                  (num_hops)
//   batch (disjoint sampling only) per node, the index of the seed whose tree
//         it belongs to; nodes are then keyed by (seed index, global id)
// Edges are ordered hop by hop, then by col, then in pick order. A node whose
// local index appears more than once (a duplicated seed) maps to its first
// position (not in disjoint sampling, where every seed is its own root). DGL
// blocks are prefixes of this layout (see ibp_gnn.sampler).
//
// Randomness. Every pick is a pure function of (seed, hop, local index of the
// node sampled from, draw number) -- see pick.h -- so the result depends on
// neither the thread count nor the backend: the CPU sampler and the CUDA steps
// give identical outputs for the same seed.
//
// The caller (ibp_gnn.sampler) checks the graph once with validate_csc() and
// every seed batch against num_nodes; the functions below trust their inputs.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "pick.h"

namespace ibp {
namespace sampler {

struct CscView {
  const void* indptr;   // num_nodes + 1 offsets: int64 when indptr64, else int32
  const void* indices;  // num_edges node ids: int64 when indices64, else int32
  bool indptr64;
  bool indices64;
  uint64_t num_nodes;
  uint64_t num_edges;
};

struct SampleOptions {
  const int64_t* fanouts;  // per hop: picks per node, -1 = all neighbours
  uint32_t num_hops;
  bool replace;            // draw with replacement (fan-out -1 still takes each once)
  uint64_t seed;
  // Disjoint: every seed grows its own tree. A node is keyed by (seed index,
  // global id): the same global id reached from two seeds gets two local
  // indices, and batch[i] is the seed index of local node i.
  bool disjoint = false;
  // Weighted / temporal picks (pick.h). seed_time: per seed, the bound on the
  // times of the neighbours of every node of its tree (needs disjoint beyond
  // one hop).
  PickMode mode{};
  const int64_t* seed_time = nullptr;
};

// An allocator whose resize() leaves new elements uninitialised: the output
// arrays are written exactly once, so zero-filling them first is wasted time.
template <typename T>
struct UninitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <typename U>
  UninitAllocator(const UninitAllocator<U>&) {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using IdVector = std::vector<int64_t, UninitAllocator<int64_t>>;

struct NeighborSample {
  IdVector node, row, col, edge;
  IdVector batch;  // disjoint sampling only: the seed index of each node
  std::vector<int64_t> num_sampled_nodes, num_sampled_edges;
};

// Multithreaded CPU sampler (std::thread; the binding releases the GIL). It
// uses up to num_threads threads where the sample is large enough to gain from
// them (cpu/neighbor.cpp); exact_threads forces num_threads (for tests).
void neighbor_sample_cpu(const CscView& g, const int64_t* seeds, uint64_t num_seeds,
                         const SampleOptions& opt, int num_threads, NeighborSample* out,
                         bool exact_threads = false);

// Structural check of a CSC graph, run once per graph. On failure `where` is
// the first offending position: the indptr index for kIndptrFirst (0),
// kIndptrDecreasing (i with indptr[i] > indptr[i + 1]) and kIndptrLast
// (num_nodes), the indices index for kIndexOutOfRange.
enum class CscStatus : int {
  kOk = 0,
  kIndptrFirst = 1,       // indptr[0] != 0
  kIndptrDecreasing = 2,  // indptr[i] > indptr[i + 1]
  kIndptrLast = 3,        // indptr[num_nodes] != num_edges
  kIndexOutOfRange = 4,   // indices[e] < 0 or >= num_nodes
};
CscStatus validate_csc(const CscView& g, int num_threads, uint64_t* where);

// ---------------------------------------------------------------------------
// The CUDA sampler runs one hop as a few steps that ibp_gnn.sampler drives
// (it allocates with torch and scans with torch.cumsum). Each step exists
// twice with the same arguments: *_cuda enqueues a kernel on `stream` (a
// cudaStream_t) without synchronising and returns a cudaError_t value (-1 when
// built without CUDA); *_host runs the same per-element code (pick.h,
// relabel.h) serially on host pointers, so the CPU tests run the GPU logic.
// Graph arrays may live in device memory or in page-locked host memory mapped
// into the device address space (read zero-copy over the bus).
//
// One hop over a frontier of n nodes (int64 global ids, the first one at local
// index first_local), with N nodes sampled so far. `mode` and `bounds` (per
// frontier node, the time bound of temporal sampling; else nullptr) select the
// picks of pick.h. Disjoint sampling relabels keys (seed index * num_nodes +
// global id) instead of global ids; the driver forms them.
//   count   counts[i] = picks for frontier[i]
//   (torch) offsets = exclusive scan of counts, E = offsets[n]   <- host sync
//   pick    edge/nbr/col[offsets[i] ..] = CSC positions, neighbour ids and
//           col = first_local + i, for each frontier node
//   relabel_insert  (table, nbr, E, base=N): key nbr[j] gets min(value, N + j)
//   relabel_mark    first[j] = 1 where j is the first occurrence of a new node
//   (torch) rank = inclusive scan of first, new = rank[E - 1]    <- host sync
//   relabel_finish  row[j] = local index of nbr[j]; new_nodes[rank[j] - 1]
//   relabel_commit  the first occurrences' values become final local indices
// The seeds enter the table with relabel_insert(seeds, S, base=0).
// ---------------------------------------------------------------------------

// An open-addressing table from global id to local index; both arrays hold
// `capacity` (a power of two) entries, initialised to all ones (empty).
struct RelabelTable {
  uint64_t* keys;
  uint64_t* vals;
  uint64_t capacity;
};

int neighbor_count_cuda(const CscView& g, const int64_t* frontier, uint64_t n, int64_t fanout,
                        bool replace, const PickMode& mode, const int64_t* bounds,
                        int64_t* counts, void* stream);
int neighbor_pick_cuda(const CscView& g, const int64_t* frontier, uint64_t n,
                       uint64_t first_local, int64_t fanout, bool replace, uint64_t seed,
                       uint32_t hop, const PickMode& mode, const int64_t* bounds,
                       const int64_t* offsets, int64_t* edge, int64_t* nbr, int64_t* col,
                       void* stream);
int relabel_insert_cuda(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        void* stream);
int relabel_mark_cuda(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                      int64_t* first, void* stream);
int relabel_finish_cuda(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        const int64_t* rank, int64_t* row, int64_t* new_nodes, void* stream);
int relabel_commit_cuda(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        const int64_t* rank, void* stream);

int neighbor_count_host(const CscView& g, const int64_t* frontier, uint64_t n, int64_t fanout,
                        bool replace, const PickMode& mode, const int64_t* bounds,
                        int64_t* counts);
int neighbor_pick_host(const CscView& g, const int64_t* frontier, uint64_t n,
                       uint64_t first_local, int64_t fanout, bool replace, uint64_t seed,
                       uint32_t hop, const PickMode& mode, const int64_t* bounds,
                       const int64_t* offsets, int64_t* edge, int64_t* nbr, int64_t* col);
int relabel_insert_host(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base);
int relabel_mark_host(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                      int64_t* first);
int relabel_finish_host(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        const int64_t* rank, int64_t* row, int64_t* new_nodes);
int relabel_commit_host(const RelabelTable& t, const int64_t* ids, uint64_t n, uint64_t base,
                        const int64_t* rank);

// Pinning the graph arrays in place is ibp::host_register (csrc/ibp/gather.h).

}  // namespace sampler
}  // namespace ibp
