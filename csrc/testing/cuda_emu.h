// CUDA on the CPU: compiles the project's .cu sources as host C++ so every
// kernel body runs (bit-exactly, under ASan/UBSan) on machines without a GPU.
//
// Each CUDA thread of a block is a fiber; blocks run one after another. A
// fiber runs until it reaches a warp collective (__shfl*_sync, __ballot_sync,
// __syncwarp, ...), __syncthreads or an atomic, then switches. A collective
// completes when every lane its mask names has reached the same call site
// (file and line: the compiler may duplicate a call's code) with the same mask; a named lane that exited,
// lanes stuck at different sites, or a mask that leaves out the calling lane
// raise ibp_emu::Error naming file:line. __shared__ variables are statics,
// which is exact because blocks never overlap.
//
// Host-memory traffic: loads that kernels issue through ibp_emu::load() (the
// IBP_LOAD / IBP_LOAD16 macros) on a registered host range are counted per
// launch: 32-byte sector requests (distinct sectors of each warp-wide load
// instruction, as the coalescer issues them), distinct sectors of the launch,
// and dependent round trips: a warp's run of host loads ends at the next
// warp collective or barrier (where lanes exchange what the loads returned),
// and the next host load starts a new round trip.
//
// Compiled with -DIBP_CUDA_EMU -D__CUDA_ARCH__=800 so the device branches of
// shared headers (bits.h, pick.h, relabel.h) are the ones exercised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>

#if !defined(IBP_CUDA_EMU) || !defined(__CUDA_ARCH__)
#error "cuda_emu.h needs -DIBP_CUDA_EMU -D__CUDA_ARCH__=<arch>"
#endif

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};

using cudaError_t = int;
using cudaStream_t = void*;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
constexpr cudaError_t cudaErrorLaunchFailure = 719;
constexpr unsigned cudaHostRegisterPortable = 1;
constexpr unsigned cudaHostRegisterMapped = 2;
constexpr unsigned cudaHostRegisterReadOnly = 8;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ static

namespace ibp_emu {

// A kernel that broke a rule of the CUDA execution model; carries file:line.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Thread {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
};
extern thread_local Thread* g_thread;  // the running CUDA thread

enum class Op : int { kIdx, kUp, kDown, kXor, kBallot, kAny, kAll, kSyncwarp };

// A warp collective by the calling lane; returns its result.
uint64_t collective(Op op, unsigned mask, uint64_t value, int arg, int width, const char* file,
                    int line, const void* call);
void syncthreads(const char* file, int line, const void* call);
void yield();  // a switch point (before every atomic)

// Counted loads of host memory (pass-through elsewhere).
uint32_t load_u32(const uint32_t* p);
uint4 load_u128(const uint4* p);

// Runs body() once per thread of grid x block; throws Error on a violation.
void launch(const char* kernel, const char* file, int line, dim3 grid, dim3 block,
            size_t shared_bytes, const std::function<void()>& body);

// Loads in [begin, begin + bytes) are host-memory loads while the guard lives.
struct HostRange {
  HostRange(const void* begin, size_t bytes);
  ~HostRange();
};

struct Counters {
  uint64_t launches;
  uint64_t host_loads;       // per lane
  uint64_t host_bytes;       // bytes those loads returned
  uint64_t sector_requests;  // 32-byte sectors, per warp-wide instruction
  uint64_t distinct_sectors; // distinct sectors, summed over launches
  uint64_t round_trips;      // dependent host round trips, summed over warps
};
Counters counters();
void reset_counters();

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a wide type");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <typename T>
__attribute__((noinline)) T shfl(Op op, const char* file, int line, unsigned mask, T v, int arg,
                                 int width = 32) {
  return from_bits<T>(
      collective(op, mask, to_bits(v), arg, width, file, line, __builtin_return_address(0)));
}
__attribute__((noinline)) inline unsigned ballot(Op op, const char* file, int line,
                                                 unsigned mask, int pred) {
  return static_cast<unsigned>(collective(op, mask, pred != 0, 0, 32, file, line,
                                          __builtin_return_address(0)));
}
inline unsigned mask_or_full() { return 0xFFFFFFFFu; }
inline unsigned mask_or_full(unsigned m) { return m; }
__attribute__((noinline)) inline void syncwarp(const char* file, int line, unsigned mask) {
  collective(Op::kSyncwarp, mask, 0, 0, 32, file, line, __builtin_return_address(0));
}
__attribute__((noinline)) inline void barrier(const char* file, int line) {
  syncthreads(file, line, __builtin_return_address(0));
}

}  // namespace ibp_emu

#define threadIdx (::ibp_emu::g_thread->thread_idx)
#define blockIdx (::ibp_emu::g_thread->block_idx)
#define blockDim (::ibp_emu::g_thread->block_dim)
#define gridDim (::ibp_emu::g_thread->grid_dim)
#define warpSize 32

#define __shfl_sync(...) ::ibp_emu::shfl(::ibp_emu::Op::kIdx, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::ibp_emu::shfl(::ibp_emu::Op::kUp, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) \
  ::ibp_emu::shfl(::ibp_emu::Op::kDown, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::ibp_emu::shfl(::ibp_emu::Op::kXor, __FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, pred) \
  ::ibp_emu::ballot(::ibp_emu::Op::kBallot, __FILE__, __LINE__, mask, pred)
#define __any_sync(mask, pred) ::ibp_emu::ballot(::ibp_emu::Op::kAny, __FILE__, __LINE__, mask, pred)
#define __all_sync(mask, pred) ::ibp_emu::ballot(::ibp_emu::Op::kAll, __FILE__, __LINE__, mask, pred)
#define __syncwarp(...) ::ibp_emu::syncwarp(__FILE__, __LINE__, ::ibp_emu::mask_or_full(__VA_ARGS__))
#define __syncthreads() ::ibp_emu::barrier(__FILE__, __LINE__)

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(static_cast<unsigned>(x)) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll(static_cast<unsigned long long>(x)) : 64; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

// Atomics: a switch point, then the operation (fibers never run at once).
namespace ibp_emu {
template <typename T>
struct Same {
  using type = T;
};
}  // namespace ibp_emu
template <typename T>
inline T atomicCAS(T* p, typename ibp_emu::Same<T>::type expected,
                   typename ibp_emu::Same<T>::type desired) {
  ::ibp_emu::yield();
  const T old = *p;
  if (old == expected) *p = desired;
  return old;
}
template <typename T>
inline T atomicAdd(T* p, typename ibp_emu::Same<T>::type v) {
  ::ibp_emu::yield();
  const T old = *p;
  *p = static_cast<T>(old + v);
  return old;
}
template <typename T>
inline T atomicMin(T* p, typename ibp_emu::Same<T>::type v) {
  ::ibp_emu::yield();
  const T old = *p;
  if (v < old) *p = v;
  return old;
}
template <typename T>
inline T atomicMax(T* p, typename ibp_emu::Same<T>::type v) {
  ::ibp_emu::yield();
  const T old = *p;
  if (v > old) *p = v;
  return old;
}
template <typename T>
inline T atomicExch(T* p, typename ibp_emu::Same<T>::type v) {
  ::ibp_emu::yield();
  const T old = *p;
  *p = v;
  return old;
}
template <typename T>
inline T atomicOr(T* p, typename ibp_emu::Same<T>::type v) {
  ::ibp_emu::yield();
  const T old = *p;
  *p = old | v;
  return old;
}
template <typename T>
inline T atomicAnd(T* p, typename ibp_emu::Same<T>::type v) {
  ::ibp_emu::yield();
  const T old = *p;
  *p = old & v;
  return old;
}

// The runtime API the sources call, on host memory.
cudaError_t cudaGetLastError();
cudaError_t cudaHostRegister(void* ptr, size_t bytes, unsigned flags);
cudaError_t cudaHostGetDevicePointer(void** dev, void* ptr, unsigned flags);
cudaError_t cudaHostUnregister(void* ptr);
cudaError_t cudaGetDeviceCount(int* count);
