// A minimal fork-join helper: std::thread only, so the module never brings an
// OpenMP runtime that could clash with the one torch loads.
//
// Contract: parallel_for never ends the process. A thread that cannot be
// created (thread limits, address-space limits) leaves its slice to the
// calling thread; an exception thrown by fn in any slice is rethrown to the
// caller after every started thread has been joined (the first one wins).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ibp {

// Bytes of work below which spawning threads costs more than it saves.
constexpr uint64_t kMinParallelBytes = 1ull << 18;

// Threads a single call may start, whatever it is asked for.
constexpr uint64_t kMaxThreads = 256;

// Calls fn(begin, end) on contiguous slices of [0, n), one per thread.
template <typename Fn>
void parallel_for(uint64_t n, int num_threads, uint64_t work_bytes, const Fn& fn) {
  uint64_t t = num_threads < 1 ? 1 : static_cast<uint64_t>(num_threads);
  if (work_bytes < kMinParallelBytes) t = 1;
  t = std::min<uint64_t>(std::min<uint64_t>(t, n), kMaxThreads);
  if (t <= 1) {
    if (n) fn(0, n);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&fn, &error, &error_mutex](uint64_t a, uint64_t b) {
    try {
      fn(a, b);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  const uint64_t step = (n + t - 1) / t;
  std::vector<std::thread> pool;
  std::vector<uint64_t> left;  // slices no thread could be started for
  try {
    pool.reserve(t - 1);
    left.reserve(t - 1);
  } catch (...) {
  }
  for (uint64_t k = 1; k < t; ++k) {
    const uint64_t a = std::min(n, k * step), b = std::min(n, a + step);
    if (a >= b) continue;
    try {
      pool.emplace_back(run, a, b);
    } catch (...) {  // std::system_error or std::bad_alloc: run it here instead
      try {
        left.push_back(k);
      } catch (...) {
        run(a, b);
      }
    }
  }
  run(0, std::min(n, step));
  for (uint64_t k : left) {
    const uint64_t a = std::min(n, k * step);
    run(a, std::min(n, a + step));
  }
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

// Calls fn(begin, end) on slices of `grain` items of [0, n) that up to
// num_threads threads (the caller one of them) take in turn from a shared
// counter, so a thread that starts late or is descheduled takes fewer slices
// and the call is never much slower than the caller alone. Same error
// contract as parallel_for.
template <typename Fn>
void parallel_slices(uint64_t n, int num_threads, uint64_t grain, const Fn& fn) {
  grain = std::max<uint64_t>(grain, 1);
  const uint64_t slices = (n + grain - 1) / grain;
  uint64_t t = num_threads < 1 ? 1 : static_cast<uint64_t>(num_threads);
  t = std::min<uint64_t>(std::min<uint64_t>(t, slices), kMaxThreads);
  if (t <= 1) {
    if (n) fn(0, n);
    return;
  }
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&]() {
    try {
      for (;;) {
        if (failed.load(std::memory_order_relaxed)) return;
        const uint64_t a = next.fetch_add(grain, std::memory_order_relaxed);
        if (a >= n) return;
        fn(a, std::min(n, a + grain));
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> pool;
  try {
    pool.reserve(t - 1);
    for (uint64_t k = 1; k < t; ++k) pool.emplace_back(run);
  } catch (...) {  // threads that cannot start: the others take their slices
  }
  run();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ibp
