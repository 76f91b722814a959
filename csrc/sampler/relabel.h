// Per-element relabelling steps of the CUDA sampler (see neighbor.h), shared
// with their serial host twins. The table maps a global node id to the
// smallest "provisional position" seen for it: local index i for nodes sampled
// before this hop, N + j for the j-th neighbour picked in this hop. A picked
// neighbour is new exactly when its own position won; ranking the winners
// (a scan) gives local indices in order of first appearance -- the order the
// CPU sampler produces with a serial hash map.
#pragma once

#include <cstdint>

#include "neighbor.h"
#include "pick.h"

namespace ibp {
namespace sampler {

constexpr uint64_t kEmpty = ~0ull;

IBP_SAMPLER_HD uint64_t atomic_cas_u64(uint64_t* p, uint64_t expected, uint64_t desired) {
#if defined(__CUDA_ARCH__)
  return atomicCAS(reinterpret_cast<unsigned long long*>(p), expected, desired);
#else  // the host twins run serially
  const uint64_t old = *p;
  if (old == expected) *p = desired;
  return old;
#endif
}

IBP_SAMPLER_HD void atomic_min_u64(uint64_t* p, uint64_t v) {
#if defined(__CUDA_ARCH__)
  atomicMin(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
#else
  if (v < *p) *p = v;
#endif
}

IBP_SAMPLER_HD uint64_t table_home(const RelabelTable& t, uint64_t key) {
  return mix64(key) & (t.capacity - 1);
}

// The slot holding `key`, claiming an empty one if it is not there yet. The
// caller keeps the table under half full, so the probe ends.
IBP_SAMPLER_HD uint64_t table_insert(const RelabelTable& t, uint64_t key) {
  uint64_t s = table_home(t, key);
  for (;;) {
    const uint64_t prev = atomic_cas_u64(&t.keys[s], kEmpty, key);
    if (prev == kEmpty || prev == key) return s;
    s = (s + 1) & (t.capacity - 1);
  }
}

// The slot of a key known to be in the table.
IBP_SAMPLER_HD uint64_t table_find(const RelabelTable& t, uint64_t key) {
  uint64_t s = table_home(t, key);
  while (t.keys[s] != key) s = (s + 1) & (t.capacity - 1);
  return s;
}

IBP_SAMPLER_HD void relabel_insert_one(const RelabelTable& t, const int64_t* ids, uint64_t j,
                                       uint64_t base) {
  const uint64_t s = table_insert(t, static_cast<uint64_t>(ids[j]));
  atomic_min_u64(&t.vals[s], base + j);
}

IBP_SAMPLER_HD void relabel_mark_one(const RelabelTable& t, const int64_t* ids, uint64_t j,
                                     uint64_t base, int64_t* first) {
  first[j] = t.vals[table_find(t, static_cast<uint64_t>(ids[j]))] == base + j ? 1 : 0;
}

IBP_SAMPLER_HD void relabel_finish_one(const RelabelTable& t, const int64_t* ids, uint64_t j,
                                       uint64_t base, const int64_t* rank, int64_t* row,
                                       int64_t* new_nodes) {
  const uint64_t v = t.vals[table_find(t, static_cast<uint64_t>(ids[j]))];
  if (v < base) {
    row[j] = static_cast<int64_t>(v);
    return;
  }
  const int64_t r = rank[v - base];  // 1-based rank of the first occurrence
  row[j] = static_cast<int64_t>(base) + r - 1;
  if (v == base + j) new_nodes[r - 1] = ids[j];
}

// Safe in one pass: a later occurrence j' of the same key never mistakes the
// committed value base + rank - 1 (<= base + j < base + j') for its own.
IBP_SAMPLER_HD void relabel_commit_one(const RelabelTable& t, const int64_t* ids, uint64_t j,
                                       uint64_t base, const int64_t* rank) {
  const uint64_t s = table_find(t, static_cast<uint64_t>(ids[j]));
  if (t.vals[s] == base + j) t.vals[s] = base + static_cast<uint64_t>(rank[j]) - 1;
}

// One frontier node of the pick step: its picks' CSC positions, neighbour ids
// and col, written at offsets[i]. bounds: per frontier node, the time bound of
// temporal sampling (nullptr otherwise).
template <typename Ptr, typename Id>
IBP_SAMPLER_HD void neighbor_pick_one(const Ptr* indptr, const Id* indices, const int64_t* frontier,
                                      uint64_t i, uint64_t first_local, int64_t fanout,
                                      bool replace, uint64_t seed, uint32_t hop,
                                      const PickMode& mode, const int64_t* bounds,
                                      const int64_t* offsets, int64_t* edge, int64_t* nbr,
                                      int64_t* col) {
  const int64_t v = frontier[i];
  const uint64_t begin = static_cast<uint64_t>(indptr[v]);
  const uint64_t deg = static_cast<uint64_t>(indptr[v + 1]) - begin;
  const uint64_t at = static_cast<uint64_t>(offsets[i]);
  const uint64_t k = pick_node(mode, begin, deg, fanout, replace, bounds ? bounds[i] : 0,
                               pick_key(seed, hop, first_local + i), edge + at);
  for (uint64_t t = 0; t < k; ++t) {
    nbr[at + t] = static_cast<int64_t>(indices[edge[at + t]]);
    col[at + t] = static_cast<int64_t>(first_local + i);
  }
}

template <typename Ptr>
IBP_SAMPLER_HD void neighbor_count_one(const Ptr* indptr, const int64_t* frontier, uint64_t i,
                                       int64_t fanout, bool replace, const PickMode& mode,
                                       const int64_t* bounds, int64_t* counts) {
  const int64_t v = frontier[i];
  const uint64_t begin = static_cast<uint64_t>(indptr[v]);
  const uint64_t deg = static_cast<uint64_t>(indptr[v + 1]) - begin;
  counts[i] = static_cast<int64_t>(
      pick_node_count(mode, begin, deg, fanout, replace, bounds ? bounds[i] : 0));
}

// Calls fn(indptr, indices) with the arrays at their stored types.
template <typename Fn>
void with_csc_types(const CscView& g, const Fn& fn) {
  if (g.indptr64) {
    if (g.indices64) {
      fn(static_cast<const int64_t*>(g.indptr), static_cast<const int64_t*>(g.indices));
    } else {
      fn(static_cast<const int64_t*>(g.indptr), static_cast<const int32_t*>(g.indices));
    }
  } else {
    if (g.indices64) {
      fn(static_cast<const int32_t*>(g.indptr), static_cast<const int64_t*>(g.indices));
    } else {
      fn(static_cast<const int32_t*>(g.indptr), static_cast<const int32_t*>(g.indices));
    }
  }
}

}  // namespace sampler
}  // namespace ibp
