// CPU decode of kCoded rows (coded.h): the same words as decode_coded_words,
// with the plain section read at its per-word offsets (the code part's offset
// row: one independent unaligned load per unit, no serial reader) and the
// code section through a 64-bit window reloaded only when fewer bits than
// the longest code remain in it. Reads stay inside the payload padding like
// dense.h's field_at.
#pragma once

#include <cstdint>

#include "../coded.h"
#include "coded16_cpu.h"
#include "dense.h"

namespace ibp {

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
// The bits of z up to and including its k-th one bit (k >= 1, z has k).
IBP_TARGET_AVX512 inline uint32_t past_zero(uint64_t z, uint32_t k) {
  return static_cast<uint32_t>(__builtin_ctzll(_pdep_u64(uint64_t{1} << (k - 1), z))) + 1;
}

// past_zero(z, 16) for a z with at least 16 one bits, without their count
// (bit 63 set keeps the count of trailing zeros defined for any z).
IBP_TARGET_AVX512 inline uint32_t past_zero16(uint64_t z) {
  return static_cast<uint32_t>(__builtin_ctzll(_pdep_u64(uint64_t{1} << 15, z) | (uint64_t{1} << 63))) + 1;
}

// AVX-512, 32-bit units: the codes of up to 256 words decoded into a buffer
// up to 16 per 64-bit window (zero positions by VPCOMPRESSB, ranks as their
// gaps, slots by blends of the 8 code rows), then 16 words' plain bits read
// and the words rebuilt in the register (plain bits from two 64-byte loads
// masked at the payload's end, like ibp_row_avx512: 16 x 32 bits + 7 fit in
// 128 bytes). Every window load starts inside the row's code section, like
// the scalar loop's.
IBP_TARGET_AVX512 inline void coded_row_avx512(const uint32_t* p, uint64_t pos,
                                               const uint32_t* codes, uint32_t W,
                                               uint32_t code_rows, uint64_t payload_bytes,
                                               uint32_t* words,
                                               const Coded16Program* c16 = nullptr,
                                               uint32_t g = 0, bool stream = false) {
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
  const uint32_t* offset = codes + 8 * W;
  uint64_t code = pos + offset[W - 1] + 32 - ((codes[W - 1] >> 9) & 31u);
  const __m512i ones = _mm512_set1_epi32(-1), k31 = _mm512_set1_epi32(31);
  const __m512i k32 = _mm512_set1_epi32(32);
  const __m512i iota8 = _mm512_set_epi8(
      63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41,
      40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18,
      17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i k15 = _mm512_set1_epi32(15), k16 = _mm512_set1_epi32(16);
  const __m512i kFFFF = _mm512_set1_epi32(0xFFFF);
  const __m512i two = _mm512_set1_epi32(2), fourv = _mm512_set1_epi32(4);
  constexpr uint32_t kBlock = 256;
  alignas(64) uint32_t field[kBlock];
  for (uint32_t b0 = 0; b0 < W; b0 += kBlock) {
    const uint32_t nb = W - b0 < kBlock ? W - b0 : kBlock;
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
        const __m512i f = _mm512_and_si512(
            _mm512_srlv_epi32(v, _mm512_andnot_si512(_mm512_slli_epi32(r, 4), k16)), kFFFF);
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
    for (uint32_t w0 = b0; w0 < b0 + nb; w0 += 16) {
      const uint32_t n = b0 + nb - w0 < 16 ? b0 + nb - w0 : 16;
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const __m512i d = _mm512_maskz_loadu_epi32(m, codes + w0);
      const __m512i lo = _mm512_and_si512(_mm512_srli_epi32(d, 4), k31);
      const __m512i nc = _mm512_and_si512(_mm512_srli_epi32(d, 9), k31);
      const uint64_t base = pos + offset[w0], at = base >> 3;
      const __m512i off = _mm512_add_epi32(
          _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, offset + w0),
                           _mm512_set1_epi32(static_cast<int>(offset[w0]))),
          _mm512_set1_epi32(static_cast<int>(base & 7)));
      // plain: 32 - nc bits; word = plain's low lo bits | field << lo | the rest << (lo + nc)
      const __m512i pl = _mm512_and_si512(bits32_at(bytes, at, payload_bytes, off),
                                          _mm512_srlv_epi32(ones, nc));
      const __m512i f = _mm512_load_si512(field + (w0 - b0));
      const __m512i word = _mm512_ternarylogic_epi32(
          _mm512_and_si512(pl, _mm512_srlv_epi32(ones, _mm512_sub_epi32(k32, lo))),
          _mm512_sllv_epi32(f, lo),
          _mm512_sllv_epi32(_mm512_srlv_epi32(pl, lo), _mm512_add_epi32(lo, nc)), 0xFE);
      _mm512_mask_storeu_epi32(words + w0, m, word);
    }
  }
}
#endif

}  // namespace ibp
