// CUDA gather-decode, one fetch per row. Each warp takes 32 / G requested
// rows (G lanes per row: 32, or 16, 8, 4 for rows of few words). The lanes
// read the rows' compressed spans [start, end) -- both from the index, which
// lives on the device -- from the payload (mapped pinned host memory, read
// zero-copy) with 16-byte loads starting at a 32-byte sector boundary, all
// issued before any of them is used, into the warp's shared-memory buffer;
// then each group decodes its row from shared memory: a scan of the field
// lengths gives every lane its field, rebuilt with the shared bits.h helpers.
// Rows whose span exceeds the buffer (over 4 KiB compressed) are decoded
// straight from host memory chunk by chunk.
#include "../coded.h"
#include "../gather.h"
#include "../sparse_code.h"
#include "launch.h"

#if defined(IBP_CUDA_EMU)
#define IBP_LOAD16(p) ::ibp_emu::load_u128(p)
#else
#define IBP_LOAD16(p) (*(p))
#endif

namespace ibp {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr unsigned kFullMask = 0xFFFFFFFFu;
// Words of a warp's buffer: a 4 KiB span, up to 7 words of sector alignment
// and the word read_bits may touch past it; divisible into 16-byte slices for
// 8 groups of 4 lanes.
constexpr uint32_t kBufWords = 1024 + 32;

// Lanes that decode one row: fewer than a warp for rows of few words.
__host__ __device__ __forceinline__ uint32_t lanes_per_row(uint32_t W) {
  return W > 16 ? 32 : W > 8 ? 16 : W > 4 ? 8 : 4;
}

__device__ __forceinline__ unsigned group_mask(uint32_t G, int lane) {
  return G == 32 ? kFullMask : ((1u << G) - 1u) << (static_cast<uint32_t>(lane) & ~(G - 1));
}

__device__ __forceinline__ uint32_t group_inclusive_sum(uint32_t v, uint32_t g, uint32_t G,
                                                        unsigned mask) {
  for (uint32_t d = 1; d < G; d <<= 1) {
    const uint32_t up = __shfl_up_sync(mask, v, d, G);
    if (g >= d) v += up;
  }
  return v;
}

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

// A kSparse row read from p (shared or host memory) by the G lanes of `mask`:
// they write the group's values, then the listed words.
__device__ void decode_sparse(const uint32_t* __restrict__ p, uint64_t pos,
                              const uint32_t* __restrict__ table, uint32_t W, uint32_t g,
                              uint32_t G, unsigned mask, uint8_t* row, uint64_t row_bytes) {
  const SparseRow s(p, pos, W);
  for (uint32_t w = g; w < W; w += G) store_word(row, row_bytes, w, table[kValue * W + w]);
  __syncwarp(mask);  // the listed words overwrite the values (bytes, for odd widths)
  if (s.bitmap) {
    uint32_t first = 0;  // index of the first listed word of this chunk
    for (uint32_t w0 = 0; w0 < W; w0 += G) {
      const uint32_t bits = read_bits(p, s.where + w0, W - w0 < G ? W - w0 : G);
      if ((bits >> g) & 1u) {
        store_word(row, row_bytes, w0 + g, s.listed_value(p, first + popc32(bits & low_mask(g))));
      }
      first += popc32(bits);
    }
  } else {
    for (uint32_t i = g; i < s.count; i += G) {
      const uint32_t w = read_bits(p, s.where + static_cast<uint64_t>(i) * s.pos_bits, s.pos_bits);
      store_word(row, row_bytes, w, s.listed_value(p, i));
    }
  }
  __syncwarp(mask);
}

// A coded-form kSparse row (sparse_code.h) read from p by the G lanes of
// `mask`: all walk its stream, lane i % G stores listed word i.
__device__ void decode_sparse_code(const uint32_t* __restrict__ p, uint64_t pos,
                                   const uint32_t* __restrict__ table, uint32_t W, uint32_t g,
                                   uint32_t G, unsigned mask, uint8_t* row, uint64_t row_bytes) {
  for (uint32_t w = g; w < W; w += G) store_word(row, row_bytes, w, table[kValue * W + w]);
  __syncwarp(mask);  // values first: listed words (or their bytes) are stored over them
  uint64_t stop;
  walk_sparse_code(p, pos, ~0ull, W, [&](uint32_t i, uint32_t w, uint32_t word) {
    if (i % G == g) store_word(row, row_bytes, w, word);
  }, &stop);
  __syncwarp(mask);
}

// A kRaw or kIbp row whose bits sit in shared memory, by the G lanes of mask.
__device__ void decode_dense(const uint32_t* s, uint64_t bitmap, bool raw,
                             const uint32_t* __restrict__ table, uint32_t W, uint32_t g,
                             uint32_t G, unsigned mask, uint8_t* row, uint64_t row_bytes) {
  uint64_t field = raw ? bitmap : bitmap + W;
  for (uint32_t w0 = 0; w0 < W; w0 += G) {
    const uint32_t w = w0 + g;
    const bool active = w < W;
    const bool part = !raw && active && read_bits(s, bitmap + w, 1);
    const uint32_t len = !active ? 0 : (part ? table[kNvar * W + w] : 32);
    const uint32_t incl = group_inclusive_sum(len, g, G, mask);
    const uint32_t total = __shfl_sync(mask, incl, G - 1, G);
    if (active) {
      const uint32_t bits = read_bits(s, field + incl - len, len);
      store_word(row, row_bytes, w, decode_word(bits, part, table, W, w));
    }
    field += total;
  }
}

// A kRaw or kIbp row too long for the buffer, read from host memory by the
// whole warp: per chunk of 32 words, the warp loads the chunk's span of
// payload words once and each lane picks its field out with shuffles.
__device__ void decode_dense_host(const uint32_t* __restrict__ p, uint64_t bitmap, bool raw,
                                  const uint32_t* __restrict__ table, uint32_t W, int lane,
                                  uint8_t* row, uint64_t row_bytes) {
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

    if (active) store_word(row, row_bytes, w, decode_word(bits, part, table, W, w));
    field += total;
  }
}

// Stores the words of a kCoded row (coded.h) into an output row.
struct StoreWord {
  uint8_t* row;
  uint64_t row_bytes;
  __device__ void operator()(uint32_t w, uint32_t word) const { store_word(row, row_bytes, w, word); }
};

template <typename Id>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
gather_kernel(CompressedView c, const Id* __restrict__ ids, uint64_t n,
              const int64_t* __restrict__ positions, uint8_t* __restrict__ out) {
  __shared__ uint4 buffer[kWarpsPerBlock][kBufWords / 4];
  const int lane = threadIdx.x & 31;
  const Geometry& geo = c.geo;
  const uint32_t W = geo.row_words;
  const uint32_t* __restrict__ p = c.payload;
  const uint32_t G = lanes_per_row(W);
  const uint32_t R = 32 / G;                                     // rows per warp
  const uint32_t g = static_cast<uint32_t>(lane) & (G - 1);
  const uint32_t grp = static_cast<uint32_t>(lane) / G;
  const unsigned mask = group_mask(G, lane);
  const uint32_t cap = kBufWords / R;  // words of the group's slice
  uint32_t* slice = reinterpret_cast<uint32_t*>(buffer[threadIdx.x >> 5]) + grp * cap;
  const bool vec = (reinterpret_cast<uintptr_t>(p) & 15) == 0;
  const uint64_t warps = static_cast<uint64_t>(gridDim.x) * kWarpsPerBlock;

  for (uint64_t base = (blockIdx.x * static_cast<uint64_t>(kWarpsPerBlock) + (threadIdx.x >> 5)) * R;
       base < n; base += warps * R) {
    const uint64_t i = base + grp;
    const uint64_t r = i < n ? static_cast<uint64_t>(ids[i]) : 0;
    const bool valid = i < n && r < geo.rows;
    uint8_t* row = out + static_cast<uint64_t>(i < n && positions ? positions[i] : i) * geo.row_bytes;
    if (i < n && !valid) {  // only when the caller skipped its range check: zeros, no stray read
      for (uint64_t k = g; k < geo.row_bytes; k += G) row[k] = 0;
    }
    uint64_t start = 0, first = 0;
    bool fits = false;
    if (valid) {
      start = row_start(c.bases, c.rel, geo.rel_bytes, geo.block_shift, r);
      const uint64_t end = row_end(c.bases, c.rel, geo.rel_bytes, geo.block_shift, geo.rows, r);
      // From the sector holding the first bit (not before the payload) through
      // the word holding the last one. read_bits may also read the next word,
      // whose bits it then masks off: the slice has room for it.
      const uintptr_t at = reinterpret_cast<uintptr_t>(p + (start >> 5)) & ~uintptr_t(31);
      first = at < reinterpret_cast<uintptr_t>(p) ? 0 : (at - reinterpret_cast<uintptr_t>(p)) / 4;
      const uint64_t words = ((end - 1) >> 5) + 1 - first;
      fits = words < cap;
      if (fits && vec) {
        const uint64_t blocks = (words + 3) / 4;
        const uint4* src = reinterpret_cast<const uint4*>(p + first);
        for (uint64_t k = g; k < blocks; k += G) {
          if (first + 4 * k + 4 <= geo.payload_words) {
            reinterpret_cast<uint4*>(slice)[k] = IBP_LOAD16(src + k);
          } else {  // the payload's last words: no 16-byte load past its end
            for (uint64_t j = 4 * k; j < words; ++j) slice[j] = IBP_LOAD(p, first + j);
          }
        }
      } else if (fits) {
        for (uint64_t k = g; k < words; k += G) slice[k] = IBP_LOAD(p, first + k);
      }
    }
    __syncwarp();  // the spans are in shared memory
    if (valid) {
      const uint32_t* s = fits ? slice : p;
      const uint64_t pos = fits ? start - 32 * first : start;
      const uint32_t head = read_bits(s, pos, kModeBits + geo.group_bits);
      const uint32_t mode = head & low_mask(kModeBits);
      const uint32_t* table =
          c.table + static_cast<uint64_t>(head >> kModeBits) * kDecodeRows * W;
      const uint64_t bitmap = pos + kModeBits + geo.group_bits;
      const bool raw = mode == static_cast<uint32_t>(RowMode::kRaw);
      if (mode == static_cast<uint32_t>(RowMode::kSparse) && is_sparse_code(s, bitmap, W)) {
        decode_sparse_code(s, bitmap, table, W, g, G, mask, row, geo.row_bytes);
      } else if (mode == static_cast<uint32_t>(RowMode::kSparse)) {
        decode_sparse(s, bitmap, table, W, g, G, mask, row, geo.row_bytes);
      } else if (mode == static_cast<uint32_t>(RowMode::kCoded) && geo.code_rows) {  // shared or host
        decode_coded(s, bitmap,
                     code_part(c.table, geo.num_groups, W, geo.code_rows, head >> kModeBits), W,
                     geo.code_rows, g, G, StoreWord{row, geo.row_bytes});
      } else if (fits) {
        decode_dense(s, bitmap, raw, table, W, g, G, mask, row, geo.row_bytes);
      } else {  // G == 32: the row needs more words than a warp's buffer
        decode_dense_host(p, bitmap, raw, table, W, lane, row, geo.row_bytes);
      }
    }
    __syncwarp();  // the buffer is free for the next rows
  }
}

}  // namespace

int gather_cuda(const CompressedView& c, const void* ids, bool ids64, uint64_t n,
                const int64_t* positions, uint8_t* out, void* stream) {
  if (n == 0) return 0;
  const uint64_t per_block = kWarpsPerBlock * (32 / lanes_per_row(c.geo.row_words));
  const uint64_t want = (n + per_block - 1) / per_block;
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
