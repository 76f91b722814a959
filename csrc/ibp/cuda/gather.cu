// CUDA gather-decode: one warp per requested row. The payload is read
// zero-copy (mapped pinned host memory) with coalesced 4-byte loads covering
// only the row's compressed bits; the decode tables and the index live on the
// device. Decoding a chunk of 32 words: each lane finds its field length, a
// warp scan gives the field offsets, the warp loads the chunk's span of
// payload words once, and each lane picks its field out of the span with
// shuffles before rebuilding its word with the shared bits.h helpers.
#include "../gather.h"
#include "launch.h"

namespace ibp {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

__device__ __forceinline__ uint32_t warp_inclusive_sum(uint32_t v, int lane) {
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const uint32_t up = __shfl_up_sync(kFullMask, v, d);
    if (lane >= d) v += up;
  }
  return v;
}

// Word j (0..63) of the span held as A (words 0..31) and B (words 32..63).
__device__ __forceinline__ uint32_t span_word(uint32_t a, uint32_t b, uint32_t j) {
  const uint32_t from_a = __shfl_sync(kFullMask, a, j & 31);
  const uint32_t from_b = __shfl_sync(kFullMask, b, j & 31);
  return j < 32 ? from_a : from_b;
}

// Word w of an output row: one 4-byte store where the row is 4-byte aligned
// and whole words, else bytes (out= may be a view at any element offset).
__device__ __forceinline__ void store_word(uint8_t* row, uint64_t row_bytes, uint32_t w,
                                           uint32_t word) {
  if (((reinterpret_cast<uintptr_t>(row) | row_bytes) & 3) == 0) {
    reinterpret_cast<uint32_t*>(row)[w] = word;
    return;
  }
  for (uint32_t k = 0; k < 4; ++k) {
    const uint64_t at = 4ull * w + k;
    if (at < row_bytes) row[at] = static_cast<uint8_t>(word >> (8 * k));
  }
}

// A kSparse row: lanes write the group's values, then the listed words.
__device__ void decode_sparse(const uint32_t* __restrict__ p, uint64_t pos,
                              const uint32_t* __restrict__ table, uint32_t W, int lane,
                              uint8_t* row, uint64_t row_bytes) {
  const SparseRow s(p, pos, W);
  for (uint32_t w = lane; w < W; w += 32) store_word(row, row_bytes, w, table[kValue * W + w]);
  __syncwarp();  // the listed words overwrite the values (bytes, for odd widths)
  if (s.bitmap) {
    uint32_t first = 0;  // index of the first listed word of this chunk
    for (uint32_t w0 = 0; w0 < W; w0 += 32) {
      const uint32_t bits = read_bits(p, s.where + w0, W - w0 < 32 ? W - w0 : 32);
      if ((bits >> lane) & 1u) {
        store_word(row, row_bytes, w0 + lane,
                   s.listed_value(p, first + popc32(bits & low_mask(lane))));
      }
      first += popc32(bits);
    }
  } else {
    for (uint32_t i = lane; i < s.count; i += 32) {
      const uint32_t w = read_bits(p, s.where + static_cast<uint64_t>(i) * s.pos_bits, s.pos_bits);
      store_word(row, row_bytes, w, s.listed_value(p, i));
    }
  }
  __syncwarp();
}

template <typename Id>
__global__ void gather_kernel(CompressedView c, const Id* __restrict__ ids, uint64_t n,
                              const int64_t* __restrict__ positions, uint8_t* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const uint64_t warps = static_cast<uint64_t>(gridDim.x) * kWarpsPerBlock;
  const Geometry& geo = c.geo;
  const uint32_t W = geo.row_words;
  const uint32_t* __restrict__ p = c.payload;

  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(kWarpsPerBlock) + (threadIdx.x >> 5); i < n;
       i += warps) {
    const uint64_t r = static_cast<uint64_t>(ids[i]);
    uint8_t* row = out + static_cast<uint64_t>(positions ? positions[i] : i) * geo.row_bytes;
    if (r >= geo.rows) {  // only when the caller skipped its range check: zeros, no stray read
      for (uint64_t k = lane; k < geo.row_bytes; k += 32) row[k] = 0;
      continue;
    }
    const uint64_t start = row_start(c.bases, c.rel, geo.rel_bytes, geo.block_shift, r);
    const uint32_t head = read_bits(p, start, kModeBits + geo.group_bits);
    const uint32_t mode = head & low_mask(kModeBits);
    const bool raw = mode == static_cast<uint32_t>(RowMode::kRaw);
    const uint32_t g = head >> kModeBits;
    const uint32_t* table = c.table + static_cast<uint64_t>(g) * kDecodeRows * W;
    const uint64_t bitmap = start + kModeBits + geo.group_bits;
    if (mode == static_cast<uint32_t>(RowMode::kSparse)) {
      decode_sparse(p, bitmap, table, W, lane, row, geo.row_bytes);
      continue;
    }
    uint64_t field = raw ? bitmap : bitmap + W;

    for (uint32_t w0 = 0; w0 < W; w0 += 32) {
      const uint32_t w = w0 + lane;
      const bool active = w < W;
      const uint32_t chunk = W - w0 < 32 ? W - w0 : 32;
      bool part = false;
      if (!raw) part = (read_bits(p, bitmap + w0, chunk) >> lane) & 1u;
      const uint32_t len = !active ? 0 : (part ? table[kNvar * W + w] : 32);

      const uint32_t incl = warp_inclusive_sum(len, lane);
      const uint32_t total = __shfl_sync(kFullMask, incl, 31);
      const uint32_t shift0 = static_cast<uint32_t>(field & 31);
      const uint64_t span = field >> 5;
      const uint32_t needed = (shift0 + total + 31) >> 5;  // at most 33 words
      const uint32_t a = static_cast<uint32_t>(lane) < needed ? IBP_LOAD(p, span + lane) : 0;
      const uint32_t b = static_cast<uint32_t>(lane) + 32 < needed ? IBP_LOAD(p, span + 32 + lane) : 0;

      const uint32_t q = shift0 + incl - len;
      const uint32_t lo = span_word(a, b, q >> 5);
      const uint32_t hi = span_word(a, b, (q >> 5) + 1);
      const uint64_t window = (static_cast<uint64_t>(hi) << 32) | lo;
      const uint32_t bits = static_cast<uint32_t>(window >> (q & 31)) & low_mask(len);

      if (active) store_word(row, geo.row_bytes, w, decode_word(bits, part, table, W, w));
      field += total;
    }
  }
}

}  // namespace

int gather_cuda(const CompressedView& c, const void* ids, bool ids64, uint64_t n,
                const int64_t* positions, uint8_t* out, void* stream) {
  if (n == 0) return 0;
  const uint64_t want = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const unsigned blocks = static_cast<unsigned>(want < (1u << 20) ? want : (1u << 20));
  auto s = static_cast<cudaStream_t>(stream);
  if (ids64) {
    IBP_LAUNCH(gather_kernel<int64_t>, blocks, kWarpsPerBlock * 32, 0, s, c,
               static_cast<const int64_t*>(ids), n, positions, out);
  } else {
    IBP_LAUNCH(gather_kernel<int32_t>, blocks, kWarpsPerBlock * 32, 0, s, c,
               static_cast<const int32_t*>(ids), n, positions, out);
  }
  return static_cast<int>(cudaGetLastError());
}

int host_register(void* ptr, uint64_t bytes, bool read_only, uintptr_t* device_ptr) {
  const unsigned flags = cudaHostRegisterPortable | cudaHostRegisterMapped |
                         (read_only ? cudaHostRegisterReadOnly : 0u);
  cudaError_t e = cudaHostRegister(ptr, bytes, flags);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return static_cast<int>(e);
  }
  void* dev = nullptr;
  e = cudaHostGetDevicePointer(&dev, ptr, 0);
  if (e != cudaSuccess) {
    cudaHostUnregister(ptr);
    cudaGetLastError();
    return static_cast<int>(e);
  }
  *device_ptr = reinterpret_cast<uintptr_t>(dev);
  return 0;
}

int host_unregister(void* ptr) {
  const cudaError_t e = cudaHostUnregister(ptr);
  if (e != cudaSuccess) cudaGetLastError();
  return static_cast<int>(e);
}

bool cuda_built() { return true; }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

}  // namespace ibp
