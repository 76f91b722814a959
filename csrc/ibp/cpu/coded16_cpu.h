// AVX-512 decode of kCoded rows of 16-bit units (code_rows == 16: fp16,
// bf16): the same words as decode_coded_words.
//
// A row's units u = 2w + h (h = 0 the low half of word w) have their codes
// one after another in the code section; a ranked code is r one bits and a
// zero, an escape s one bits and nc raw bits. The row decodes in blocks of
// up to kBlock16 units in two passes:
//
// 1. Ranks. The code section is scanned ahead in 64-bit chunks, each chunk's
//    zero positions extracted at once (VPCOMPRESSB of the byte indices) and
//    stored modulo 256 in a byte buffer; the scan has no serial dependency
//    but the zero count. Without escapes, consecutive units end at
//    consecutive zeros, so the rank of the unit ending at zero i is the
//    difference of positions i and i - 1, less one: 64 units at a time are
//    one byte subtraction, one compare against the units' s (an escape reads
//    as a rank >= s) and a store. A difference of 256 or more (a zero-free
//    chunk between the two zeros) would wrap, so the scan, after a zero-free
//    chunk, shifts its positions to make that difference read 200 (any rank
//    >= 16 means "escape"). An escape, and each unit after it until the next
//    ranked one, is read alone from its bit position (the position follows
//    lazily from the ranks since the last such step); an escape skips the
//    zeros of its raw field (nc minus its popcount), which keeps i on the
//    next unit's zero.
// 2. Words, 16 (32 units) at a time: each unit's symbol, slot 1 + r of its
//    code rows, is gathered as the 16-bit slot (VPGATHERDD with scale 2, the
//    index from a 32-entry table by r and h), escapes' fields blended in; the
//    plain bits of the 16 words come from two 64-byte loads masked at the
//    payload's end (as in coded_row_avx512). When the 32 units share unit
//    0's (lo, nc) (a float dtype's exponent: every unit but an odd row's
//    padding; a per-group flag of Coded16Program), the words' plain bits
//    lie every 32 - 2 nc bits and each word is its plain bits shifted by 0,
//    nc and 2 nc under fixed masks with the two fields put in; otherwise the
//    plain offsets come from the offset row and each unit is rebuilt in its
//    16-bit lane with variable shifts.
//
// Reads: scan chunks past the row (they may run into later rows) are masked
// at the payload's end; the serial steps read 8 bytes from a bit inside the
// row's code section, like the scalar loop (the payload padding). The gathers
// read inside the group's code rows and the offset row after them.
#pragma once

#include <cstdint>
#include <vector>

#include "../coded.h"
#include "dense.h"

namespace ibp {

// Per-group data of 16-bit kCoded rows derived from the decode table's code
// rows (no format change), built once per CpuGather like dense.h's
// DenseProgram: what coded16_row_avx512 would otherwise rebuild from the
// code rows for every row. sym[g * stride + u] is the s (ranked symbols) of
// unit u of group g, followed by 64 zero bytes past the last group (the rank
// pass reads 64 at a time); uniform[g * ustride + j] = 1 when every unit of
// words 16j .. 16j + 15 (those < row_words) has unit 0's (lo, nc). Empty when
// the tensor has no 16-bit code rows.
struct Coded16Program {
  uint32_t stride = 0, ustride = 0;
  std::vector<uint8_t> sym, uniform;

  explicit Coded16Program(const CompressedView& c) {
    const uint32_t W = c.geo.row_words, G = c.geo.num_groups;
    if (c.geo.code_rows != 16 || !W) return;
    stride = 2 * W;
    ustride = (W + 15) / 16;
    sym.assign(static_cast<size_t>(G) * stride + 64, 0);
    uniform.assign(static_cast<size_t>(G) * ustride, 1);
    for (uint32_t g = 0; g < G; ++g) {
      const uint32_t* codes = code_part(c.table, G, W, 16, g);
      const CodeUnit u0 = code_unit(codes, W, 2, 0);
      for (uint32_t u = 0; u < 2 * W; ++u) {
        const CodeUnit cu = code_unit(codes, W, 2, u);
        sym[static_cast<size_t>(g) * stride + u] = static_cast<uint8_t>(cu.s);
        if (cu.lo != u0.lo || cu.nc != u0.nc) {
          uniform[static_cast<size_t>(g) * ustride + u / 32] = 0;
        }
      }
    }
  }
  const uint8_t* sym_of(uint32_t g) const {
    return sym.empty() ? nullptr : sym.data() + static_cast<size_t>(g) * stride;
  }
  const uint8_t* uniform_of(uint32_t g) const {
    return uniform.empty() ? nullptr : uniform.data() + static_cast<size_t>(g) * ustride;
  }
};

#if defined(IBP_X86_SIMD)

constexpr uint32_t kBlock16 = 512;     // units per block (256 words)
constexpr uint32_t kZeroCap16 = 2048;  // zero-position buffer bytes
constexpr uint8_t kEscapeRank = 0xFF;  // rank buffer entry of an escape

// Producer of the zero positions (mod 256) of a bit stream from bit `start`
// on: pos[0] is the position of bit start - 1 (the virtual zero before the
// first code), pos[1 + j] that of the stream's zero j.
struct ZeroScan16 {
  const uint8_t* bytes;
  uint64_t payload_bytes;
  uint64_t at;         // byte of the next chunk
  uint64_t first;      // bits of the next chunk at or after the start
  __m512i base;        // position of the next chunk's bit 0, in every byte
  uint32_t count = 1;  // positions in the buffer
  bool empty = false;  // the last chunk had no zero

  IBP_TARGET_AVX512 ZeroScan16(const uint8_t* b, uint64_t pb, uint64_t start, uint8_t* pos)
      : bytes(b), payload_bytes(pb), at(start >> 3), first(~uint64_t{0} << (start & 7)),
        base(_mm512_setzero_si512()) {
    pos[0] = static_cast<uint8_t>((start & 7) + 255);
  }

  // One chunk: the positions of its zeros appended at pos[count].
  IBP_TARGET_AVX512 void chunk(uint8_t* pos) {
    const __m512i iota8 = _mm512_set_epi8(
        63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42,
        41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20,
        19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    uint64_t raw;
    if (at < payload_bytes && payload_bytes - at >= 8) {
      raw = load_u64(bytes + at);
    } else {  // bytes at or past the payload's end read as zero
      const uint64_t left = at < payload_bytes ? payload_bytes - at : 0;
      raw = static_cast<uint64_t>(_mm_cvtsi128_si64(
          _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << left) - 1), bytes + at)));
    }
    // z = ~raw & first in a general register (BMI1 ANDN, which every AVX-512
    // CPU has): the compiler would use mask registers, whose port is busy
    uint64_t z;
    asm("andn %2, %1, %0" : "=r"(z) : "r"(raw), "r"(first));
    at += 8;
    first = ~uint64_t{0};
    if (__builtin_expect(!z, 0)) {
      empty = true;
      base = _mm512_add_epi8(base, _mm512_set1_epi8(64));
      return;
    }
    if (__builtin_expect(empty, 0)) {  // the first zero 201 past the last one
      empty = false;
      base = _mm512_set1_epi8(static_cast<char>(pos[count - 1] + 201 - __builtin_ctzll(z)));
    }
    const __m512i at_zero = _mm512_maskz_compress_epi8(_cvtu64_mask64(z), iota8);
    _mm512_storeu_si512(pos + count, _mm512_add_epi8(at_zero, base));
    base = _mm512_add_epi8(base, _mm512_set1_epi8(64));
    count += static_cast<uint32_t>(__builtin_popcountll(z));
  }
};

// The sum of the ranks + 1 of the n units ending at zeros j .. j + n - 1
// (pos[j + k + 1] - pos[j + k] each, all < 16).
IBP_TARGET_AVX512 inline uint64_t code_bits16(const uint8_t* pos, uint32_t n) {
  __m512i acc = _mm512_setzero_si512();
  for (uint32_t x = 0; x < n; x += 64) {
    const uint32_t k = n - x < 64 ? n - x : 64;
    const __mmask64 m = k == 64 ? ~__mmask64{0} : _cvtu64_mask64((uint64_t{1} << k) - 1);
    const __m512i d = _mm512_sub_epi8(_mm512_maskz_loadu_epi8(m, pos + x + 1),
                                      _mm512_maskz_loadu_epi8(m, pos + x));
    acc = _mm512_add_epi64(acc, _mm512_sad_epu8(d, _mm512_setzero_si512()));
  }
  return static_cast<uint64_t>(_mm512_reduce_add_epi64(acc));
}

IBP_TARGET_AVX512 inline void coded16_row_avx512(const uint32_t* p, uint64_t pos,
                                                 const uint32_t* codes, uint32_t W,
                                                 uint64_t payload_bytes, uint32_t* words,
                                                 const uint8_t* gsym = nullptr,
                                                 const uint8_t* guniform = nullptr) {
  if (!W) return;
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(p);
  const uint32_t* offset = codes + 16 * W;
  const uint64_t code_start = pos + offset[W - 1] + 32 - ((codes[W - 1] >> 9) & 31u) -
                              ((codes[8 * W + W - 1] >> 9) & 31u);
  const __m512i k16 = _mm512_set1_epi32(16);
  const __m512i k31 = _mm512_set1_epi32(31);
  const __m512i ones = _mm512_set1_epi32(-1), w31 = _mm512_set1_epi16(31);
  const __m512i one8 = _mm512_set1_epi8(1);
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  // Gather index (16-bit slots from codes + w0) of unit lane L of a half of
  // the 16 words: table[r + 16 (L & 1)] + 2 (L >> 1) (+ 16 for the second
  // half): slot k = r + 1 is half k & 1 of row 8h + k / 2; r = 15 (never a
  // rank) and an escape's 255 index rows 8 and 16, inside the code part.
  const __m512i kk = _mm512_add_epi32(iota, _mm512_set1_epi32(1));
  const __m512i slot_lo = _mm512_add_epi32(
      _mm512_mullo_epi32(_mm512_srli_epi32(kk, 1), _mm512_set1_epi32(static_cast<int>(2 * W))),
      _mm512_and_si512(kk, _mm512_set1_epi32(1)));
  const __m512i slot_hi = _mm512_add_epi32(slot_lo, _mm512_set1_epi32(static_cast<int>(16 * W)));
  const __m512i half_bit = _mm512_set_epi32(16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0);
  const __m512i word_off0 = _mm512_and_si512(iota, _mm512_set1_epi32(~1));  // 2 (L >> 1)
  const __m512i word_off1 = _mm512_add_epi32(word_off0, k16);
  const __m512i even16 = _mm512_set_epi16(62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36,
                                          34, 32, 30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8,
                                          6, 4, 2, 0);
  // The uniform (lo, nc) of unit 0, its shifts and masks.
  const uint32_t desc0 = codes[0] & 0x3FF0u, L = (desc0 >> 4) & 31u, N = (desc0 >> 9) & 31u;
  const __m512i w15 = _mm512_set1_epi16(15), wLN = _mm512_set1_epi16(0x3FF0);
  const __m512i wdesc0 = _mm512_set1_epi16(static_cast<short>(desc0));
  const __m512i shN = _mm512_set1_epi32(static_cast<int>(N));
  const __m512i sh2N = _mm512_set1_epi32(static_cast<int>(2 * N));
  const __m512i shL = _mm512_set1_epi32(static_cast<int>(L));
  const uint32_t fmask = static_cast<uint32_t>(low_mask(N)) << L;
  const __m512i m_lo = _mm512_set1_epi32(static_cast<int>(low_mask(L)));  // bits from plain << 0
  const __m512i m_mid = _mm512_set1_epi32(static_cast<int>(
      16 + L + N >= 32 ? ~0u : (1u << (16 + L + N)) - 1));  // below: << 0 or << N; above: << 2N
  const __m512i m_field = _mm512_set1_epi32(static_cast<int>(fmask | fmask << 16));
  const __m512i plain_step =  // the plain bits' offsets of 16 uniform words
      _mm512_mullo_epi32(iota, _mm512_set1_epi32(static_cast<int>(32 - 2 * N)));
  constexpr __mmask32 kHigh = 0xAAAAAAAAu;  // the h = 1 lanes of 16-bit lanes
  alignas(64) uint8_t zpos[kZeroCap16];
  alignas(64) uint8_t sym_buf[kBlock16 + 64];  // s of each unit of the block
  alignas(64) uint8_t rank[kBlock16 + 64];    // its rank, or kEscapeRank
  alignas(64) uint16_t field[kBlock16 + 32];  // an escape's field
  uint8_t uniform_buf[kBlock16 / 32];          // words 16j.. of the block all have (L, N)
  ZeroScan16 scan(bytes, payload_bytes, code_start, zpos);
  uint32_t i = 0;              // zero index of the next unit's code end; zpos[i] its last zero
  uint32_t ipos = 0;           // zero index at bit bpos
  uint64_t bpos = code_start;  // bit where the unit ending at zero ipos starts
  uint64_t b = code_start;     // the next unit's bit when `serial`
  bool serial = false;         // the next unit follows an escape
  for (uint32_t b0 = 0; b0 < W; b0 += kBlock16 / 2) {
    const uint32_t nbw = W - b0 < kBlock16 / 2 ? W - b0 : kBlock16 / 2, nb = 2 * nbw;
    // s of the block's units and its uniform flags: the group's program
    // (Coded16Program), or built here from the code rows
    const uint8_t* sym = gsym ? gsym + 2 * b0 : sym_buf;
    const uint8_t* uniform = guniform ? guniform + b0 / 16 : uniform_buf;
    for (uint32_t x = 0; !gsym && x < nbw; x += 16) {  // s of unit 2x + h, bytes in unit order
      const uint32_t n = nbw - x < 16 ? nbw - x : 16;
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const __m512i d0 = _mm512_maskz_loadu_epi32(m, codes + b0 + x);
      const __m512i d8 = _mm512_maskz_loadu_epi32(m, codes + 8 * W + b0 + x);
      // slot 0 of each unit in its 16-bit lane
      const __m512i d = _mm512_mask_blend_epi16(kHigh, d0, _mm512_slli_epi32(d8, 16));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(sym_buf + 2 * x),
                          _mm512_cvtepi16_epi8(_mm512_and_si512(d, w15)));
      uniform_buf[x / 16] = !_mm512_mask_cmpneq_epi16_mask(
          static_cast<__mmask32>((uint64_t{1} << (2 * n)) - 1), _mm512_and_si512(d, wLN), wdesc0);
    }
    // Pass 1: ranks.
    uint32_t u = 0;
    while (u < nb) {
      if (serial) {  // unit u starts at bit b, zero i is the first at or after b
        const uint32_t d = codes[8 * (u & 1u) * W + b0 + (u >> 1)];
        const uint32_t s = d & 15u, nc = (d >> 9) & 31u;
        const uint32_t t = static_cast<uint32_t>(load_u64(bytes + (b >> 3)) >> (b & 7));
        const uint32_t r = ctz32(~t | (1u << s));
        if (r < s) {
          rank[u] = static_cast<uint8_t>(r);
          b += r + 1;
          ++i;
          bpos = b;
          ipos = i;
          serial = false;
        } else {
          const uint32_t f = field_at(bytes, b + s, nc);
          rank[u] = kEscapeRank;
          field[u] = static_cast<uint16_t>(f);
          i += nc - static_cast<uint32_t>(__builtin_popcount(f));
          b += s + nc;
        }
        ++u;
        continue;
      }
      if (i >= scan.count) {
        // zero i - 1 not scanned (only right after serial steps: ipos == i,
        // bpos the next unit's bit): scan again from there
        scan = ZeroScan16(bytes, payload_bytes, bpos, zpos);
        i = ipos = 0;
      }
      // The zeros of the rest of the block (if it has no escapes) + 64,
      // scanned before they are read (a load of bytes just stored stalls).
      const uint32_t ahead = nb - u + 64;
      if (i + ahead + 65 > kZeroCap16) {  // room for a chunk past them: move the tail down
        bpos += code_bits16(zpos + ipos, i - ipos);
        const uint32_t keep = scan.count - i;
        for (uint32_t k = 0; k < keep; ++k) zpos[k] = zpos[i + k];
        scan.count = keep;
        i = ipos = 0;
      }
      while (scan.count < i + 1 + ahead) scan.chunk(zpos);
      const uint32_t n = nb - u < 64 ? nb - u : 64;
      const __mmask64 valid = n == 64 ? ~__mmask64{0} : _cvtu64_mask64((uint64_t{1} << n) - 1);
      const __m512i g = _mm512_sub_epi8(
          _mm512_sub_epi8(_mm512_loadu_si512(zpos + i + 1), _mm512_loadu_si512(zpos + i)), one8);
      const uint64_t esc = _cvtmask64_u64(
          _mm512_mask_cmpge_epu8_mask(valid, g, _mm512_loadu_si512(sym + u)));
      _mm512_storeu_si512(rank + u, g);  // lanes from an escape on are rewritten
      if (__builtin_expect(!esc, 1)) {
        u += n;
        i += n;
        continue;
      }
      const uint32_t k = static_cast<uint32_t>(__builtin_ctzll(esc));
      u += k;
      i += k;
      // unit u is an escape: its bit from the ranked codes since bpos
      b = bpos + code_bits16(zpos + ipos, i - ipos);
      serial = true;  // the serial step above reads it (r >= s)
    }
    // Pass 2: words.
    for (uint32_t x = 0; x < nbw; x += 16) {
      const uint32_t w0 = b0 + x, n = nbw - x < 16 ? nbw - x : 16;
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const __mmask32 m2 = static_cast<__mmask32>((uint64_t{1} << (2 * n)) - 1);
      // fields: slot 1 + r of each unit (the low 16 bits of each gathered dword)
      const __m128i* rk = reinterpret_cast<const __m128i*>(rank + 2 * x);
      const __m512i r0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(rk));
      const __m512i r1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(rk + 1));
      const __m512i i0 = _mm512_add_epi32(
          _mm512_permutex2var_epi32(slot_lo, _mm512_or_si512(r0, half_bit), slot_hi), word_off0);
      const __m512i i1 = _mm512_add_epi32(
          _mm512_permutex2var_epi32(slot_lo, _mm512_or_si512(r1, half_bit), slot_hi), word_off1);
      const __mmask16 gm0 = n >= 8 ? 0xFFFF : static_cast<__mmask16>((1u << (2 * n)) - 1);
      const __mmask16 gm1 = n <= 8 ? 0 : static_cast<__mmask16>((1u << (2 * (n - 8))) - 1);
      const __m512i zero = _mm512_setzero_si512();
      const __m512i g0 = _mm512_mask_i32gather_epi32(zero, gm0, i0, codes + w0, 2);
      const __m512i g1 = _mm512_mask_i32gather_epi32(zero, gm1, i1, codes + w0, 2);
      __m512i f = _mm512_permutex2var_epi16(g0, even16, g1);
      const __mmask32 e = _mm256_mask_cmpeq_epi8_mask(
          m2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rank + 2 * x)),
          _mm256_set1_epi8(static_cast<char>(kEscapeRank)));
      if (e) f = _mm512_mask_loadu_epi16(f, e, field + 2 * x);
      // plain bits: the word's 32 - nc0 - nc1, h = 0's 16 - nc0 first; their
      // offsets from the first word's are k (32 - 2N) when uniform
      const uint64_t base = pos + offset[w0], at = base >> 3;
      const bool same = uniform[x / 16];
      const __m512i off = _mm512_add_epi32(
          same ? plain_step
               : _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, offset + w0),
                                  _mm512_set1_epi32(static_cast<int>(offset[w0]))),
          _mm512_set1_epi32(static_cast<int>(base & 7)));
      const __m512i pl = bits32_at(bytes, at, payload_bytes, off);
      __m512i word;
      if (__builtin_expect(same, 1)) {
        // one (lo, nc): plain bits [0, lo) stay, [lo, 16 - nc + lo) move up
        // by nc, the rest by 2 nc; the fields go to [lo, lo + nc) of each half
        const __m512i t = _mm512_ternarylogic_epi32(m_lo, pl, _mm512_sllv_epi32(pl, shN), 0xCA);
        const __m512i v = _mm512_ternarylogic_epi32(m_mid, t, _mm512_sllv_epi32(pl, sh2N), 0xCA);
        word = _mm512_ternarylogic_epi32(m_field, _mm512_sllv_epi32(f, shL), v, 0xCA);
      } else {
        const __m512i a0 = _mm512_maskz_loadu_epi32(m, codes + w0);
        const __m512i c0 = _mm512_maskz_loadu_epi32(m, codes + 8 * W + w0);
        const __m512i desc = _mm512_mask_blend_epi16(kHigh, a0, _mm512_slli_epi32(c0, 16));
        const __m512i lo = _mm512_and_si512(_mm512_srli_epi16(desc, 4), w31);
        const __m512i nc = _mm512_and_si512(_mm512_srli_epi16(desc, 9), w31);
        const __m512i nc0 = _mm512_and_si512(_mm512_srli_epi32(a0, 9), k31);
        const __m512i hi = _mm512_srlv_epi32(pl, _mm512_sub_epi32(k16, nc0));
        const __m512i plain =
            _mm512_and_si512(_mm512_mask_blend_epi16(kHigh, pl, _mm512_slli_epi32(hi, 16)),
                             _mm512_srlv_epi16(ones, nc));
        // unit = plain's low lo bits | field << lo | the rest << (lo + nc)
        word = _mm512_ternarylogic_epi32(
            _mm512_andnot_si512(_mm512_sllv_epi16(ones, lo), plain), _mm512_sllv_epi16(f, lo),
            _mm512_sllv_epi16(_mm512_srlv_epi16(plain, lo), _mm512_add_epi16(lo, nc)), 0xFE);
      }
      _mm512_mask_storeu_epi32(words + w0, m, word);
    }
  }
}

#endif

}  // namespace ibp
