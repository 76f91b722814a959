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

}  // namespace sampler
}  // namespace ibp
