// CPU decode of kCoded rows (coded.h): the same words as decode_coded_words,
// with the plain section read at its per-word offsets (the code part's offset
// row: one independent unaligned load per unit, no serial reader) and the
// code section through a 64-bit window reloaded only when fewer bits than
// the longest code remain in it. Reads stay inside the payload padding like
// dense.h's field_at.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../coded.h"
#include "coded16_cpu.h"
#include "dense.h"

namespace ibp {

// Per-group data of 32-bit kCoded rows (code_rows == 8) derived from the
// decode table's code rows once per CpuGather (no format change), like
// dense.h's DenseProgram, for coded_row_avx512:
// - sym: when every ranked symbol of group g is below 256 (a float's
//   exponent byte, nc = 8), its units' symbols as bytes, unit u's slot 1 + r
//   at sym_of(g)[16 u + r] (r < 15; 16 more units of zeros after the last,
//   as the kernel loads 16 units at a time). Symbols then come from 4 loads
//   and 2 byte permutes per 16 units instead of 8 code-row loads and 7
//   blends. Null (the code rows used) for a group with a wider symbol.
// - uniform[g * blocks + b] = 1 when the units of words 16b .. 16b + 15
//   (those < row_words) all have unit 0's (lo, nc) = field(g) and their plain
//   bits one after another (the offset row steps by 32 - nc): their words
//   rebuild under shifts fixed for the group. Empty without code rows, or
//   with build = false (gather_cpu's calls of few rows per group).
// - fast[g] = 1 when the group's rows take coded32_rows_fast: byte symbols,
//   row_words a multiple of 16, every block uniform (so word w's plain
//   bits start at (32 - nc) w) and nc >= 7 (a plain field and its bit
//   shift fit one 32-bit lane); s8_of(g)[w] is unit w's symbol count.
struct Coded32Program {
  uint32_t blocks = 0, words = 0;
  size_t stride = 0;  // sym bytes per group
  std::vector<uint8_t> sym, has_sym, uniform, fast, s8;
  // run_of(g)[4 b .. 4 b + 3]: run_shifts of L, the least symbol count of
  // units 16 b .. 16 b + 15 (the AVX2 kernel's escape test).
  std::vector<uint8_t> runs;
  std::vector<uint32_t> lo_nc;  // per group: unit 0's lo, nc

  explicit Coded32Program(const CompressedView& c, bool build = true) {
    const uint32_t W = c.geo.row_words, G = c.geo.num_groups;
    if (c.geo.code_rows != 8 || !W || !build) return;
    blocks = (W + 15) / 16;
    words = W;
    stride = 16 * (static_cast<size_t>(W) + 16);
    sym.assign(G * stride, 0);
    has_sym.assign(G, 1);
    uniform.assign(static_cast<size_t>(G) * blocks, 1);
    lo_nc.assign(2 * static_cast<size_t>(G), 0);
    fast.assign(G, 0);
    s8.assign(static_cast<size_t>(G) * W, 0);
    runs.assign(static_cast<size_t>(G) * 4 * blocks, 0);
    for (uint32_t g = 0; g < G; ++g) {
      const uint32_t* codes = code_part(c.table, G, W, 8, g);
      const uint32_t* offset = codes + 8 * W;
      const CodeUnit u0 = code_unit(codes, W, 1, 0);
      lo_nc[2 * g] = u0.lo;
      lo_nc[2 * g + 1] = u0.nc;
      for (uint32_t w = 0; w < W; ++w) {
        const CodeUnit cu = code_unit(codes, W, 1, w);
        s8[static_cast<size_t>(g) * W + w] = static_cast<uint8_t>(cu.s);
        for (uint32_t r = 0; r < cu.s; ++r) {
          const uint32_t v = code_slot(codes, W, 1, w, 1 + r);
          if (v > 0xFF) has_sym[g] = 0;
          sym[g * stride + 16 * static_cast<size_t>(w) + r] = static_cast<uint8_t>(v);
        }
        const uint32_t w0 = w & ~15u;
        if (cu.lo != u0.lo || cu.nc != u0.nc || offset[w] - offset[w0] != (w - w0) * (32 - u0.nc)) {
          uniform[static_cast<size_t>(g) * blocks + w / 16] = 0;
        }
      }
      for (uint32_t b = 0; b < blocks; ++b) {
        uint32_t L = 16;
        for (uint32_t w = 16 * b; w < W && w < 16 * b + 16; ++w) {
          L = std::min<uint32_t>(L, s8[static_cast<size_t>(g) * W + w]);
        }
        run_shifts(L, runs.data() + (static_cast<size_t>(g) * blocks + b) * 4);
      }
      bool all_uniform = W % 16 == 0 && has_sym[g] && u0.nc >= 7 && offset[0] == 0;
      for (uint32_t b = 0; b < blocks; ++b) all_uniform &= uniform[g * blocks + b] != 0;
      fast[g] = all_uniform;
    }
  }
  const uint8_t* sym_of(uint32_t g) const {
    return sym.empty() || !has_sym[g] ? nullptr : sym.data() + g * stride;
  }
  bool fast_of(uint32_t g) const { return !fast.empty() && fast[g]; }
  const uint8_t* run_of(uint32_t g) const { return runs.data() + static_cast<size_t>(g) * 4 * blocks; }
  const uint8_t* s8_of(uint32_t g) const { return s8.data() + static_cast<size_t>(g) * words; }
  const uint8_t* uniform_of(uint32_t g) const {
    return uniform.empty() ? nullptr : uniform.data() + static_cast<size_t>(g) * blocks;
  }
};

// UPW units per word (1: 32-bit words, 2: two 16-bit halves).
template <uint32_t UPW>
inline void coded_row_units(const uint8_t* bytes, uint64_t pos, const uint32_t* codes, uint32_t W,
                            uint32_t* words) {
  constexpr uint32_t U = 32 / UPW;
  const uint32_t* offset = codes + 8 * UPW * W;
  uint64_t plain_bits = offset[W - 1];
  for (uint32_t h = 0; h < UPW; ++h) plain_bits += U - ((codes[8 * h * W + W - 1] >> 9) & 31u);
  // The code section: window = the bits from `code` on (at least 57 valid);
  // a unit's code is at most s + 1 <= 16 bits (an escape's raw field is read
  // from memory), so the window is reloaded once more than 41 bits are used.
  uint64_t code = pos + plain_bits;
  uint64_t window = load_u64(bytes + (code >> 3)) >> (code & 7);
  uint32_t used = 0;
  for (uint32_t w = 0; w < W; ++w) {
    uint32_t word = 0;
    uint64_t plain = pos + offset[w];
    for (uint32_t h = 0; h < UPW; ++h) {
      if (used > 41) {
        code += used;
        used = 0;
        window = load_u64(bytes + (code >> 3)) >> (code & 7);
      }
      const uint32_t* slots = codes + 8 * h * W + w;  // slot k: slots[(k / 2) * W], half k % 2
      const uint32_t d = slots[0];
      const uint32_t s = d & 15u, lo = (d >> 4) & 31u, nc = (d >> 9) & 31u;
      const uint32_t pl = field_at(bytes, plain, U - nc);
      plain += U - nc;
      const uint32_t r = ctz32(~static_cast<uint32_t>(window >> used) | (1u << s));
      uint32_t f;
      if (r < s) {
        used += r + 1;
        const uint32_t v = slots[((1 + r) >> 1) * W];
        f = (r & 1u) ? v & 0xFFFFu : v >> 16;  // slot 1 + r: odd r -> even slot (low half)
      } else {
        f = field_at(bytes, code + used + s, nc);
        used += s + nc;
      }
      word |= unit_of(pl, f, lo, nc) << (h * U);
    }
    words[w] = word;
  }
}

inline void coded_row_scalar(const uint32_t* p, uint64_t pos, const uint32_t* codes, uint32_t W,
                             uint32_t code_rows, uint32_t* words) {
  if (!W) return;
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(p);
  if (code_rows == 8) {
    coded_row_units<1>(bytes, pos, codes, W, words);
  } else {
    coded_row_units<2>(bytes, pos, codes, W, words);
  }
}

#if defined(IBP_X86_SIMD)
// Units [u0, u0 + n) of a kCoded row of UPW units a word (unit u = UPW w + h,
// its code rows 8 h .. 8 h + 7) of a group with byte symbols (sym:
// Coded32Program::sym_of, Coded16Program::bsym_of), one at a time from the
// code at *code (moved past them), their fields into field[0, n):
// coded_row_units' step.
template <uint32_t UPW>
inline void coded_units_serial(const uint8_t* bytes, uint64_t* code_io, const uint32_t* codes,
                               uint32_t W, const uint8_t* sym, uint32_t u0, uint32_t n,
                               uint32_t* field) {
  uint64_t code = *code_io;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t u = u0 + i;
    const uint32_t d = codes[8 * (u % UPW) * W + u / UPW];
    const uint32_t s = d & 15u, nc = (d >> 9) & 31u;
    const uint32_t t = static_cast<uint32_t>(load_u64(bytes + (code >> 3)) >> (code & 7));
    const uint32_t r = ctz32(~t | (1u << s));
    if (r < s) {
      field[i] = sym[16 * static_cast<size_t>(u) + r];
      code += r + 1;
    } else {
      field[i] = field_at(bytes, code + s, nc);
      code += s + nc;
    }
  }
  *code_io = code;
}

// One row of coded32_rows_fast and the AVX2 coded kernels: its bits after the
// group id, its group's code part of the decode table, its group, where its
// words go.
struct Coded32Row {
  uint64_t pos;
  const uint32_t* codes;
  uint32_t g;
  uint32_t* words;
  // Non-temporal stores of the words (the caller fences); taken by
  // coded32_rows_fast where words is 64-byte aligned.
  bool stream = false;
};

// AVX2 (with BMI1/BMI2): N rows (1 or 2, block by block side by side: their
// code chains are independent) of Coded32Program fast groups (fast_of), the
// words coded_row_units writes. Per 16 words of a row:
// - codes: the 64-bit window from the block's first code bit; without an
//   escape, unit i's code ends at the window's i-th zero, so its rank + 1 is
//   the gap between consecutive zeros (TZCNT and BLSR walk them, no serial
//   reader) and its field is the byte at sym[16 w + rank] (one load; a gap
//   past 16 reads a later unit's bytes, inside the program's 16 padding
//   units). Escapes: a unit's run of ones as long as the least symbol count
//   of the block's units, L (Coded32Program::runs), sends the block to
//   coded_units_serial (a unit of more symbols with such a rank goes there
//   too: correct, and rare), as does a window of fewer than 16 zeros. The
//   next window starts past the 16th zero, found by a deposit from the
//   window alone, so that chain waits for no unit.
// - plain bits, 8 words at a time: the fields lie 32 - nc bits apart from
//   the row's first bit, so 8 words span 32 - nc whole bytes and every group
//   of 8 starts at the row's bit phase: two 16-byte loads (the second from
//   the fifth field's byte), one byte shuffle and one variable shift, both
//   fixed for the row, give each lane its field at bit 0 (nc >= 7: field
//   and shift fit 32 bits; lane 3's and lane 7's last byte is at most 13).
// False (nothing written) when a row's last plain load would pass the
// payload's end: the caller then takes the general loop.
struct Avx2CodedRow {
  uint64_t code;          // the next block's first code bit
  const uint8_t* pb;      // the row's plain bits, from bit pos & 7 of this byte
  const uint8_t* sym;     // the group's byte symbols
  const uint8_t* run;     // the group's Coded32Program::runs
  const uint32_t* codes;  // the group's code part (coded_units_serial)
  uint32_t* words;
  uint32_t P, hb;         // plain bits a unit; the fifth field's byte of 8
  uint32_t W;
  __m256i ctrl, shv, lomask, himask;
  __m128i ncv, lov;
};

// A row's state for UPW units a word (1: Coded32Program, 2: Coded16Program
// fast groups: lo, nc, symbols, runs of the group's units).
IBP_TARGET_AVX2 inline bool coded_row_setup_avx2(uint64_t payload_bytes, const uint8_t* bytes,
                                                 uint32_t W, uint32_t upw, uint32_t lo,
                                                 uint32_t nc, const uint8_t* sym,
                                                 const uint8_t* run, const Coded32Row& row,
                                                 Avx2CodedRow* r) {
  const uint32_t P = 32 / upw - nc, units = upw * W;
  const uint64_t pos = row.pos;
  if ((pos >> 3) + static_cast<uint64_t>(P) * (units / 8 - 1) + 32 > payload_bytes) return false;
  const uint32_t ph = static_cast<uint32_t>(pos & 7), hb = (ph + 4 * P) >> 3;
  alignas(32) uint8_t ctrl[32];
  alignas(32) uint32_t shift[8];
  for (uint32_t i = 0; i < 8; ++i) {
    const uint32_t b = ((ph + P * i) >> 3) - (i < 4 ? 0 : hb);
    for (uint32_t k = 0; k < 4; ++k) ctrl[4 * i + k] = static_cast<uint8_t>(b + k);
    shift[i] = (ph + P * i) & 7;
  }
  r->code = pos + static_cast<uint64_t>(P) * units;
  r->pb = bytes + (pos >> 3);
  r->sym = sym;
  r->run = run;
  r->codes = row.codes;
  r->words = row.words;
  r->P = P;
  r->hb = hb;
  r->W = W;
  r->ctrl = _mm256_load_si256(reinterpret_cast<const __m256i*>(ctrl));
  r->shv = _mm256_load_si256(reinterpret_cast<const __m256i*>(shift));
  r->lomask = _mm256_set1_epi32(static_cast<int>(low_mask(lo)));
  r->himask = _mm256_set1_epi32(static_cast<int>(low_mask(32 / upw) & ~low_mask(lo + nc)));
  r->ncv = _mm_cvtsi32_si128(static_cast<int>(nc));
  r->lov = _mm_cvtsi32_si128(static_cast<int>(lo));
  return true;
}

// The fields of units w0 .. w0 + 15 of row r into fw; r.code moves past them.
template <uint32_t UPW>
IBP_TARGET_AVX2 __attribute__((always_inline)) inline void coded_block_avx2(
    const uint8_t* bytes, Avx2CodedRow& r, uint32_t w0, uint32_t* fw) {
  uint64_t z = ~load_u64(bytes + (r.code >> 3)) >> (r.code & 7);  // bit set: a code bit 0
  const uint64_t end16 = _pdep_u64(uint64_t{1} << 15, z);         // 0: fewer than 16 zeros
  if (__builtin_expect(end16 != 0, 1)) {
    const uint64_t end = _tzcnt_u64(end16) + 1;
    // runs of L ones among the block's code bits: x & x >> a ...
    const uint8_t* a = r.run + 4 * (w0 / 16);
    uint64_t x = _bzhi_u64(~z, static_cast<uint32_t>(end));
    x &= x >> (a[0] & 63);
    x &= x >> a[1];
    x &= x >> a[2];
    x &= x >> a[3];
    const uint8_t* sb = r.sym + 16 * static_cast<size_t>(w0) - 1;
    uint32_t prev = ~0u;  // bit -1
#pragma GCC unroll 16
    for (uint32_t i = 0; i < 16; ++i) {
      const uint32_t p = static_cast<uint32_t>(_tzcnt_u64(z));
      z = _blsr_u64(z);
      fw[i] = sb[16 * i + p - prev];  // rank + 1 = p - prev
      prev = p;
    }
    if (__builtin_expect(x == 0 && a[0] != kNoRun, 1)) {
      r.code += end;
      return;
    }
  }
  coded_units_serial<UPW>(bytes, &r.code, r.codes, r.W, r.sym, w0, 16, fw);
}

// Units u .. u + 7 of row r, one a 32-bit lane, from their fields f:
// plain's low lo bits | field << lo | plain's bits from lo on, moved up by nc.
IBP_TARGET_AVX2 __attribute__((always_inline)) inline __m256i coded_units8_avx2(
    const Avx2CodedRow& r, uint32_t u, const uint32_t* f) {
  const uint8_t* q = r.pb + static_cast<size_t>(r.P) * (u / 8);
  const __m256i src = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + r.hb)), 1);
  const __m256i pl = _mm256_srlv_epi32(_mm256_shuffle_epi8(src, r.ctrl), r.shv);
  const __m256i x = _mm256_or_si256(_mm256_and_si256(pl, r.lomask),
                                    _mm256_and_si256(_mm256_sll_epi32(pl, r.ncv), r.himask));
  const __m256i fv = _mm256_load_si256(reinterpret_cast<const __m256i*>(f));
  return _mm256_or_si256(x, _mm256_sll_epi32(fv, r.lov));
}

// A 32-byte store of the AVX2 coded rows' words, non-temporal with kStream
// (p then 32-byte aligned).
template <bool kStream>
IBP_TARGET_AVX2 __attribute__((always_inline)) inline void store_words8(uint32_t* p, __m256i v) {
  if (kStream) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v);
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
}

// Whether a fast row's words may go by non-temporal stores of `align` bytes
// (32: store_words8<true>; 64: coded32_rows_fast's).
inline bool stream_words(const Coded32Row& row, uintptr_t align = 32) {
  return row.stream && reinterpret_cast<uintptr_t>(row.words) % align == 0;
}

template <int N, bool kStream>
IBP_TARGET_AVX2 inline bool coded32_rows_fast_avx2_as(const uint8_t* bytes, uint32_t W,
                                                      uint64_t payload_bytes,
                                                      const Coded32Program& c32,
                                                      const Coded32Row (&row)[N]) {
  Avx2CodedRow r[N];
  for (int k = 0; k < N; ++k) {
    const uint32_t g = row[k].g;
    if (!coded_row_setup_avx2(payload_bytes, bytes, W, 1, c32.lo_nc[2 * g], c32.lo_nc[2 * g + 1],
                              c32.sym_of(g), c32.run_of(g), row[k], &r[k])) {
      return false;
    }
  }
  // The fields of up to 256 words of each row, then their words.
  constexpr uint32_t kPiece = 256;
  alignas(32) uint32_t field[N][kPiece];
  for (uint32_t b0 = 0; b0 < W; b0 += kPiece) {
    const uint32_t nb = W - b0 < kPiece ? W - b0 : kPiece;
    for (uint32_t w0 = b0; w0 < b0 + nb; w0 += 16) {
      for (int k = 0; k < N; ++k) coded_block_avx2<1>(bytes, r[k], w0, field[k] + (w0 - b0));
    }
    for (uint32_t w = b0; w < b0 + nb; w += 8) {
      for (int k = 0; k < N; ++k) {
        store_words8<kStream>(r[k].words + w, coded_units8_avx2(r[k], w, field[k] + (w - b0)));
      }
    }
  }
  return true;
}

// coded32_rows_fast_avx2_as, streaming where every row may (stream_words).
template <int N>
IBP_TARGET_AVX2 inline bool coded32_rows_fast_avx2(const uint8_t* bytes, uint32_t W,
                                                   uint64_t payload_bytes,
                                                   const Coded32Program& c32,
                                                   const Coded32Row (&row)[N]) {
  bool stream = true;
  for (int k = 0; k < N; ++k) stream = stream && stream_words(row[k]);
  return stream ? coded32_rows_fast_avx2_as<N, true>(bytes, W, payload_bytes, c32, row)
                : coded32_rows_fast_avx2_as<N, false>(bytes, W, payload_bytes, c32, row);
}

// AVX2: one 16-bit kCoded row of a Coded16Program fast group, as
// coded32_rows_fast_avx2 (units u = 2 w + h in the place of words; the
// plain fields 16 - nc bits apart), its words two units each. False
// (nothing written) when its last plain load would pass the payload's end.
template <bool kStream>
IBP_TARGET_AVX2 inline bool coded16_row_fast_avx2_as(const uint8_t* bytes, uint32_t W,
                                                     uint64_t payload_bytes,
                                                     const Coded16Program& c16,
                                                     const Coded32Row& row) {
  const uint32_t g = row.g;
  Avx2CodedRow r;
  if (!coded_row_setup_avx2(payload_bytes, bytes, W, 2, c16.lo_nc[2 * g], c16.lo_nc[2 * g + 1],
                            c16.bsym_of(g), c16.run_of(g), row, &r)) {
    return false;
  }
  constexpr uint32_t kPiece = 256;  // units
  alignas(32) uint32_t field[kPiece];
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (uint32_t b0 = 0; b0 < 2 * W; b0 += kPiece) {
    const uint32_t nb = 2 * W - b0 < kPiece ? 2 * W - b0 : kPiece;
    for (uint32_t u0 = b0; u0 < b0 + nb; u0 += 16) {
      coded_block_avx2<2>(bytes, r, u0, field + (u0 - b0));
    }
    for (uint32_t u = b0; u < b0 + nb; u += 16) {
      // units 2w, 2w + 1 (16 bits each) -> word w: the low dword of each
      // 64-bit lane of x | x >> 16
      __m256i a = coded_units8_avx2(r, u, field + (u - b0));
      __m256i b = coded_units8_avx2(r, u + 8, field + (u + 8 - b0));
      a = _mm256_permutevar8x32_epi32(_mm256_or_si256(a, _mm256_srli_epi64(a, 16)), even);
      b = _mm256_permutevar8x32_epi32(_mm256_or_si256(b, _mm256_srli_epi64(b, 16)), even);
      store_words8<kStream>(r.words + u / 2, _mm256_permute2x128_si256(a, b, 0x20));
    }
  }
  return true;
}

IBP_TARGET_AVX2 inline bool coded16_row_fast_avx2(const uint8_t* bytes, uint32_t W,
                                                  uint64_t payload_bytes,
                                                  const Coded16Program& c16,
                                                  const Coded32Row& row) {
  return stream_words(row) ? coded16_row_fast_avx2_as<true>(bytes, W, payload_bytes, c16, row)
                           : coded16_row_fast_avx2_as<false>(bytes, W, payload_bytes, c16, row);
}

// The bits of z up to and including its k-th one bit (k >= 1, z has k).
IBP_TARGET_AVX512 inline uint32_t past_zero(uint64_t z, uint32_t k) {
  return static_cast<uint32_t>(__builtin_ctzll(_pdep_u64(uint64_t{1} << (k - 1), z))) + 1;
}

// past_zero(z, 16) for a z with at least 16 one bits, without their count
// (bit 63 set keeps the count of trailing zeros defined for any z).
IBP_TARGET_AVX512 inline uint32_t past_zero16(uint64_t z) {
  return static_cast<uint32_t>(__builtin_ctzll(_pdep_u64(uint64_t{1} << 15, z) | (uint64_t{1} << 63))) + 1;
}

// Byte symbols (Coded32Program::sym): lane i = 4k + d of a 16-unit lookup
// takes byte r of unit i's 16, in the 128-byte pair of 4-unit loads its
// 128-bit lane k reads (k = 0, 1: the first two loads; 2, 3: the last two),
// at 64 (k odd) + 16 d + r: the permute control is r + sym_at_lanes()[i].
IBP_TARGET_AVX512 inline __m512i sym_at_lanes() {
  return _mm512_set_epi32(112, 96, 80, 64, 48, 32, 16, 0, 112, 96, 80, 64, 48, 32, 16, 0);
}

// Slot 1 + r of the 16 units whose byte symbols start at t, for the
// permute controls ctrl (r + sym_at_lanes() in each lane's byte 0).
IBP_TARGET_AVX512 inline __m512i byte_symbols16(const uint8_t* t, __m512i ctrl) {
  const __mmask64 byte0_lo = 0x11111111ull, byte0_hi = 0x11111111ull << 32;
  return _mm512_or_si512(
      _mm512_maskz_permutex2var_epi8(byte0_lo, _mm512_loadu_si512(t), ctrl,
                                     _mm512_loadu_si512(t + 64)),
      _mm512_maskz_permutex2var_epi8(byte0_hi, _mm512_loadu_si512(t + 128), ctrl,
                                     _mm512_loadu_si512(t + 192)));
}

// The coded fields of the nb units b0 .. b0 + nb - 1 (nb <= 256) of a
// 32-bit kCoded row whose codes start at *code, into field (rounded up to
// 16 units); *code moves past them. bsym: the group's byte symbols, or null
// (the code rows' slots). Every window load starts inside the code section.
IBP_TARGET_AVX512 __attribute__((noinline)) inline void coded32_fields(
    const uint8_t* bytes, uint64_t* code_io, const uint32_t* codes, uint32_t W,
    const uint8_t* bsym, uint32_t b0, uint32_t nb, uint32_t* field) {
  const __m512i iota8 = iota_epi8();
  const __m512i ones = _mm512_set1_epi32(-1), one = _mm512_set1_epi32(1);
  const __m512i k15 = _mm512_set1_epi32(15), k16 = _mm512_set1_epi32(16);
  const __m512i kFFFF = _mm512_set1_epi32(0xFFFF);
  const __m512i two = _mm512_set1_epi32(2), fourv = _mm512_set1_epi32(4);
  const __m512i sym_at = sym_at_lanes();
  uint64_t code = *code_io;
  // The codes of units j.. from one window: without escapes, unit j + i ends
  // at the window's i-th zero bit, so its rank is the gap between consecutive
  // zeros and the window's end follows from the zero count alone (the chain
  // from one window to the next is scalar); a unit whose rank reaches s (an
  // escape) ends the run and is read alone by the serial step, as is a unit
  // whose zero lies past the window's valid bits.
uint32_t j = 0;
while (j < nb) {
    const uint32_t sh = static_cast<uint32_t>(code & 7);
    const uint64_t window = load_u64(bytes + (code >> 3)) >> sh;
    const uint64_t z = ~window & (~uint64_t{0} >> sh);
    const uint32_t zeros = static_cast<uint32_t>(__builtin_popcountll(z));
    const uint32_t left = nb - j < 16 ? nb - j : 16;
    const uint32_t cand = zeros < left ? zeros : left;
    if (cand) {
      // Loads and the store cover the `left` lanes (a mask from j alone, so
      // they need not wait for the zero count); the escape test covers the
      // cand lanes whose zeros are in the window.
      const __mmask16 lm = static_cast<__mmask16>((1u << left) - 1);
      const __mmask16 cm = static_cast<__mmask16>((1u << cand) - 1);
      const uint32_t* at = codes + b0 + j;
      const __m512i zp = _mm512_cvtepu8_epi32(
          _mm512_castsi512_si128(_mm512_maskz_compress_epi8(_cvtu64_mask64(z), iota8)));
      const __m512i r =
          _mm512_sub_epi32(_mm512_sub_epi32(zp, _mm512_alignr_epi32(zp, ones, 15)), one);
      const __m512i sv = _mm512_and_si512(_mm512_maskz_loadu_epi32(lm, at), k15);
      const uint32_t esc = _mm512_mask_cmpge_epu32_mask(cm, r, sv);
      __m512i f;
      if (bsym) {
        // slot 1 + r from the units' byte symbols: loads of units j .. j + 15
        // (the program pads 16 units), two byte permutes
        f = byte_symbols16(bsym + 16 * static_cast<size_t>(b0 + j), _mm512_add_epi32(r, sym_at));
      } else {
        // slot row (1 + r) / 2 of each lane, picked by the bits of the row
        // index from the 8 rows' loads (no gather)
        const __m512i q = _mm512_srli_epi32(_mm512_add_epi32(r, one), 1);
        const __mmask16 q0 = _mm512_test_epi32_mask(q, one), q1 = _mm512_test_epi32_mask(q, two),
                        q2 = _mm512_test_epi32_mask(q, fourv);
        __m512i row[8];
        for (uint32_t i = 0; i < 8; ++i) row[i] = _mm512_maskz_loadu_epi32(lm, at + i * W);
        const __m512i r01 = _mm512_mask_mov_epi32(row[0], q0, row[1]);
        const __m512i r23 = _mm512_mask_mov_epi32(row[2], q0, row[3]);
        const __m512i r45 = _mm512_mask_mov_epi32(row[4], q0, row[5]);
        const __m512i r67 = _mm512_mask_mov_epi32(row[6], q0, row[7]);
        const __m512i r03 = _mm512_mask_mov_epi32(r01, q1, r23);
        const __m512i r47 = _mm512_mask_mov_epi32(r45, q1, r67);
        const __m512i v = _mm512_mask_mov_epi32(r03, q2, r47);
        // slot 1 + r: odd r -> even slot (low half)
        f = _mm512_and_si512(
            _mm512_srlv_epi32(v, _mm512_andnot_si512(_mm512_slli_epi32(r, 4), k16)), kFFFF);
      }
      _mm512_mask_storeu_epi32(field + j, lm, f);  // lanes from cand or an escape on are rewritten
      if (__builtin_expect(!esc, 1)) {
        // The window's end from the zero count alone. The common case, 16
        // units from a window with 16 zeros or more, takes the end of its
        // 16th zero, found without the count (the branch predicts it), so
        // the next window's load waits for nothing but this one.
        if (__builtin_expect(cand == 16, 1)) {
          j += 16;
          code += past_zero16(z);
        } else {
          j += cand;
          code += past_zero(z, cand);
        }
        continue;
      }
      const uint32_t k = static_cast<uint32_t>(__builtin_ctz(esc));
      j += k;
      if (k) code += past_zero(z, k);
    }
    const uint32_t* slots = codes + b0 + j;
    const uint32_t d = slots[0];
    const uint32_t s = d & 15u, nc = (d >> 9) & 31u;
    const uint32_t t = static_cast<uint32_t>(load_u64(bytes + (code >> 3)) >> (code & 7));
    const uint32_t rr = ctz32(~t | (1u << s));
    if (rr < s) {
      code += rr + 1;
      const uint32_t v = slots[((1 + rr) >> 1) * W];
      field[j] = (rr & 1u) ? v & 0xFFFFu : v >> 16;
    } else {
      field[j] = field_at(bytes, code + s, nc);
      code += s + nc;
    }
    ++j;
  }
  *code_io = code;
}

// AVX-512, N rows (1 or 2, decoded block by block side by side: their code
// chains are independent) of Coded32Program fast groups (fast_of). Per 16
// words of a row: one 64-bit code window whose 16th zero ends the 16 units'
// codes (found by a deposit, no count), their ranks as the gaps between the
// window's zeros (VPCOMPRESSB), their symbols by two byte permutes, and the
// words from one 64-byte load of their plain bits under permute controls and
// shifts fixed for the row (the plain fields lie 32 - nc bits apart from the
// row's first bit). A window with fewer than 16 zeros takes the rest from a
// second one; 16 units with an escape, or whose codes two windows do not
// hold, take coded32_fields. False (nothing written) when a
// row's last plain load would pass the payload's end: the caller then takes
// the general loop.
// kStream: every row's words by non-temporal stores (coded32_rows_fast
// decides; a branch per block cost 2-3% at 1024 rows).
template <int N, bool kStream>
IBP_TARGET_AVX512 inline bool coded32_rows_fast_as(const uint8_t* bytes, uint32_t W,
                                                   uint64_t payload_bytes,
                                                   const Coded32Program& c32,
                                                   const Coded32Row (&row)[N]) {
  const __m512i sym_ctrl = _mm512_sub_epi32(sym_at_lanes(), _mm512_set1_epi32(1));
  const __m512i iota8 = iota_epi8();
  const __m128i ff = _mm_set1_epi8(-1);
  uint64_t code[N];
  uint32_t step[N];  // plain bytes per block: 2 (32 - nc)
  const uint8_t* pb[N];  // the block's plain bits, from bit pos & 7 of this byte
  const uint8_t *sym[N], *s8[N];
  __m512i idx[N], shv[N], lov[N], ncv[N], lomask[N], midmask[N];
  for (int r = 0; r < N; ++r) {
    const uint32_t g = row[r].g, lo = c32.lo_nc[2 * g], nc = c32.lo_nc[2 * g + 1], P = 32 - nc;
    const uint64_t pos = row[r].pos;
    if ((pos >> 3) + 2ull * P * (W / 16 - 1) + 64 > payload_bytes) return false;
    code[r] = pos + static_cast<uint64_t>(P) * W;
    step[r] = 2 * P;
    pb[r] = bytes + (pos >> 3);
    sym[r] = c32.sym_of(g);
    s8[r] = c32.s8_of(g);
    const __m512i off = _mm512_add_epi32(
        _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                           _mm512_set1_epi32(static_cast<int>(P))),
        _mm512_set1_epi32(static_cast<int>(pos & 7)));
    // lane i: the 4 bytes from its field's first byte, then a shift by its bit
    idx[r] = _mm512_add_epi8(
        _mm512_shuffle_epi8(_mm512_srli_epi32(off, 3),
                            _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0x00000000)),
        _mm512_set1_epi32(0x03020100));
    shv[r] = _mm512_and_si512(off, _mm512_set1_epi32(7));
    lov[r] = _mm512_set1_epi32(static_cast<int>(lo));
    ncv[r] = _mm512_set1_epi32(static_cast<int>(nc));
    lomask[r] = _mm512_set1_epi32(static_cast<int>(low_mask(lo)));
    midmask[r] = _mm512_set1_epi32(static_cast<int>(low_mask(nc) << lo));
  }
  // Two passes over up to kPieceBlocks blocks of 16 words: the first follows
  // each row's code chain (windows, zero positions, escape tests) and keeps
  // the units' rank + 1 as bytes (or, for a block the fast test refuses, its
  // fields from coded32_fields); the second, whose blocks depend on nothing
  // but those bytes, looks the symbols up and rebuilds and stores the words.
  // (One pass had every block's stores wait on its window's chain.)
  constexpr uint32_t kPieceBlocks = 16;
  alignas(64) uint8_t rank[N][kPieceBlocks][16];
  alignas(64) uint32_t field[N][kPieceBlocks][16];
  for (uint32_t p0 = 0; p0 < W; p0 += 16 * kPieceBlocks) {
    const uint32_t nb = std::min<uint32_t>(kPieceBlocks, (W - p0) / 16);
    uint32_t slow[N] = {};  // bit b: block b's fields in field[r][b]
    for (uint32_t b = 0; b < nb; ++b) {
      const uint32_t w0 = p0 + 16 * b;
      for (int r = 0; r < N; ++r) {
        // the window from code[r] (bits past its valid ones read as ones)
        const uint64_t z = ~load_u64(bytes + (code[r] >> 3)) >> (code[r] & 7);
        const uint64_t end16 = _pdep_u64(uint64_t{1} << 15, z);  // 0: < 16 zeros
        // zp: the positions of the 16 units' last code bits from code[r] (the
        // window's first 16 zeros), end: the bits of their codes (0: not found)
        __m128i zp = _mm_setzero_si128();
        uint64_t end = 0;
        if (__builtin_expect(end16 != 0, 1)) {
          zp = _mm512_castsi512_si128(_mm512_maskz_compress_epi8(_cvtu64_mask64(z), iota8));
          end = static_cast<uint64_t>(__builtin_ctzll(end16)) + 1;
        } else if (const uint32_t k = static_cast<uint32_t>(__builtin_popcountll(z))) {
          // Long codes (1.5-2% of fp32 windows): the window's k < 16 zeros end
          // the first k units, a second window from past the k-th the other
          // 16 - k (its positions moved up by the bits before it, < 128).
          const uint64_t adv = past_zero(z, k), c2 = code[r] + adv;
          const uint64_t z2 = ~load_u64(bytes + (c2 >> 3)) >> (c2 & 7);
          const uint64_t end2 = _pdep_u64(uint64_t{1} << (15 - k), z2);
          if (end2) {
            const __mmask16 first = static_cast<__mmask16>((1u << k) - 1);
            const __m128i p2 = _mm_add_epi8(
                _mm512_castsi512_si128(_mm512_maskz_compress_epi8(_cvtu64_mask64(z2), iota8)),
                _mm_set1_epi8(static_cast<char>(adv)));
            zp = _mm_mask_mov_epi8(
                _mm_maskz_expand_epi8(static_cast<__mmask16>(~first), p2), first,
                _mm512_castsi512_si128(_mm512_maskz_compress_epi8(_cvtu64_mask64(z), iota8)));
            end = adv + static_cast<uint64_t>(__builtin_ctzll(end2)) + 1;
          }
        }
        // d = rank + 1: the gap from the previous zero (the first from bit -1)
        const __m128i d = _mm_sub_epi8(zp, _mm_alignr_epi8(zp, ff, 15));
        _mm_store_si128(reinterpret_cast<__m128i*>(rank[r][b]), d);
        const __m128i sv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s8[r] + w0));
        if (__builtin_expect(end != 0 && !_mm_cmpgt_epu8_mask(d, sv), 1)) {
          code[r] += end;
        } else {
          uint64_t at = code[r];  // not &code[r]: that would keep it in memory, on the chain
          coded32_fields(bytes, &at, row[r].codes, W, sym[r], w0, 16, field[r][b]);
          code[r] = at;
          slow[r] |= 1u << b;
        }
      }
    }
    for (uint32_t b = 0; b < nb; ++b) {
      const uint32_t w0 = p0 + 16 * b;
      for (int r = 0; r < N; ++r) {
        const __m512i f =
            __builtin_expect((slow[r] >> b & 1u) == 0, 1)
                ? byte_symbols16(sym[r] + 16 * static_cast<size_t>(w0),
                                 _mm512_add_epi32(_mm512_cvtepu8_epi32(_mm_load_si128(
                                                      reinterpret_cast<const __m128i*>(rank[r][b]))),
                                                  sym_ctrl))
                : _mm512_load_si512(field[r][b]);
        // word: the plain bits below lo, the field, the plain bits from lo on
        // moved up by nc (the plain lane's bits past its field shift out)
        const __m512i pl =
            _mm512_srlv_epi32(_mm512_permutexvar_epi8(idx[r], _mm512_loadu_si512(pb[r])), shv[r]);
        pb[r] += step[r];
        const __m512i x =
            _mm512_ternarylogic_epi32(lomask[r], pl, _mm512_sllv_epi32(pl, ncv[r]), 0xCA);
        const __m512i word =
            _mm512_ternarylogic_epi32(x, midmask[r], _mm512_sllv_epi32(f, lov[r]), 0xBA);
        if (kStream) {
          _mm512_stream_si512(reinterpret_cast<__m512i*>(row[r].words + w0), word);
        } else {
          _mm512_storeu_si512(row[r].words + w0, word);
        }
      }
    }
  }
  return true;
}

// coded32_rows_fast_as, streaming where every row asks for it (Coded32Row::
// stream) and its words are 64-byte aligned.
template <int N>
IBP_TARGET_AVX512 inline bool coded32_rows_fast(const uint8_t* bytes, uint32_t W,
                                                uint64_t payload_bytes, const Coded32Program& c32,
                                                const Coded32Row (&row)[N]) {
  bool stream = true;
  for (int r = 0; r < N; ++r) stream = stream && stream_words(row[r], 64);
  return stream ? coded32_rows_fast_as<N, true>(bytes, W, payload_bytes, c32, row)
                : coded32_rows_fast_as<N, false>(bytes, W, payload_bytes, c32, row);
}

// AVX-512, 32-bit units: the codes of up to 256 words decoded into a buffer
// up to 16 per 64-bit window (zero positions by VPCOMPRESSB, ranks as their
// gaps, slots by two byte permutes of the group's byte symbols or, without
// them, blends of the 8 code rows), then 16 words' plain bits read and the
// words rebuilt in the register (plain bits from two 64-byte loads masked at
// the payload's end, like ibp_row_avx512: 16 x 32 bits + 7 fit in 128 bytes;
// under the group's fixed shifts where Coded32Program marks the 16 words
// uniform). Every window load starts inside the row's code section, like the
// scalar loop's. c32 (or null: the code rows alone) is the tensor's program,
// g the row's group.
IBP_TARGET_AVX512 inline void coded_row_avx512(const uint32_t* p, uint64_t pos,
                                               const uint32_t* codes, uint32_t W,
                                               uint32_t code_rows, uint64_t payload_bytes,
                                               uint32_t* words,
                                               const Coded16Program* c16 = nullptr,
                                               uint32_t g = 0, bool stream = false,
                                               const Coded32Program* c32 = nullptr) {
  // 16-bit units: coded16_cpu.h with the tensor's Coded16Program (group g),
  // else the scalar loop
  if (code_rows != 8) {
    if (c16) {
      coded16_row_avx512(p, pos, codes, W, payload_bytes, words, *c16, g, stream);
    } else {
      coded_row_scalar(p, pos, codes, W, code_rows, words);
    }
    return;
  }
  if (!W) return;
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(p);
  if (c32 && c32->fast_of(g) &&
      coded32_rows_fast<1>(bytes, W, payload_bytes, *c32, {{pos, codes, g, words, stream}})) {
    return;
  }
  const uint32_t* offset = codes + 8 * W;
  uint64_t code = pos + offset[W - 1] + 32 - ((codes[W - 1] >> 9) & 31u);
  const __m512i ones = _mm512_set1_epi32(-1), k31 = _mm512_set1_epi32(31);
  const __m512i k32 = _mm512_set1_epi32(32);
  // The group's Coded32Program data (null / unused without one).
  const uint8_t* bsym = c32 ? c32->sym_of(g) : nullptr;
  const uint8_t* uni = c32 ? c32->uniform_of(g) : nullptr;
  const uint32_t ulo = uni ? c32->lo_nc[2 * g] : 0, unc = uni ? c32->lo_nc[2 * g + 1] : 0;
  // uniform words: plain fields every 32 - nc bits; shifts fixed
  const __m512i ustep = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
      _mm512_set1_epi32(static_cast<int>(32 - unc)));
  const __m512i ulov = _mm512_set1_epi32(static_cast<int>(ulo));
  const __m512i uhiv = _mm512_set1_epi32(static_cast<int>(ulo + unc));
  const __m512i ulomask = _mm512_set1_epi32(static_cast<int>(low_mask(ulo)));
  constexpr uint32_t kBlock = 256;
  alignas(64) uint32_t field[kBlock];
  for (uint32_t b0 = 0; b0 < W; b0 += kBlock) {
    const uint32_t nb = W - b0 < kBlock ? W - b0 : kBlock;
    coded32_fields(bytes, &code, codes, W, bsym, b0, nb, field);
    for (uint32_t w0 = b0; w0 < b0 + nb; w0 += 16) {
      const uint32_t n = b0 + nb - w0 < 16 ? b0 + nb - w0 : 16;
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const uint64_t base = pos + offset[w0], at = base >> 3;
      const __m512i f = _mm512_load_si512(field + (w0 - b0));
      __m512i word;
      if (uni && uni[w0 / 16]) {
        // plain bits every 32 - nc bits; the bits past them shift out of the
        // word: word = plain's low lo bits | field << lo | plain >> lo << (lo + nc)
        const __m512i off = _mm512_add_epi32(ustep, _mm512_set1_epi32(static_cast<int>(base & 7)));
        const __m512i pl = bits32_at(bytes, at, payload_bytes, off);
        word = _mm512_ternarylogic_epi32(
            _mm512_and_si512(pl, ulomask), _mm512_sllv_epi32(f, ulov),
            _mm512_sllv_epi32(_mm512_srlv_epi32(pl, ulov), uhiv), 0xFE);
      } else {
        const __m512i d = _mm512_maskz_loadu_epi32(m, codes + w0);
        const __m512i lo = _mm512_and_si512(_mm512_srli_epi32(d, 4), k31);
        const __m512i nc = _mm512_and_si512(_mm512_srli_epi32(d, 9), k31);
        const __m512i off = _mm512_add_epi32(
            _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, offset + w0),
                             _mm512_set1_epi32(static_cast<int>(offset[w0]))),
            _mm512_set1_epi32(static_cast<int>(base & 7)));
        // plain: 32 - nc bits; word = plain's low lo bits | field << lo | the rest << (lo + nc)
        const __m512i pl = _mm512_and_si512(bits32_at(bytes, at, payload_bytes, off),
                                            _mm512_srlv_epi32(ones, nc));
        word = _mm512_ternarylogic_epi32(
            _mm512_and_si512(pl, _mm512_srlv_epi32(ones, _mm512_sub_epi32(k32, lo))),
            _mm512_sllv_epi32(f, lo),
            _mm512_sllv_epi32(_mm512_srlv_epi32(pl, lo), _mm512_add_epi32(lo, nc)), 0xFE);
      }
      _mm512_mask_storeu_epi32(words + w0, m, word);
    }
  }
}
#endif

}  // namespace ibp
