// A minimal fork-join helper: std::thread only, so the module never brings an
// OpenMP runtime that could clash with the one torch loads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace ibp {

// Bytes of work below which spawning threads costs more than it saves.
constexpr uint64_t kMinParallelBytes = 1ull << 18;

// Calls fn(begin, end) on contiguous slices of [0, n), one per thread.
template <typename Fn>
void parallel_for(uint64_t n, int num_threads, uint64_t work_bytes, const Fn& fn) {
  uint64_t t = num_threads < 1 ? 1 : static_cast<uint64_t>(num_threads);
  if (work_bytes < kMinParallelBytes) t = 1;
  t = std::min<uint64_t>(t, n);
  if (t <= 1) {
    if (n) fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(t - 1);
  const uint64_t step = (n + t - 1) / t;
  for (uint64_t k = 1; k < t; ++k) {
    const uint64_t a = std::min(n, k * step), b = std::min(n, a + step);
    if (a < b) pool.emplace_back([&fn, a, b] { fn(a, b); });
  }
  fn(0, std::min(n, step));
  for (auto& th : pool) th.join();
}

}  // namespace ibp
