// CPU decode of kCoded rows (coded.h): the same words as decode_coded_words,
// with the plain section read at its per-word offsets (the code part's offset
// row: one independent unaligned load per unit, no serial reader) and the
// code section through a 64-bit window reloaded only when fewer bits than
// the longest code remain in it. Reads stay inside the payload padding like
// dense.h's field_at.
#pragma once

#include <cstdint>

#include "../coded.h"
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

}  // namespace ibp
