// kCoded rows (format.h, version >= 3): the per-unit code tables and the
// decode shared by the CPU decoder, the CUDA kernel and the validator.
//
// The decode table (bits.h) of a tensor with code rows holds, after the
// num_groups * kDecodeRows rows of all groups, per group
// decode_code_rows(code_rows) rows of row_words words: the code rows as
// stored, then one row giving, for each word, the bit offset of its first
// unit's plain bits from the start of the row's plain section (the section's
// length is offset[W - 1] plus the plain bits of word W - 1).
#pragma once

#include <cstdint>

#include "bits.h"

namespace ibp {

// Rows of a group's code part of the decode table: the code rows + one row of
// plain-bit offsets, or none.
IBP_HD uint32_t decode_code_rows(uint32_t code_rows) { return code_rows ? code_rows + 1 : 0; }

// Group g's code part of a decode table of num_groups groups.
IBP_HD const uint32_t* code_part(const uint32_t* table, uint32_t num_groups, uint32_t W,
                                 uint32_t code_rows, uint32_t g) {
  return table + static_cast<uint64_t>(num_groups) * kDecodeRows * W +
         static_cast<uint64_t>(g) * decode_code_rows(code_rows) * W;
}

IBP_HD uint32_t ctz32(uint32_t x) {  // x != 0
#if defined(__CUDA_ARCH__)
  return static_cast<uint32_t>(__ffs(static_cast<int>(x)) - 1);
#else
  return static_cast<uint32_t>(__builtin_ctz(x));
#endif
}

// One unit's description (slot 0).
struct CodeUnit {
  uint32_t s;   // ranked symbols
  uint32_t lo;  // first bit of the coded field
  uint32_t nc;  // bits of the coded field
};

// Slot k of unit u in a group's code rows (row-major, row_words columns).
IBP_HD uint32_t code_slot(const uint32_t* codes, uint32_t W, uint32_t upw, uint32_t u,
                          uint32_t k) {
  const uint32_t w = upw == 2 ? u >> 1 : u;
  const uint32_t h = upw == 2 ? u & 1u : 0u;
  const uint32_t v = codes[(8 * h + (k >> 1)) * W + w];
  return (k & 1u) ? v >> 16 : v & 0xFFFFu;
}

IBP_HD CodeUnit code_unit(const uint32_t* codes, uint32_t W, uint32_t upw, uint32_t u) {
  const uint32_t d = code_slot(codes, W, upw, u, 0);
  return CodeUnit{d & 15u, (d >> 4) & 31u, (d >> 9) & 31u};
}

IBP_HD uint32_t code_slot0(uint32_t s, uint32_t lo, uint32_t nc) { return s | lo << 4 | nc << 9; }

// Bits of a unit of a row viewed as `upw` units per word.
IBP_HD uint32_t unit_bits(uint32_t upw) { return 32 / upw; }

// The plain bits of a unit value x: below lo, then above lo + nc.
IBP_HD uint32_t plain_of(uint32_t x, uint32_t lo, uint32_t nc) {
  return (x & low_mask(lo)) | static_cast<uint32_t>((static_cast<uint64_t>(x) >> (lo + nc)) << lo);
}

// The coded field of a unit value x.
IBP_HD uint32_t field_of(uint32_t x, uint32_t lo, uint32_t nc) { return (x >> lo) & low_mask(nc); }

// The unit rebuilt from its plain bits and its coded field.
IBP_HD uint32_t unit_of(uint32_t plain, uint32_t field, uint32_t lo, uint32_t nc) {
  return (plain & low_mask(lo)) | (field << lo) |
         static_cast<uint32_t>(static_cast<uint64_t>(plain >> lo) << (lo + nc));
}

// Reads the code of one unit at bit *pos and advances *pos past it; returns
// the coded field. Reads at most kMaxCodeSymbols + 1 + kMaxCodeBits bits
// from *pos on (plus read_bits' one-word window).
IBP_HD uint32_t read_code(const uint32_t* p, uint64_t* pos, const uint32_t* codes, uint32_t W,
                          uint32_t upw, uint32_t u, const CodeUnit& cu) {
  const uint32_t t = read_bits(p, *pos, cu.s);
  const uint32_t r = ctz32(~t | (1u << cu.s));  // leading one bits, at most s
  if (r < cu.s) {
    *pos += r + 1;
    return code_slot(codes, W, upw, u, 1 + r);
  }
  const uint32_t f = read_bits(p, *pos + cu.s, cu.nc);
  *pos += cu.s + cu.nc;
  return f;
}

// Decodes the words first, first + step, ... of a kCoded row whose bits
// after the group id start at `pos`, calling store(w, word) for each; `codes`
// is the group's code part of the decode table. The code stream is walked
// whole by every caller (the lanes of a warp walk it in lockstep, each keeping
// its own words). Returns the bit after the row.
template <typename Store>
IBP_HD uint64_t decode_coded(const uint32_t* p, uint64_t pos, const uint32_t* codes, uint32_t W,
                             uint32_t code_rows, uint32_t first, uint32_t step,
                             const Store& store) {
  const uint32_t upw = code_rows / 8, U = unit_bits(upw);
  const uint32_t* offset = codes + code_rows * W;
  uint64_t code = pos;
  if (W) {
    code += offset[W - 1];
    for (uint32_t h = 0; h < upw; ++h) code += U - code_unit(codes, W, upw, (W - 1) * upw + h).nc;
  }
  uint32_t next = first;
  for (uint32_t w = 0; w < W; ++w) {
    uint32_t word = 0;
    uint64_t plain = pos + offset[w];
    for (uint32_t h = 0; h < upw; ++h) {
      const uint32_t u = w * upw + h;
      const CodeUnit cu = code_unit(codes, W, upw, u);
      const uint32_t f = read_code(p, &code, codes, W, upw, u, cu);
      if (w == next) {
        word |= unit_of(read_bits(p, plain, U - cu.nc), f, cu.lo, cu.nc) << (h * U);
        plain += U - cu.nc;
      }
    }
    if (w == next) {
      store(w, word);
      next += step;
    }
  }
  return code;
}

// Sequential reader of one section of a row (LSB-first), with a peek for the
// codes. Reads at most one word past the last bit it returns (padding).
struct SectionReader {
  const uint32_t* p;
  uint64_t next;   // next word to load
  uint64_t buf;    // unread bits, LSB first
  uint32_t avail;  // valid bits in buf, >= 0

  IBP_HD SectionReader(const uint32_t* words, uint64_t pos)
      : p(words), next((pos >> 5) + 1), buf(IBP_LOAD(words, pos >> 5) >> (pos & 31)),
        avail(32 - static_cast<uint32_t>(pos & 31)) {}

  // The next k bits without consuming them, k in [0, 32].
  IBP_HD uint32_t peek(uint32_t k) {
    if (avail < k) {
      buf |= static_cast<uint64_t>(IBP_LOAD(p, next)) << avail;
      ++next;
      avail += 32;
    }
    return static_cast<uint32_t>(buf) & low_mask(k);
  }
  IBP_HD void skip(uint32_t k) {  // k <= avail (after a peek of >= k bits)
    buf >>= k;
    avail -= k;
  }
  IBP_HD uint32_t read(uint32_t k) {
    const uint32_t v = peek(k);
    skip(k);
    return v;
  }
};

// The whole kCoded row into `words`, front to back with one reader per
// section (the CPU decoder); same result as decode_coded(..., 0, 1, ...).
IBP_HD void decode_coded_words(const uint32_t* p, uint64_t pos, const uint32_t* codes,
                               uint32_t W, uint32_t code_rows, uint32_t* words) {
  if (!W) return;
  const uint32_t upw = code_rows / 8, U = unit_bits(upw);
  const uint32_t* offset = codes + code_rows * W;
  uint64_t plain_bits = offset[W - 1];
  for (uint32_t h = 0; h < upw; ++h) plain_bits += U - code_unit(codes, W, upw, (W - 1) * upw + h).nc;
  SectionReader plain(p, pos), code(p, pos + plain_bits);
  for (uint32_t w = 0; w < W; ++w) {
    uint32_t word = 0;
    for (uint32_t h = 0; h < upw; ++h) {
      const uint32_t* slots = codes + 8 * h * W + w;  // slot k: slots[(k / 2) * W], half k % 2
      const uint32_t d = slots[0] & 0xFFFFu;
      const uint32_t s = d & 15u, lo = (d >> 4) & 31u, nc = (d >> 9) & 31u;
      const uint32_t pl = plain.read(U - nc);
      const uint32_t t = code.peek(s + 1 < 32 ? s + 1 : 32);
      const uint32_t r = ctz32(~t | (1u << s));
      uint32_t f;
      if (r < s) {
        code.skip(r + 1);
        const uint32_t v = slots[((1 + r) >> 1) * W];
        f = (r & 1u) ? v & 0xFFFFu : v >> 16;  // slot 1 + r: odd r -> even slot (low half)
      } else {
        code.skip(s);
        f = code.read(nc);
      }
      word |= unit_of(pl, f, lo, nc) << (h * U);
    }
    words[w] = word;
  }
}

}  // namespace ibp
