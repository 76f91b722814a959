// Host-side row helpers shared by the encoder (encode.cpp) and the table
// selection (select.cpp).
#pragma once

#include <cstdint>
#include <cstring>

namespace ibp {

// Copies one row into `dst` as row_words words, zero-padding the last word.
inline void load_row(const uint8_t* src, uint64_t row_bytes, uint32_t row_words, uint32_t* dst) {
  if (row_words == 0) return;
  dst[row_words - 1] = 0;
  std::memcpy(dst, src, row_bytes);
}

}  // namespace ibp
