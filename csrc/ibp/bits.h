// Bit helpers shared by the encoder, the CPU decoder and the CUDA decoder.
// Everything here is __host__ __device__ so the CPU tests exercise the exact
// arithmetic the GPU runs.
#pragma once

#include <cstdint>

#include "format.h"

#if defined(__CUDACC__)
#define IBP_HD __host__ __device__ __forceinline__
#else
#define IBP_HD inline
#endif
#if defined(__CUDA_ARCH__)
#define IBP_UNROLL _Pragma("unroll")
#else
#define IBP_UNROLL
#endif

// A load of payload words. The CUDA-on-CPU emulation (csrc/testing/cuda_emu.h)
// counts the host-memory traffic of the loads made through it.
#if defined(IBP_CUDA_EMU) && defined(__CUDA_ARCH__)
namespace ibp_emu {
uint32_t load_u32(const uint32_t* p);
}
#define IBP_LOAD(p, i) ::ibp_emu::load_u32((p) + (i))
#else
#define IBP_LOAD(p, i) ((p)[i])
#endif

namespace ibp {

IBP_HD uint32_t popc32(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __popc(x);
#else
  return static_cast<uint32_t>(__builtin_popcount(x));
#endif
}

// Bits needed to write any integer in [0, n] (0 for n = 0).
IBP_HD uint32_t count_bits(uint64_t n) {
#if defined(__CUDA_ARCH__)
  return 64 - __clzll(static_cast<long long>(n));
#else
  return n ? 64 - static_cast<uint32_t>(__builtin_clzll(n)) : 0;
#endif
}

// The k low bits set, k in [0, 32].
IBP_HD uint32_t low_mask(uint32_t k) { return k >= 32 ? 0xFFFFFFFFu : (1u << k) - 1u; }

// k bits (k in [0, 32]) starting at bit `pos` of the LSB-first stream `p`.
// Reads words pos/32 and pos/32 + 1, which the payload padding keeps in bounds.
IBP_HD uint32_t read_bits(const uint32_t* p, uint64_t pos, uint32_t k) {
  const uint64_t i = pos >> 5;
  const uint64_t window =
      (static_cast<uint64_t>(IBP_LOAD(p, i)) | (static_cast<uint64_t>(IBP_LOAD(p, i + 1)) << 32));
  return static_cast<uint32_t>(window >> (pos & 31)) & low_mask(k);
}

// Parallel bit deposit/extract with a fixed mask m in five shift stages.
// A set bit of m at position q has z(q) = number of clear bits of m below q;
// extracting moves it right by z(q), done as moves by 1, 2, 4, 8, 16 for the
// binary digits of z(q), lowest first. Relative order of the bits never
// changes, so no stage collides. `dep[i]` holds the positions, after stage i of
// an extract, of the bits that stage moved; a deposit undoes stages 4..0 by
// moving those positions left again.
struct DepositMasks {
  uint32_t dep[5];
};

IBP_HD DepositMasks make_deposit_masks(uint32_t m) {
  DepositMasks d = {{0, 0, 0, 0, 0}};
  uint32_t zeros = 0;
  for (uint32_t q = 0; q < 32; ++q) {
    if (!((m >> q) & 1u)) {
      ++zeros;
      continue;
    }
    uint32_t pos = q;
    for (uint32_t i = 0; i < 5; ++i) {
      if ((zeros >> i) & 1u) {
        pos -= 1u << i;
        d.dep[i] |= 1u << pos;
      }
    }
  }
  return d;
}

// The low popcount(m) bits of x, spread over the set bits of m.
IBP_HD uint32_t deposit(uint32_t x, uint32_t nbits, const uint32_t dep[5]) {
  x &= low_mask(nbits);
IBP_UNROLL
  for (int i = 4; i >= 0; --i) {
    const uint32_t t = x & dep[i];
    x = (x ^ t) | (t << (1u << i));
  }
  return x;
}

// The bits of x at the set bits of m, packed into the low bits.
IBP_HD uint32_t extract(uint32_t x, uint32_t m, const uint32_t dep[5]) {
  x &= m;
IBP_UNROLL
  for (int i = 0; i < 5; ++i) {
    const uint32_t src = dep[i] << (1u << i);
    const uint32_t t = x & src;
    x = (x ^ t) | (t >> (1u << i));
  }
  return x;
}

// Per-group decode table, laid out so that the lanes of a warp decoding
// consecutive words read consecutive addresses:
//   table[(g * kDecodeRows + k) * row_words + w]
// with k = kValue: invariant bits, kNvar: stored bits of a participating word,
// kDep0..kDep0+4: deposit masks of the variable bits, kVarMask: the variable
// bits ~mask themselves (for hardware PDEP on the CPU).
constexpr uint32_t kValue = 0;
constexpr uint32_t kNvar = 1;
constexpr uint32_t kDep0 = 2;
constexpr uint32_t kVarMask = 7;
constexpr uint32_t kDecodeRows = 8;

// Reconstructs one word from its field: value + deposit(field, ~mask), or the
// field itself for a word that does not participate.
IBP_HD uint32_t decode_word(uint32_t field, bool participates, const uint32_t* table,
                            uint32_t row_words, uint32_t w) {
  if (!participates) return field;
  uint32_t dep[5];
IBP_UNROLL
  for (int i = 0; i < 5; ++i) dep[i] = table[(kDep0 + i) * row_words + w];
  return table[kValue * row_words + w] + deposit(field, table[kNvar * row_words + w], dep);
}

// Where the parts of a kSparse row lie (format.h), from the bit after its
// group id. `listed_value` gives the i-th listed word.
struct SparseRow {
  uint32_t count;      // c: listed words
  uint32_t dict;       // d: dictionary entries (0: values stored inline)
  bool bitmap;         // positions as a bitmap of row_words bits
  uint32_t index_bits; // bits of a dictionary index
  uint32_t pos_bits;   // bits of a listed position
  uint64_t values;     // dictionary (d > 0) or inline values
  uint64_t indices;    // dictionary indices (d > 0)
  uint64_t where;      // positions or bitmap
  uint64_t end;        // first bit after the row

  IBP_HD SparseRow(const uint32_t* p, uint64_t pos, uint32_t row_words) {
    const uint32_t cb = count_bits(row_words);
    count = read_bits(p, pos, cb);
    dict = read_bits(p, pos + cb, cb);
    bitmap = read_bits(p, pos + 2 * cb, 1) != 0;
    index_bits = dict ? count_bits(dict - 1) : 0;
    pos_bits = row_words ? count_bits(row_words - 1) : 0;
    values = pos + 2 * cb + 1;
    indices = values + 32ull * dict;
    where = dict ? indices + static_cast<uint64_t>(count) * index_bits
                 : values + 32ull * count;
    end = where + (bitmap ? row_words : static_cast<uint64_t>(count) * pos_bits);
  }

  IBP_HD uint32_t listed_value(const uint32_t* p, uint32_t i) const {
    if (!dict) return read_bits(p, values + 32ull * i, 32);
    return read_bits(p, values + 32ull * read_bits(p, indices + static_cast<uint64_t>(i) * index_bits, index_bits), 32);
  }
};

// Sequential reader of an LSB-first bit stream, for decoding a row front to
// back. Reads at most one word past the last bit it returns (payload padding).
struct BitReader {
  const uint32_t* p;
  uint64_t next;   // next word to load
  uint64_t buf;    // unread bits, LSB first
  uint32_t avail;  // number of valid bits in buf

  IBP_HD BitReader(const uint32_t* words, uint64_t pos)
      : p(words), next((pos >> 5) + 1), buf(words[pos >> 5] >> (pos & 31)),
        avail(32 - static_cast<uint32_t>(pos & 31)) {}

  // The next k bits, k in [0, 32].
  IBP_HD uint32_t read(uint32_t k) {
    if (avail < k) {
      buf |= static_cast<uint64_t>(p[next++]) << avail;
      avail += 32;
    }
    const uint32_t v = static_cast<uint32_t>(buf) & low_mask(k);
    buf >>= k;
    avail -= k;
    return v;
  }
};

// Start and end bit of row r from the two-level index.
IBP_HD uint64_t row_start(const uint64_t* bases, const void* rel, uint32_t rel_bytes,
                          uint32_t block_shift, uint64_t r) {
  const uint64_t off = rel_bytes == 2 ? static_cast<const uint16_t*>(rel)[r]
                                      : static_cast<const uint32_t*>(rel)[r];
  return bases[r >> block_shift] + off;
}

IBP_HD uint64_t row_end(const uint64_t* bases, const void* rel, uint32_t rel_bytes,
                        uint32_t block_shift, uint64_t rows, uint64_t r) {
  const uint64_t next = r + 1;
  if (next == rows || (next >> block_shift) != (r >> block_shift)) {
    return bases[(r >> block_shift) + 1];
  }
  return row_start(bases, rel, rel_bytes, block_shift, next);
}

// What a decoder needs to know about a compressed tensor besides its arrays.
struct Geometry {
  uint64_t rows;
  uint64_t row_bytes;     // cols * dtype bytes
  uint32_t row_words;
  uint32_t num_groups;
  uint32_t group_bits;
  uint32_t block_shift;   // log2(block_rows)
  uint32_t rel_bytes;
  uint64_t payload_words; // including padding
  uint32_t code_rows;     // FileHeader::code_rows (0: no kCoded rows)
};

}  // namespace ibp
