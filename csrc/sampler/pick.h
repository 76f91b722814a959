// Per-node sampling logic shared by the CPU sampler and the CUDA kernels
// (everything here is __host__ __device__): a counter-based RNG, the number of
// picks for a node and the picks themselves.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define IBP_SAMPLER_HD __host__ __device__ __forceinline__
#else
#define IBP_SAMPLER_HD inline
#endif

namespace ibp {
namespace sampler {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// The splitmix64 finaliser: a bijective 64-bit mix.
IBP_SAMPLER_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The stream of draws for one node of one hop: a function of the call's seed,
// the hop and the node's local index only, never of threads or scheduling.
IBP_SAMPLER_HD uint64_t pick_key(uint64_t seed, uint32_t hop, uint64_t local) {
  return mix64(mix64(seed + (static_cast<uint64_t>(hop) + 1) * 0xD6E8FEB86659FD93ull) ^
               (local * kGolden));
}

// Draw t of a stream: splitmix64 started at `key`.
IBP_SAMPLER_HD uint64_t pick_draw(uint64_t key, uint64_t t) {
  return mix64(key + (t + 1) * kGolden);
}

// A value in [0, m) from 64 random bits (multiply-high; bias below m / 2^64).
IBP_SAMPLER_HD uint64_t pick_bounded(uint64_t r, uint64_t m) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(r, m);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * m) >> 64);
#endif
}

// Picks for a node of in-degree `deg`: all of them for fan-out -1, else
// min(fanout, deg) without replacement, fanout (or 0 when deg is 0) with.
IBP_SAMPLER_HD uint64_t pick_count(uint64_t deg, int64_t fanout, bool replace) {
  if (fanout < 0) return deg;
  const uint64_t f = static_cast<uint64_t>(fanout);
  if (replace) return deg ? f : 0;
  return f < deg ? f : deg;
}

// Floyd's membership test beyond this many picks uses a hash set (when the
// caller lends one, see PickSet); up to it a scan of the picks so far is faster.
constexpr uint64_t kScanPicks = 32;

// Scratch for Floyd's algorithm: an open-addressing set of offsets in
// [0, deg), `slots` holding at least 2k entries, a power of two (1 << bits).
// pick_positions clears it before use.
struct PickSet {
  uint64_t* slots;
  uint32_t bits;
};

// Slots a PickSet needs for k picks (0 when the scan is used).
IBP_SAMPLER_HD uint32_t pick_set_bits(uint64_t k) {
  if (k <= kScanPicks) return 0;
  uint32_t b = 6;
  while ((1ull << b) < 2 * k) ++b;
  return b;
}

// Adds r to the set; returns whether it was there already.
IBP_SAMPLER_HD bool pick_set_test_and_add(const PickSet& s, uint64_t r) {
  const uint64_t mask = (1ull << s.bits) - 1;
  uint64_t h = (r * kGolden) >> (64 - s.bits);
  for (;;) {
    const uint64_t v = s.slots[h];
    if (v == r) return true;
    if (v == ~0ull) {
      s.slots[h] = r;
      return false;
    }
    h = (h + 1) & mask;
  }
}

// Writes the CSC positions of the k = pick_count(deg, fanout, replace) picks
// of a node whose neighbours sit at [begin, begin + deg). Taking all keeps the
// CSC order; without replacement Floyd's algorithm draws a uniform k-subset in
// k draws. Its membership test scans the picks so far (O(k^2), fine for the
// usual fan-outs up to a few dozen) unless `set` is given with room for this
// k (pick_set_bits(k) bits): then it is O(k) expected. The picks are the same
// either way.
IBP_SAMPLER_HD void pick_positions(uint64_t begin, uint64_t deg, int64_t fanout, bool replace,
                                   uint64_t key, int64_t* out, const PickSet* set = nullptr) {
  const uint64_t k = pick_count(deg, fanout, replace);
  if (fanout < 0 || (!replace && k == deg)) {
    for (uint64_t j = 0; j < deg; ++j) out[j] = static_cast<int64_t>(begin + j);
    return;
  }
  if (replace) {
    for (uint64_t t = 0; t < k; ++t) {
      out[t] = static_cast<int64_t>(begin + pick_bounded(pick_draw(key, t), deg));
    }
    return;
  }
  if (set != nullptr && k > kScanPicks) {
    for (uint64_t s = 0; s < (1ull << set->bits); ++s) set->slots[s] = ~0ull;
    for (uint64_t t = 0; t < k; ++t) {
      const uint64_t j = deg - k + t;
      uint64_t r = pick_bounded(pick_draw(key, t), j + 1);
      if (pick_set_test_and_add(*set, r)) {
        r = j;  // j > every offset so far: never in the set
        pick_set_test_and_add(*set, r);
      }
      out[t] = static_cast<int64_t>(begin + r);
    }
    return;
  }
  for (uint64_t t = 0; t < k; ++t) {
    const uint64_t j = deg - k + t;
    int64_t p = static_cast<int64_t>(begin + pick_bounded(pick_draw(key, t), j + 1));
    for (uint64_t s = 0; s < t; ++s) {
      if (out[s] == p) {
        p = static_cast<int64_t>(begin + j);
        break;
      }
    }
    out[t] = p;
  }
}


// ---------------------------------------------------------------------------
// Temporal and weighted picks. A node's neighbours at [begin, begin + deg)
// are narrowed to a window [a, a + n) first, then drawn from it.
//
// Temporal: etime holds one time per CSC position, non-decreasing within each
// node's neighbours; the window keeps the neighbours whose time is <= bound
// (the time of the seed the node descends from), and with strategy "last" only
// the latest `fanout` of them (which are then all taken).
//
// Weighted: wcum holds per CSC position the inclusive prefix sum of the edge
// weights (>= 0, finite) within the node's own neighbours (so it restarts at
// each node). An edge's weight is wcum[e] - wcum[e - 1]. Draws only use
// correctly rounded +, -, * on doubles (no fused multiply-add, no libm), so
// the CPU, the CUDA kernels and a Python reference pick the same edges.
//   with replacement: fanout draws, each edge with probability weight / total;
//   without: successive sampling (each pick proportional to the weights of the
//   edges not picked yet), by redrawing picks already taken, then, past a
//   budget of redraws, by an exact scan over the edges not taken;
//   taking all (fanout -1 or fanout >= n without replacement) keeps CSC order.
// Zero-weight edges are drawn only once the window's positive weight is used
// up, uniformly among those left (a window of total weight 0 is uniform).
// ---------------------------------------------------------------------------

struct PickMode {
  const double* wcum = nullptr;    // weighted sampling, or nullptr (uniform)
  const int64_t* etime = nullptr;  // temporal sampling, or nullptr
  bool last = false;               // temporal strategy "last" (else "uniform")
};

// Rounded exactly as IEEE-754 double ops on the host and the device (nvcc would
// otherwise fuse a * b + c into one fma).
IBP_SAMPLER_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__) && !defined(IBP_CUDA_EMU)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
IBP_SAMPLER_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__) && !defined(IBP_CUDA_EMU)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// A double in [0, 1) from 64 random bits (53 of them, exact).
IBP_SAMPLER_HD double unit_double(uint64_t r) {
  return static_cast<double>(r >> 11) * (1.0 / 9007199254740992.0);
}

// First position in [begin, end) whose time is > bound (times sorted).
IBP_SAMPLER_HD uint64_t time_window_end(const int64_t* etime, uint64_t begin, uint64_t end,
                                        int64_t bound) {
  while (begin < end) {
    const uint64_t mid = begin + (end - begin) / 2;
    if (etime[mid] <= bound) {
      begin = mid + 1;
    } else {
      end = mid;
    }
  }
  return begin;
}

// The window [*a, *a + *n) of a node whose neighbours sit at [begin, begin + deg).
IBP_SAMPLER_HD void pick_window(const PickMode& m, uint64_t begin, uint64_t deg, int64_t fanout,
                                int64_t bound, uint64_t* a, uint64_t* n) {
  uint64_t start = begin, end = begin + deg;
  if (m.etime != nullptr) {
    end = time_window_end(m.etime, begin, end, bound);
    if (m.last && fanout >= 0 && end - begin > static_cast<uint64_t>(fanout)) {
      start = end - static_cast<uint64_t>(fanout);
    }
  }
  *a = start;
  *n = end - start;
}

IBP_SAMPLER_HD double edge_weight(const double* wcum, uint64_t seg, uint64_t e) {
  return e > seg ? wcum[e] - wcum[e - 1] : wcum[e];
}

// Whether CSC position p is among out[0, cnt) (or in the set, when given).
IBP_SAMPLER_HD bool pick_taken(const int64_t* out, uint64_t cnt, const PickSet* set, uint64_t p) {
  if (set != nullptr) {
    const uint64_t mask = (1ull << set->bits) - 1;
    for (uint64_t h = (p * kGolden) >> (64 - set->bits);; h = (h + 1) & mask) {
      const uint64_t v = set->slots[h];
      if (v == p) return true;
      if (v == ~0ull) return false;
    }
  }
  for (uint64_t s = 0; s < cnt; ++s) {
    if (static_cast<uint64_t>(out[s]) == p) return true;
  }
  return false;
}

// One weighted draw over the window [a, a + n): the first position whose
// prefix sum exceeds lo + x * (hi - lo), where lo / hi are the prefix sums
// just before / at the end of the window (hi > lo).
IBP_SAMPLER_HD uint64_t weighted_draw(const double* wcum, uint64_t a, uint64_t n, double lo,
                                      double hi, uint64_t r) {
  const double u = add_rn(lo, mul_rn(unit_double(r), hi - lo));
  uint64_t l = a, h = a + n;
  while (l < h) {
    const uint64_t mid = l + (h - l) / 2;
    if (wcum[mid] > u) {
      h = mid;
    } else {
      l = mid + 1;
    }
  }
  if (l == a + n) {  // u rounded up to hi: the last edge of positive weight
    l = a + n - 1;
    while (l > a && !(wcum[l] > wcum[l - 1])) --l;
  }
  return l;
}

// Redraws of taken picks allowed before the exact scan takes over.
IBP_SAMPLER_HD uint64_t weighted_redraw_budget(uint64_t k) { return 4 * k + 16; }

// Weighted picks of a node (segment begin `seg`) from its window [a, a + n):
// k = pick_count(n, fanout, replace) CSC positions written to out. `set`: as
// for pick_positions (membership of the picks so far).
IBP_SAMPLER_HD void pick_weighted(const double* wcum, uint64_t seg, uint64_t a, uint64_t n,
                                  int64_t fanout, bool replace, uint64_t key, int64_t* out,
                                  const PickSet* set = nullptr) {
  const uint64_t k = pick_count(n, fanout, replace);
  if (k == 0) return;
  const double lo = a > seg ? wcum[a - 1] : 0.0, hi = wcum[a + n - 1];
  if (fanout < 0 || (!replace && k == n) || !(hi > lo)) {
    pick_positions(a, n, fanout, replace, key, out, set);
    return;
  }
  if (replace) {
    for (uint64_t t = 0; t < k; ++t) {
      out[t] = static_cast<int64_t>(weighted_draw(wcum, a, n, lo, hi, pick_draw(key, t)));
    }
    return;
  }
  if (set != nullptr) {
    for (uint64_t s = 0; s < (1ull << set->bits); ++s) set->slots[s] = ~0ull;
  }
  auto take = [&](uint64_t cnt, uint64_t p) {
    out[cnt] = static_cast<int64_t>(p);
    if (set != nullptr) pick_set_test_and_add(*set, p);
  };
  uint64_t cnt = 0, t = 0;
  for (const uint64_t budget = weighted_redraw_budget(k); cnt < k && t < budget; ++t) {
    const uint64_t p = weighted_draw(wcum, a, n, lo, hi, pick_draw(key, t));
    if (!pick_taken(out, cnt, set, p)) take(cnt++, p);
  }
  for (; cnt < k; ++cnt, ++t) {  // the exact scan over the edges not taken
    double rest = 0.0;
    for (uint64_t e = a; e < a + n; ++e) {
      if (!pick_taken(out, cnt, set, e)) rest = add_rn(rest, edge_weight(wcum, seg, e));
    }
    const uint64_t r = pick_draw(key, t);
    uint64_t p = a + n;
    if (rest > 0.0) {
      const double u = mul_rn(unit_double(r), rest);
      double acc = 0.0;
      for (uint64_t e = a; e < a + n; ++e) {
        const double w = edge_weight(wcum, seg, e);
        if (!(w > 0.0) || pick_taken(out, cnt, set, e)) continue;
        acc = add_rn(acc, w);
        p = e;  // the last candidate, should rounding leave acc <= u
        if (acc > u) break;
      }
    } else {  // only zero weights left: uniform among the edges not taken
      uint64_t skip = pick_bounded(r, n - cnt);
      for (uint64_t e = a; e < a + n; ++e) {
        if (pick_taken(out, cnt, set, e)) continue;
        if (skip-- == 0) {
          p = e;
          break;
        }
      }
    }
    take(cnt, p);
  }
}

// The picks of one node: its window, then uniform or weighted draws from it.
// Returns the number of picks written to out.
IBP_SAMPLER_HD uint64_t pick_node(const PickMode& m, uint64_t begin, uint64_t deg,
                                  int64_t fanout, bool replace, int64_t bound, uint64_t key,
                                  int64_t* out, const PickSet* set = nullptr) {
  uint64_t a = 0, n = 0;
  pick_window(m, begin, deg, fanout, bound, &a, &n);
  if (m.wcum != nullptr) {
    pick_weighted(m.wcum, begin, a, n, fanout, replace, key, out, set);
  } else {
    pick_positions(a, n, fanout, replace, key, out, set);
  }
  return pick_count(n, fanout, replace);
}

// The number of picks pick_node writes.
IBP_SAMPLER_HD uint64_t pick_node_count(const PickMode& m, uint64_t begin, uint64_t deg,
                                        int64_t fanout, bool replace, int64_t bound) {
  uint64_t a = 0, n = 0;
  pick_window(m, begin, deg, fanout, bound, &a, &n);
  return pick_count(n, fanout, replace);
}

}  // namespace sampler
}  // namespace ibp
