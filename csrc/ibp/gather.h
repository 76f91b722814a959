// gather: out[i] = row ids[i] of a compressed tensor, bit for bit.
//
// The caller (the binding) checks every input once before calling: ids in
// [0, rows), out large enough (n * row_bytes bytes), arrays of the sizes the
// geometry implies, and a tensor that passed validate(). The backends trust it.
#pragma once

#include <cstdint>

#include "bits.h"

namespace ibp {

// A compressed tensor as a decoder sees it.
struct CompressedView {
  Geometry geo;
  const uint32_t* table;    // build_decode_table() output (bits.h, coded.h)
  const uint64_t* bases;    // index block bases
  const void* rel;          // relative offsets (geo.rel_bytes each)
  const uint32_t* payload;  // geo.payload_words words
};

// The geometry a header describes (block_rows is a power of two, checked by validate()).
inline Geometry geometry_of(const FileHeader& h) {
  Geometry g;
  g.rows = h.rows;
  g.row_bytes = h.cols * dtype_bytes(h.dtype);
  g.row_words = h.row_words;
  g.num_groups = h.num_groups;
  g.group_bits = h.group_bits;
  g.block_shift = 0;
  while ((1u << g.block_shift) < h.block_rows) ++g.block_shift;
  g.rel_bytes = h.rel_bytes;
  g.payload_words = payload_words(h.payload_bits);
  g.code_rows = h.code_rows;
  return g;
}

// Which CPU decode of kIbp rows to use (cpu/dense.h); all write the same
// bits. kPortable: scalar with the shared bits.h deposit the CUDA kernel
// runs; kBmi2: scalar with the x86 PDEP instruction; kAvx2 / kAvx512: 8 words
// at a time (AVX2 + BMI2; AVX-512 F/BW/VL/VBMI/VBMI2, 16). kAuto: the environment
// variable IBP_CPU_KERNEL (portable, bmi2, avx2, avx512) when that kernel
// runs here, else the fastest this CPU has. A kernel the CPU lacks runs as kAuto.
enum class CpuKernel : int { kAuto = 0, kPortable = 1, kBmi2 = 2, kAvx2 = 3, kAvx512 = 4 };
bool cpu_has_bmi2();
bool cpu_has_kernel(CpuKernel k);
CpuKernel auto_kernel();

// Threads for a CPU gather, from an estimate of its single-thread time: each
// row costs kOutputPs picoseconds per output byte (writing it; all a sparse
// row's decode does besides) plus kPayloadPs per payload byte it decodes (a
// dense row's fields). A thread gets at least kGatherNsPerThread of that
// work, about twenty times what starting and joining it costs, so calls too
// small to gain run on one thread. Measured on x86 CPUs of 2020-2024 (one
// thread: ~10 GB/s writing sparse rows, ~1.5 GB/s decoding dense payload).
constexpr uint64_t kOutputPs = 100;
constexpr uint64_t kPayloadPs = 700;
constexpr uint64_t kGatherNsPerThread = 1000000;

// Threads gather_cpu uses for n rows of row_bytes bytes, of payload_bytes
// compressed bytes each on average, when allowed num_threads: the estimate
// above over kGatherNsPerThread, capped at num_threads; 1 below two threads'
// worth. payload_bytes = row_bytes assumes rows that compress nothing.
int gather_threads(uint64_t n, uint64_t row_bytes, int num_threads, uint64_t payload_bytes);

// Multithreaded CPU gather-decode on gather_threads(n, row_bytes, num_threads,
// the tensor's payload bytes per row) threads, taking slices of rows in turn
// (parallel_slices: a thread that gets no core leaves its share to the others) (releases nothing itself; the binding drops
// the GIL around it). ids are int64 when ids64, else int32.
void gather_cpu(const CompressedView& c, const void* ids, bool ids64, uint64_t n, uint8_t* out,
                int num_threads, CpuKernel kernel = CpuKernel::kAuto);

// CUDA gather-decode, enqueued on `stream` (a cudaStream_t) without any
// synchronisation. table, bases, rel and ids must be device-accessible; the
// payload may live in mapped pinned host memory (read zero-copy) or on the
// device. When `positions` is not null, the i-th id is written to output row
// positions[i] (int64), which lets the caller decode ids in sorted order.
// Returns 0 or a cudaError_t value; -1 when the module was built without CUDA.
int gather_cuda(const CompressedView& c, const void* ids, bool ids64, uint64_t n,
                const int64_t* positions, uint8_t* out, void* stream);

// Page-locks `bytes` bytes at `ptr` where they are (mapped for the GPU;
// read-only when asked, as a read-only file mapping needs) and sets
// *device_ptr to the address a kernel reads them at. Memory mapped from a file
// stays one copy, shared by every process mapping the file. host_unregister
// undoes it. Return 0 or a cudaError_t; -1 without CUDA. Used by the codec's
// payload and the sampler's graph arrays.
int host_register(void* ptr, uint64_t bytes, bool read_only, uintptr_t* device_ptr);
int host_unregister(void* ptr);

// Whether the CUDA gather was compiled in, and the visible device count (0
// when none or when the driver is missing).
bool cuda_built();
int cuda_device_count();

}  // namespace ibp
