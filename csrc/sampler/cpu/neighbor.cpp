// CPU neighbour sampler. Picks depend only on the seed, the hop and a node's
// local index (pick.h), and new nodes get local indices in order of first
// appearance (the layout of neighbor.h), so any thread count gives the same
// sample.
//
// On graphs larger than the caches the time goes to three kinds of random
// reads per hop: indptr at each frontier node, indices at each pick, and the
// relabelling table at each picked neighbour. Each is its own streaming loop
// that prefetches kAhead iterations ahead, so many of those misses are in
// flight at once instead of one: (1) draw the picks' CSC positions (edge) and
// col, reading indptr; (2) gather the neighbours' ids into row; (3) relabel row
// in place in pick order with a serial hash map, appending new nodes.
//
// Several threads, for large samples only, split (1) and (2) over the frontier
// (a count pass first gives each node its offset); thread 0 runs (3).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "../neighbor.h"
#include "../pick.h"
#include "../relabel.h"

namespace ibp {
namespace sampler {
namespace {

// Expected picks per extra thread: below this one thread does everything.
// The parallel path adds a count pass and barriers, which pay off only when
// the picks miss the caches and the threads' start is amortised.
constexpr uint64_t kParallelPicks = 1u << 16;
// Graphs whose arrays take fewer bytes than this stay in the caches, where the
// draws are cheap and one thread wins at any sample size.
constexpr uint64_t kCachedGraphBytes = 8ull << 20;
// Threads one call uses at most.
constexpr uint64_t kMaxThreads = 256;
// Elements reserved up front per output array at most; beyond, they grow on
// demand (the estimate of the sample size can be far too high).
constexpr uint64_t kMaxReserve = 1ull << 22;
// More sampled edges than this cannot be stored (8 bytes each, three arrays):
// std::bad_alloc (MemoryError) before any counter could overflow.
constexpr uint64_t kMaxEdges = 1ull << 60;
// Prefetch distance of the streaming loops, in iterations.
constexpr uint64_t kAhead = 16;

template <typename T>
inline void prefetch(const T* p) {
  __builtin_prefetch(static_cast<const void*>(p), 0, 3);
}

// Global id -> local index, open addressing with linear probing, kept at most
// half full. Key and value are Word-sized (uint32_t where the graph and the
// sample allow it: half the bytes, half the cache misses).
template <typename Word>
class LocalIndex {
 public:
  static constexpr Word kNone = static_cast<Word>(~static_cast<Word>(0));

  void reset(uint64_t expected) {
    uint64_t cap = 64;
    while (cap < 2 * expected) cap <<= 1;
    slots_.assign(cap, Slot{kNone, 0});
    mask_ = cap - 1;
    shift_ = 64 - __builtin_ctzll(cap);
    size_ = 0;
  }

  void prefetch_key(uint64_t key) const { __builtin_prefetch(&slots_[home(key)], 1, 3); }

  // The value of `key`; when absent it is added with `value` and *added set.
  uint64_t get_or_add(uint64_t key, uint64_t value, bool* added) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    uint64_t s = home(key);
    for (;;) {
      Slot& slot = slots_[s];
      if (slot.key == static_cast<Word>(key)) {
        *added = false;
        return slot.val;
      }
      if (slot.key == kNone) {
        slot.key = static_cast<Word>(key);
        slot.val = static_cast<Word>(value);
        ++size_;
        *added = true;
        return value;
      }
      s = (s + 1) & mask_;
    }
  }

 private:
  struct Slot {
    Word key;
    Word val;
  };

  uint64_t home(uint64_t key) const { return ((key * kGolden) >> shift_) & mask_; }

  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    reset(old.size());  // doubles the capacity
    bool added = false;
    for (const Slot& s : old) {
      if (s.key != kNone) get_or_add(s.key, s.val, &added);
    }
  }

  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  uint32_t shift_ = 0;
  uint64_t size_ = 0;
};

// Floyd's hash set for one thread (pick.h), grown on demand.
class PickScratch {
 public:
  const PickSet* for_picks(uint64_t k) {
    const uint32_t bits = pick_set_bits(k);
    if (bits == 0) return nullptr;
    if (slots_.size() < (1ull << bits)) slots_.resize(1ull << bits);
    set_ = PickSet{slots_.data(), bits};
    return &set_;
  }

 private:
  std::vector<uint64_t, UninitAllocator<uint64_t>> slots_;
  PickSet set_{};
};

// A reusable barrier for a few threads: spins briefly (phases are short),
// then sleeps, so that a thread whose peer lost its core does not burn it.
class Barrier {
 public:
  void set_count(uint32_t n) { n_ = n; }
  void wait() {
    const uint32_t gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        gen_.fetch_add(1, std::memory_order_release);
      }
      cv_.notify_all();
      return;
    }
    for (int spin = 0; spin < 4000; ++spin) {
      if (gen_.load(std::memory_order_acquire) != gen) return;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return gen_.load(std::memory_order_acquire) != gen; });
  }

 private:
  uint32_t n_ = 1;
  std::atomic<uint32_t> count_{0};
  std::atomic<uint32_t> gen_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
};

// Threads that run the phases of one sample in lockstep. Exception-safe: a
// phase that throws (std::bad_alloc) records the first exception and makes
// every later phase of every thread a no-op, while all threads still pass
// every barrier, so none is left waiting; run() rethrows it in the caller.
// Threads that cannot be created are done without: the team is whatever
// started (at least the caller), which the split of the work then uses.
class Team {
 public:
  // Calls body(t, team) on threads t = 0 .. size() - 1, the caller being 0.
  template <typename Body>
  void run(uint32_t want, const Body& body) {
    std::vector<std::thread> pool;
    pool.reserve(want);
    auto worker = [this, &body](uint32_t t) {
      {
        std::unique_lock<std::mutex> lock(gate_mutex_);
        gate_.wait(lock, [this] { return open_; });
      }
      body(t, *this);
    };
    for (uint32_t t = 1; t < want; ++t) {
      try {
        pool.emplace_back(worker, t);
      } catch (...) {  // std::system_error (no more threads) or std::bad_alloc
        break;
      }
    }
    size_ = static_cast<uint32_t>(pool.size()) + 1;
    barrier_.set_count(size_);
    {
      std::lock_guard<std::mutex> lock(gate_mutex_);
      open_ = true;
    }
    gate_.notify_all();
    body(0, *this);
    for (auto& th : pool) th.join();
    if (error_) std::rethrow_exception(error_);
  }

  uint32_t size() const { return size_; }

  // Runs one phase of this thread unless a phase has failed, then waits for
  // the others.
  template <typename Phase>
  void phase(const Phase& fn) {
    if (!failed_.load(std::memory_order_acquire)) {
      try {
        fn();
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_release);
      }
    }
    barrier_.wait();
  }

 private:
  uint32_t size_ = 1;
  Barrier barrier_;
  std::mutex gate_mutex_, error_mutex_;
  std::condition_variable gate_;
  bool open_ = false;
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

struct Plan {
  uint64_t expected_nodes;
  uint64_t expected_edges;
};

// Expected sample size, used to size the maps and outputs up front (growing
// them hop by hop costs more than the sampling itself on small batches). The
// frontier of a hop is bounded by what the graph holds (every node enters the
// sample once, duplicated seeds aside), so the estimate is too.
Plan plan(uint64_t num_nodes, uint64_t num_edges, uint64_t num_seeds, const SampleOptions& opt) {
  const double mean_degree = num_nodes ? static_cast<double>(num_edges) / num_nodes : 0.0;
  const double most_nodes = static_cast<double>(num_seeds) + static_cast<double>(num_nodes);
  double frontier = static_cast<double>(num_seeds), nodes = frontier, edges = 0.0;
  for (uint32_t h = 0; h < opt.num_hops && frontier > 0; ++h) {
    const double f = static_cast<double>(opt.fanouts[h]);
    const double picks = opt.fanouts[h] < 0 ? mean_degree
                         : opt.replace      ? f
                                            : std::min(f, mean_degree + 1.0);
    const double hop_edges = frontier * picks;
    edges += hop_edges;
    frontier = std::min(hop_edges, most_nodes - nodes);
    nodes += frontier;
  }
  edges = std::min(edges, 1e18);
  return Plan{static_cast<uint64_t>(std::min(nodes, most_nodes)), static_cast<uint64_t>(edges)};
}

void start_output(const int64_t* seeds, uint64_t num_seeds, const Plan& p, NeighborSample* out) {
  out->node.assign(seeds, seeds + num_seeds);
  out->node.reserve(std::min(p.expected_nodes, kMaxReserve));
  for (auto* v : {&out->row, &out->col, &out->edge}) {
    v->clear();
    v->reserve(std::min(p.expected_edges, kMaxReserve));
  }
  out->batch.clear();
  out->num_sampled_nodes.assign(1, static_cast<int64_t>(num_seeds));
  out->num_sampled_edges.clear();
}

// Sizes row, col and edge for at least `n` edges (contents up to the old size
// kept, the rest uninitialised); grows geometrically.
void ensure_edges(NeighborSample* out, uint64_t n) {
  if (out->row.size() >= n) return;
  if (n > kMaxEdges) throw std::bad_alloc();
  const uint64_t m = std::max<uint64_t>(n, 2 * out->row.size());
  for (auto* v : {&out->row, &out->col, &out->edge}) v->resize(m);
}

// Phase 2 over edges [a, b): row[j] = indices[edge[j]].
template <typename Id>
void gather_neighbors(const Id* indices, const int64_t* edge, int64_t* row, uint64_t a,
                      uint64_t b) {
  for (uint64_t j = a; j < b; ++j) {
    if (j + kAhead < b) prefetch(indices + edge[j + kAhead]);
    row[j] = static_cast<int64_t>(indices[edge[j]]);
  }
}

// Phase 3 over edges [a, b): row[j] from global id to local index; new nodes
// appended to `node` in order of first appearance.
template <typename Word>
void relabel(LocalIndex<Word>& index, int64_t* row, uint64_t a, uint64_t b, IdVector& node) {
  bool added = false;
  for (uint64_t j = a; j < b; ++j) {
    if (j + kAhead < b) index.prefetch_key(static_cast<uint64_t>(row[j + kAhead]));
    const int64_t nb = row[j];
    const uint64_t local = index.get_or_add(static_cast<uint64_t>(nb), node.size(), &added);
    if (added) node.push_back(nb);
    row[j] = static_cast<int64_t>(local);
  }
}

template <typename Word>
void index_seeds(LocalIndex<Word>& index, const Plan& p, const int64_t* seeds,
                 uint64_t num_seeds) {
  index.reset(p.expected_nodes);
  bool added = false;
  for (uint64_t i = 0; i < num_seeds; ++i) {
    index.get_or_add(static_cast<uint64_t>(seeds[i]), i, &added);
  }
}

template <typename Word, typename Ptr, typename Id>
void sample_serial(const Ptr* indptr, const Id* indices, const int64_t* seeds,
                   uint64_t num_seeds, const SampleOptions& opt, const Plan& p,
                   NeighborSample* out) {
  IdVector& node = out->node;
  LocalIndex<Word> index;
  index_seeds(index, p, seeds, num_seeds);
  PickScratch scratch;
  uint64_t begin = 0, end = num_seeds, ne = 0;
  for (uint32_t hop = 0; hop < opt.num_hops; ++hop) {
    const int64_t fanout = opt.fanouts[hop];
    const uint64_t e0 = ne;
    for (uint64_t i = begin; i < end; ++i) {  // (1) positions and col
      if (i + kAhead < end) prefetch(indptr + node[i + kAhead]);
      const int64_t v = node[i];
      const uint64_t b0 = static_cast<uint64_t>(indptr[v]);
      const uint64_t deg = static_cast<uint64_t>(indptr[v + 1]) - b0;
      const uint64_t k = pick_count(deg, fanout, opt.replace);
      if (k == 0) continue;
      if (k > kMaxEdges - ne) throw std::bad_alloc();
      ensure_edges(out, ne + k);
      pick_positions(b0, deg, fanout, opt.replace, pick_key(opt.seed, hop, i),
                     out->edge.data() + ne, opt.replace ? nullptr : scratch.for_picks(k));
      std::fill_n(out->col.data() + ne, k, static_cast<int64_t>(i));
      ne += k;
    }
    gather_neighbors(indices, out->edge.data(), out->row.data(), e0, ne);  // (2)
    relabel(index, out->row.data(), e0, ne, node);                          // (3)
    out->num_sampled_edges.push_back(static_cast<int64_t>(ne - e0));
    out->num_sampled_nodes.push_back(static_cast<int64_t>(node.size() - end));
    begin = end;
    end = node.size();
  }
  for (auto* v : {&out->row, &out->col, &out->edge}) v->resize(ne);
}

// Disjoint, weighted and temporal sampling, one thread: the loop of
// sample_serial with the picks of pick_node and, when disjoint, nodes keyed by
// (seed index, global id) as seed index * num_nodes + global id.
template <typename Word, typename Ptr, typename Id>
void sample_general(const Ptr* indptr, const Id* indices, uint64_t num_nodes,
                    const int64_t* seeds, uint64_t num_seeds, const SampleOptions& opt,
                    const Plan& p, NeighborSample* out) {
  IdVector& node = out->node;
  IdVector& batch = out->batch;
  const bool dj = opt.disjoint;
  LocalIndex<Word> index;
  if (dj) {
    index.reset(p.expected_nodes);
    batch.reserve(node.capacity());
    bool added = false;
    for (uint64_t i = 0; i < num_seeds; ++i) {
      batch.push_back(static_cast<int64_t>(i));
      index.get_or_add(i * num_nodes + static_cast<uint64_t>(seeds[i]), i, &added);
    }
  } else {
    index_seeds(index, p, seeds, num_seeds);
  }
  PickScratch scratch;
  uint64_t begin = 0, end = num_seeds, ne = 0;
  for (uint32_t hop = 0; hop < opt.num_hops; ++hop) {
    const int64_t fanout = opt.fanouts[hop];
    const uint64_t e0 = ne;
    for (uint64_t i = begin; i < end; ++i) {
      const int64_t v = node[i];
      const uint64_t b0 = static_cast<uint64_t>(indptr[v]);
      const uint64_t deg = static_cast<uint64_t>(indptr[v + 1]) - b0;
      const int64_t bound = opt.seed_time != nullptr ? opt.seed_time[dj ? batch[i] : i] : 0;
      const uint64_t k = pick_node_count(opt.mode, b0, deg, fanout, opt.replace, bound);
      if (k == 0) continue;
      if (k > kMaxEdges - ne) throw std::bad_alloc();
      ensure_edges(out, ne + k);
      pick_node(opt.mode, b0, deg, fanout, opt.replace, bound, pick_key(opt.seed, hop, i),
                out->edge.data() + ne, opt.replace ? nullptr : scratch.for_picks(k));
      std::fill_n(out->col.data() + ne, k, static_cast<int64_t>(i));
      ne += k;
    }
    int64_t* row = out->row.data();
    const int64_t* col = out->col.data();
    gather_neighbors(indices, out->edge.data(), row, e0, ne);
    bool added = false;
    for (uint64_t j = e0; j < ne; ++j) {
      const int64_t nb = row[j];
      const int64_t b = dj ? batch[col[j]] : 0;
      const uint64_t key = dj ? static_cast<uint64_t>(b) * num_nodes + static_cast<uint64_t>(nb)
                              : static_cast<uint64_t>(nb);
      const uint64_t local = index.get_or_add(key, node.size(), &added);
      if (added) {
        node.push_back(nb);
        if (dj) batch.push_back(b);
      }
      row[j] = static_cast<int64_t>(local);
    }
    out->num_sampled_edges.push_back(static_cast<int64_t>(ne - e0));
    out->num_sampled_nodes.push_back(static_cast<int64_t>(node.size() - end));
    begin = end;
    end = node.size();
  }
  for (auto* v : {&out->row, &out->col, &out->edge}) v->resize(ne);
}

template <typename Word, typename Ptr, typename Id>
void sample_parallel(const Ptr* indptr, const Id* indices, const int64_t* seeds,
                     uint64_t num_seeds, const SampleOptions& opt, const Plan& p, uint32_t want,
                     NeighborSample* out) {
  IdVector& node = out->node;
  LocalIndex<Word> index;
  index_seeds(index, p, seeds, num_seeds);
  IdVector offs;
  // Moved on by thread 0 at the end of a hop, read by all after the barrier.
  uint64_t next_begin = 0, next_end = num_seeds, next_e0 = 0;

  Team team;
  team.run(want, [&](uint32_t t, Team& tm) {
    const uint32_t T = tm.size();
    PickScratch scratch;
    for (uint32_t hop = 0; hop < opt.num_hops; ++hop) {
      const uint64_t begin = next_begin, end = next_end, e0 = next_e0;
      const int64_t fanout = opt.fanouts[hop];
      const uint64_t n = end - begin, step = (n + T - 1) / T;
      const uint64_t a = std::min(n, t * step), b = std::min(n, a + step);
      tm.phase([&] {
        if (t == 0) offs.resize(n + 1);
      });
      tm.phase([&] {  // count
        if (t == 0) offs[0] = 0;
        for (uint64_t i = a; i < b; ++i) {
          if (i + kAhead < b) prefetch(indptr + node[begin + i + kAhead]);
          const int64_t v = node[begin + i];
          const uint64_t deg =
              static_cast<uint64_t>(indptr[v + 1]) - static_cast<uint64_t>(indptr[v]);
          offs[i + 1] = static_cast<int64_t>(pick_count(deg, fanout, opt.replace));
        }
      });
      tm.phase([&] {
        if (t != 0) return;
        for (uint64_t i = 0; i < n; ++i) {
          if (static_cast<uint64_t>(offs[i + 1]) > kMaxEdges - static_cast<uint64_t>(offs[i])) {
            throw std::bad_alloc();
          }
          offs[i + 1] += offs[i];
        }
        ensure_edges(out, e0 + static_cast<uint64_t>(offs[n]));
      });
      tm.phase([&] {  // (1) positions and col, then (2) the neighbours, for a slice
        int64_t* edge = out->edge.data() + e0;
        int64_t* col = out->col.data() + e0;
        for (uint64_t i = a; i < b; ++i) {
          if (i + kAhead < b) prefetch(indptr + node[begin + i + kAhead]);
          const uint64_t local = begin + i;
          const int64_t v = node[local];
          const uint64_t b0 = static_cast<uint64_t>(indptr[v]);
          const uint64_t deg = static_cast<uint64_t>(indptr[v + 1]) - b0;
          const uint64_t at = static_cast<uint64_t>(offs[i]);
          const uint64_t k = static_cast<uint64_t>(offs[i + 1]) - at;
          pick_positions(b0, deg, fanout, opt.replace, pick_key(opt.seed, hop, local), edge + at,
                         opt.replace ? nullptr : scratch.for_picks(k));
          std::fill_n(col + at, k, static_cast<int64_t>(local));
        }
        gather_neighbors(indices, edge, out->row.data() + e0, static_cast<uint64_t>(offs[a]),
                         static_cast<uint64_t>(offs[b]));
      });
      tm.phase([&] {  // (3), in pick order
        if (t != 0) return;
        const uint64_t E = static_cast<uint64_t>(offs[n]);
        relabel(index, out->row.data(), e0, e0 + E, node);
        out->num_sampled_edges.push_back(static_cast<int64_t>(E));
        out->num_sampled_nodes.push_back(static_cast<int64_t>(node.size() - end));
        next_begin = end;
        next_end = node.size();
        next_e0 = e0 + E;
      });
    }
  });
  for (auto* v : {&out->row, &out->col, &out->edge}) v->resize(next_e0);
}

template <typename Word, typename Ptr, typename Id>
void sample_typed(const Ptr* indptr, const Id* indices, uint64_t num_edges, uint64_t num_nodes,
                  const int64_t* seeds, uint64_t num_seeds, const SampleOptions& opt,
                  int num_threads, bool exact_threads, NeighborSample* out) {
  const Plan p = plan(num_nodes, num_edges, num_seeds, opt);
  start_output(seeds, num_seeds, p, out);
  if (opt.disjoint || opt.mode.wcum != nullptr || opt.mode.etime != nullptr) {
    sample_general<Word>(indptr, indices, num_nodes, seeds, num_seeds, opt, p, out);
    return;
  }
  uint64_t t = num_threads < 1 ? 1 : static_cast<uint64_t>(num_threads);
  t = std::min(t, kMaxThreads);
  if (!exact_threads) {
    t = std::min<uint64_t>(t, std::max(1u, std::thread::hardware_concurrency()));
    t = std::min<uint64_t>(t, p.expected_edges / kParallelPicks);
    if ((num_nodes + 1) * sizeof(Ptr) + num_edges * sizeof(Id) < kCachedGraphBytes) t = 1;
  }
  if (t <= 1) {
    sample_serial<Word>(indptr, indices, seeds, num_seeds, opt, p, out);
  } else {
    sample_parallel<Word>(indptr, indices, seeds, num_seeds, opt, p, static_cast<uint32_t>(t),
                          out);
  }
}

template <typename Ptr, typename Id>
CscStatus validate_typed(const Ptr* indptr, const Id* indices, uint64_t num_nodes,
                         uint64_t num_edges, int num_threads, uint64_t* where) {
  if (indptr[0] != 0) {
    *where = 0;
    return CscStatus::kIndptrFirst;
  }
  // First failing position of check(i) over [0, n), split across threads.
  auto first_failure = [num_threads](uint64_t n, const auto& bad) {
    uint64_t t = num_threads < 1 ? 1 : static_cast<uint64_t>(num_threads);
    t = std::max<uint64_t>(1, std::min<uint64_t>({t, kMaxThreads, n / (1u << 16)}));
    const uint64_t step = t ? (n + t - 1) / t : 0;
    std::vector<uint64_t> found(t, n);
    auto scan = [&](uint64_t c) {
      const uint64_t a = std::min(n, c * step), b = std::min(n, a + step);
      for (uint64_t i = a; i < b; ++i) {
        if (bad(i)) {
          found[c] = i;
          return;
        }
      }
    };
    std::vector<std::thread> pool;
    uint64_t c = 1;
    try {
      pool.reserve(t);
      for (; c < t; ++c) pool.emplace_back(scan, c);
    } catch (...) {  // no more threads: this one scans the chunks left
    }
    for (uint64_t rest = c; rest < t; ++rest) scan(rest);
    scan(0);
    for (auto& th : pool) th.join();
    return *std::min_element(found.begin(), found.end());
  };
  uint64_t i = first_failure(num_nodes, [&](uint64_t k) { return indptr[k] > indptr[k + 1]; });
  if (i < num_nodes) {
    *where = i;
    return CscStatus::kIndptrDecreasing;
  }
  if (static_cast<uint64_t>(indptr[num_nodes]) != num_edges) {
    *where = num_nodes;
    return CscStatus::kIndptrLast;
  }
  i = first_failure(num_edges, [&](uint64_t e) {
    return indices[e] < 0 || static_cast<uint64_t>(indices[e]) >= num_nodes;
  });
  if (i < num_edges) {
    *where = i;
    return CscStatus::kIndexOutOfRange;
  }
  return CscStatus::kOk;
}

}  // namespace

void neighbor_sample_cpu(const CscView& g, const int64_t* seeds, uint64_t num_seeds,
                         const SampleOptions& opt, int num_threads, NeighborSample* out,
                         bool exact_threads) {
  // 32-bit table words when every global id and every local index fits below
  // their all-ones "empty" key.
  // Disjoint keys reach num_seeds * num_nodes (the caller keeps that below 2^63),
  // and so may the local indices.
  const bool narrow =
      opt.disjoint ? (num_seeds == 0 || g.num_nodes < 0xFFFFFFFFull / (num_seeds + 1))
                   : g.num_nodes + num_seeds < 0xFFFFFFFFull;
  with_csc_types(g, [&](const auto* indptr, const auto* indices) {
    if (narrow) {
      sample_typed<uint32_t>(indptr, indices, g.num_edges, g.num_nodes, seeds, num_seeds, opt,
                             num_threads, exact_threads, out);
    } else {
      sample_typed<uint64_t>(indptr, indices, g.num_edges, g.num_nodes, seeds, num_seeds, opt,
                             num_threads, exact_threads, out);
    }
  });
}

CscStatus validate_csc(const CscView& g, int num_threads, uint64_t* where) {
  CscStatus s = CscStatus::kOk;
  with_csc_types(g, [&](const auto* indptr, const auto* indices) {
    s = validate_typed(indptr, indices, g.num_nodes, g.num_edges, num_threads, where);
  });
  return s;
}

}  // namespace sampler
}  // namespace ibp
