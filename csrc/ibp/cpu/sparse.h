// CPU decode of kSparse rows (format.h): the group's values, then the listed
// words over them, with each listed part read by one unaligned 8-byte load
// (field_at, inside the payload padding like dense.h's reads).
//
// Row-normalised and binary bag-of-words rows list many words of one value:
// a dictionary of one entry (index_bits 0). Such a row is the value row with
// the bitmap's words replaced by that value; the AVX-512 variant writes it
// 16 words at a time as a masked blend, the value row never copied first.
// Every variant writes the same words as decode_sparse in gather.cpp.
#pragma once

#include <cstdint>
#include <cstring>

#include "dense.h"

namespace ibp {

// The i-th listed word of row s.
inline uint32_t sparse_value(const uint8_t* bytes, const SparseRow& s, uint32_t i) {
  if (!s.dict) return field_at(bytes, s.values + 32ull * i, 32);
  const uint32_t j =
      s.index_bits ? field_at(bytes, s.indices + static_cast<uint64_t>(i) * s.index_bits, s.index_bits)
                   : 0u;
  return field_at(bytes, s.values + 32ull * j, 32);
}

// Scalar: the value row, then the listed words.
inline void sparse_row_scalar(const uint32_t* p, uint64_t pos, const uint32_t* table, uint32_t W,
                              uint32_t* words) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(p);
  const SparseRow s(p, pos, W);
  std::memcpy(words, table + kValue * W, 4ull * W);
  if (!s.count) return;
  if (s.bitmap) {
    const bool one = s.dict == 1;
    const uint32_t v = one ? field_at(bytes, s.values, 32) : 0u;
    uint32_t i = 0;
    for (uint32_t w0 = 0; w0 < W; w0 += 32) {
      const uint32_t chunk = W - w0 < 32 ? W - w0 : 32;
      uint32_t bits = field_at(bytes, s.where + w0, chunk);
      if (one) {
        for (; bits; bits &= bits - 1) words[w0 + __builtin_ctz(bits)] = v;
      } else {
        for (; bits; bits &= bits - 1) words[w0 + __builtin_ctz(bits)] = sparse_value(bytes, s, i++);
      }
    }
  } else {
    for (uint32_t i = 0; i < s.count; ++i) {
      const uint32_t w = field_at(bytes, s.where + static_cast<uint64_t>(i) * s.pos_bits, s.pos_bits);
      words[w] = sparse_value(bytes, s, i);
    }
  }
}

#if defined(IBP_X86_SIMD)
// AVX-512: a bitmap row of one value as 16-word masked blends; others scalar.
IBP_TARGET_AVX512 inline void sparse_row_avx512(const uint32_t* p, uint64_t pos,
                                                const uint32_t* table, uint32_t W,
                                                uint32_t* words) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(p);
  const SparseRow s(p, pos, W);
  if (!(s.bitmap && s.dict == 1)) {
    sparse_row_scalar(p, pos, table, W, words);
    return;
  }
  const __m512i v = _mm512_set1_epi32(static_cast<int>(field_at(bytes, s.values, 32)));
  const uint32_t* value = table + kValue * W;
  uint32_t w = 0;
  for (; w + 16 <= W; w += 16) {
    const __mmask16 k = static_cast<__mmask16>(field_at(bytes, s.where + w, 16));
    _mm512_storeu_si512(words + w, _mm512_mask_mov_epi32(_mm512_loadu_si512(value + w), k, v));
  }
  if (w < W) {
    const __mmask16 m = static_cast<__mmask16>((1u << (W - w)) - 1);
    const __mmask16 k = static_cast<__mmask16>(field_at(bytes, s.where + w, W - w));
    _mm512_mask_storeu_epi32(words + w, m,
                             _mm512_mask_mov_epi32(_mm512_maskz_loadu_epi32(m, value + w), k, v));
  }
}
#endif

}  // namespace ibp
