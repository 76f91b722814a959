// CPU neighbour sampler. Picks depend only on the seed, the hop and a node's
// local index (pick.h), and new nodes get local indices in order of first
// appearance (the layout of neighbor.h), so any thread count gives the same
// sample.
//
// One thread: each frontier node's picks are relabelled as soon as they are
// drawn, with a serial hash map. Several threads, for large samples only: per
// hop, the threads count the picks of their slice of the frontier, thread 0
// turns the counts into offsets, the threads draw their picks into the final
// arrays (the random reads of the graph, which dominate on graphs larger than
// the caches), and thread 0 relabels them in order with the serial map.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "../neighbor.h"
#include "../pick.h"
#include "../relabel.h"

namespace ibp {
namespace sampler {
namespace {

// Expected picks per extra thread: below this one thread does everything.
// Two passes over the picks (draw, then relabel) beat the fused serial loop
// only when the draws miss the caches and the threads' start and barriers are
// amortised (measured on a 2-core VM: ~2x at 400k picks on a 4M-edge graph,
// slower at 100k picks on a 200k-edge graph).
constexpr uint64_t kParallelPicks = 1u << 16;
// Graphs whose arrays take fewer bytes than this stay in the caches, where the
// draws are cheap and the fused serial loop wins at any sample size.
constexpr uint64_t kCachedGraphBytes = 8ull << 20;

// Global id -> local index (or a provisional value), open addressing with
// linear probing, kept at most half full.
class LocalIndex {
 public:
  void reset(uint64_t expected) {
    uint64_t cap = 64;
    while (cap < 2 * expected) cap <<= 1;
    slots_.assign(cap, Slot{-1, 0});
    mask_ = cap - 1;
    shift_ = 64 - __builtin_ctzll(cap);
    size_ = 0;
  }

  // The value of `key`; when absent it is added with `value` and *added set.
  int64_t get_or_add(int64_t key, int64_t value, bool* added) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    uint64_t s = home(key);
    for (;;) {
      Slot& slot = slots_[s];
      if (slot.key == key) {
        *added = false;
        return slot.val;
      }
      if (slot.key < 0) {
        slot.key = key;
        slot.val = value;
        ++size_;
        *added = true;
        return value;
      }
      s = (s + 1) & mask_;
    }
  }

  // The value of a key that is present.
  int64_t find(int64_t key) const {
    uint64_t s = home(key);
    while (slots_[s].key != key) s = (s + 1) & mask_;
    return slots_[s].val;
  }

  // Overwrites the value of a key that is present.
  void set(int64_t key, int64_t value) {
    uint64_t s = home(key);
    while (slots_[s].key != key) s = (s + 1) & mask_;
    slots_[s].val = value;
  }

 private:
  struct Slot {
    int64_t key;
    int64_t val;
  };

  uint64_t home(int64_t key) const {
    return ((static_cast<uint64_t>(key) * kGolden) >> shift_) & mask_;
  }

  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    reset(old.size());  // doubles the capacity
    bool added = false;
    for (const Slot& s : old) {
      if (s.key >= 0) get_or_add(s.key, s.val, &added);
    }
  }

  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  uint32_t shift_ = 0;
  uint64_t size_ = 0;
};

// A reusable barrier for a few threads: spins briefly (phases are short),
// then sleeps, so that a thread whose peer lost its core does not burn it.
class Barrier {
 public:
  explicit Barrier(uint32_t n) : n_(n) {}
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
  const uint32_t n_;
  std::atomic<uint32_t> count_{0};
  std::atomic<uint32_t> gen_{0};
  std::mutex mutex_;
  std::condition_variable cv_;
};

struct Plan {
  uint64_t expected_nodes;
  uint64_t expected_edges;
};

// Expected sample size, used to size the maps and outputs up front (growing
// them hop by hop costs more than the sampling itself on small batches).
Plan plan(uint64_t num_nodes, uint64_t num_edges, uint64_t num_seeds, const SampleOptions& opt) {
  const double mean_degree = num_nodes ? static_cast<double>(num_edges) / num_nodes : 0.0;
  double reach = static_cast<double>(num_seeds), edges = 0.0;
  for (uint32_t h = 0; h < opt.num_hops; ++h) {
    const double f = opt.fanouts[h] < 0 ? mean_degree
                                        : std::min<double>(opt.fanouts[h], mean_degree + 1.0);
    reach *= f;
    edges += reach;
  }
  edges = std::min(edges, 1e9);
  const double nodes = std::min<double>(static_cast<double>(num_nodes), num_seeds + edges);
  return Plan{std::max<uint64_t>(num_seeds, static_cast<uint64_t>(nodes)),
              static_cast<uint64_t>(edges)};
}

void start_output(const int64_t* seeds, uint64_t num_seeds, const Plan& p, NeighborSample* out) {
  out->node.assign(seeds, seeds + num_seeds);
  out->node.reserve(p.expected_nodes);
  for (auto* v : {&out->row, &out->col, &out->edge}) {
    v->clear();
    v->reserve(p.expected_edges);
  }
  out->num_sampled_nodes.assign(1, static_cast<int64_t>(num_seeds));
  out->num_sampled_edges.clear();
}

template <typename Ptr, typename Id>
void sample_serial(const Ptr* indptr, const Id* indices, const int64_t* seeds,
                   uint64_t num_seeds, const SampleOptions& opt, const Plan& p,
                   NeighborSample* out) {
  IdVector& node = out->node;
  LocalIndex index;
  index.reset(p.expected_nodes);
  bool added = false;
  for (uint64_t i = 0; i < num_seeds; ++i) {
    index.get_or_add(seeds[i], static_cast<int64_t>(i), &added);
  }
  std::vector<int64_t> buf;
  uint64_t begin = 0, end = num_seeds;
  for (uint32_t hop = 0; hop < opt.num_hops; ++hop) {
    const int64_t fanout = opt.fanouts[hop];
    const uint64_t edges_before = out->row.size();
    for (uint64_t i = begin; i < end; ++i) {
      const int64_t v = node[i];
      const uint64_t b0 = static_cast<uint64_t>(indptr[v]);
      const uint64_t deg = static_cast<uint64_t>(indptr[v + 1]) - b0;
      const uint64_t k = pick_count(deg, fanout, opt.replace);
      if (buf.size() < k) buf.resize(k);
      pick_positions(b0, deg, fanout, opt.replace, pick_key(opt.seed, hop, i), buf.data());
      for (uint64_t j = 0; j < k; ++j) {
        const int64_t nb = static_cast<int64_t>(indices[buf[j]]);
        const int64_t local = index.get_or_add(nb, static_cast<int64_t>(node.size()), &added);
        if (added) node.push_back(nb);
        out->row.push_back(local);
        out->col.push_back(static_cast<int64_t>(i));
        out->edge.push_back(buf[j]);
      }
    }
    out->num_sampled_edges.push_back(static_cast<int64_t>(out->row.size() - edges_before));
    out->num_sampled_nodes.push_back(static_cast<int64_t>(node.size() - end));
    begin = end;
    end = node.size();
  }
}

template <typename Ptr, typename Id>
void sample_parallel(const Ptr* indptr, const Id* indices, const int64_t* seeds,
                     uint64_t num_seeds, const SampleOptions& opt, const Plan& p, uint32_t T,
                     NeighborSample* out) {
  IdVector& node = out->node;
  IdVector& row = out->row;
  IdVector& col = out->col;
  IdVector& edge = out->edge;
  LocalIndex index;
  index.reset(p.expected_nodes);
  bool added = false;
  for (uint64_t i = 0; i < num_seeds; ++i) {
    index.get_or_add(seeds[i], static_cast<int64_t>(i), &added);
  }
  IdVector offs, nbr;
  Barrier barrier(T);
  // Moved on by thread 0 at the end of a hop, read by all after the barrier.
  uint64_t next_begin = 0, next_end = num_seeds, next_e0 = 0;

  auto work = [&](uint32_t t) {
    for (uint32_t hop = 0; hop < opt.num_hops; ++hop) {
      const uint64_t begin = next_begin, end = next_end, e0 = next_e0;
      const int64_t fanout = opt.fanouts[hop];
      const uint64_t n = end - begin, step = (n + T - 1) / T;
      const uint64_t a = std::min(n, t * step), b = std::min(n, a + step);
      if (t == 0) offs.assign(n + 1, 0);
      barrier.wait();
      for (uint64_t i = a; i < b; ++i) {  // count
        const int64_t v = node[begin + i];
        const uint64_t deg =
            static_cast<uint64_t>(indptr[v + 1]) - static_cast<uint64_t>(indptr[v]);
        offs[i + 1] = static_cast<int64_t>(pick_count(deg, fanout, opt.replace));
      }
      barrier.wait();
      if (t == 0) {
        for (uint64_t i = 0; i < n; ++i) offs[i + 1] += offs[i];
        const uint64_t E = static_cast<uint64_t>(offs[n]);
        row.resize(e0 + E);
        col.resize(e0 + E);
        edge.resize(e0 + E);
        nbr.resize(E);
      }
      barrier.wait();
      for (uint64_t i = a; i < b; ++i) {  // pick
        const uint64_t local = begin + i;
        const int64_t v = node[local];
        const uint64_t b0 = static_cast<uint64_t>(indptr[v]);
        const uint64_t deg = static_cast<uint64_t>(indptr[v + 1]) - b0;
        const uint64_t at = static_cast<uint64_t>(offs[i]);
        const uint64_t k = static_cast<uint64_t>(offs[i + 1]) - at;
        int64_t* pos = edge.data() + e0 + at;
        pick_positions(b0, deg, fanout, opt.replace, pick_key(opt.seed, hop, local), pos);
        for (uint64_t q = 0; q < k; ++q) {
          nbr[at + q] = static_cast<int64_t>(indices[pos[q]]);
          col[e0 + at + q] = static_cast<int64_t>(local);
        }
      }
      barrier.wait();
      if (t == 0) {  // relabel, in pick order
        const uint64_t E = static_cast<uint64_t>(offs[n]);
        for (uint64_t j = 0; j < E; ++j) {
          const int64_t local = index.get_or_add(nbr[j], static_cast<int64_t>(node.size()), &added);
          if (added) node.push_back(nbr[j]);
          row[e0 + j] = local;
        }
        out->num_sampled_edges.push_back(static_cast<int64_t>(E));
        out->num_sampled_nodes.push_back(static_cast<int64_t>(node.size() - end));
        next_begin = end;
        next_end = node.size();
        next_e0 = e0 + E;
      }
      barrier.wait();
    }
  };

  std::vector<std::thread> pool;
  for (uint32_t t = 1; t < T; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
}

template <typename Ptr, typename Id>
void sample_typed(const Ptr* indptr, const Id* indices, uint64_t num_edges, uint64_t num_nodes,
                  const int64_t* seeds, uint64_t num_seeds, const SampleOptions& opt,
                  int num_threads, bool exact_threads, NeighborSample* out) {
  const Plan p = plan(num_nodes, num_edges, num_seeds, opt);
  start_output(seeds, num_seeds, p, out);
  uint64_t t = num_threads < 1 ? 1 : static_cast<uint64_t>(num_threads);
  if (!exact_threads) {
    t = std::min<uint64_t>(t, p.expected_edges / kParallelPicks);
    if ((num_nodes + 1) * sizeof(Ptr) + num_edges * sizeof(Id) < kCachedGraphBytes) t = 1;
  }
  if (t <= 1) {
    sample_serial(indptr, indices, seeds, num_seeds, opt, p, out);
  } else {
    sample_parallel(indptr, indices, seeds, num_seeds, opt, p, static_cast<uint32_t>(t), out);
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
    t = std::max<uint64_t>(1, std::min<uint64_t>(t, n / (1u << 16)));
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
    for (uint64_t c = 1; c < t; ++c) pool.emplace_back(scan, c);
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
  with_csc_types(g, [&](const auto* indptr, const auto* indices) {
    sample_typed(indptr, indices, g.num_edges, g.num_nodes, seeds, num_seeds, opt, num_threads,
                 exact_threads, out);
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
