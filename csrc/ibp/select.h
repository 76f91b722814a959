// Table selection (CPU only): a group's masks and values, and its code rows,
// chosen from sample rows. Raw pointers in, no torch; inputs are checked by
// the caller (the binding) once.
#pragma once

#include <cstdint>

#include "format.h"

namespace ibp {

// Chooses one group's mask and value per word from the rows `sample[0..n)` of
// the row-major matrix `x` (row_bytes bytes a row, viewed as row_words words).
// For each word the bits are ranked by how invariant they are (share of the
// majority value); every candidate mask is a prefix of that ranking.
//   kAuto:  each word takes the prefix that minimises its own estimated size
//           (sum over rows of nvar when the row matches, 32 when it doesn't),
//           or a frame of reference (mask = ~(2^k - 1), value = the base of
//           the window of 2^k values holding most rows) when that is smaller.
//   kPaper: one majority threshold t for all words (bits with share >= t are
//           invariant), t swept over 0.70, 0.71, ..., 1.00 to minimise the
//           estimated total, as the published algorithm does.
// mask and value receive row_words words each.
// frames = false skips the frame-of-reference search (a cheaper kAuto for
// the rounds of clustering).
void select_masks(const uint8_t* x, uint64_t row_bytes, uint32_t row_words,
                  const uint64_t* sample, uint64_t n, Selector selector,
                  uint32_t* mask, uint32_t* value, bool frames = true);

// Chooses one group's code rows (format.h, kCoded) from the sample rows: for
// float dtypes the coded field of each unit is its exponent, its symbols are
// ranked by frequency and the number of ranked symbols minimises the sample's
// code bits (the zero padding unit of an odd row of a 2-byte dtype is coded
// whole, as its only symbol 0). Writes code_rows_for(dtype) rows of row_words words into
// `codes`; returns false (and writes nothing) for dtypes it does not code.
// prior (np rows, may be null): a wider sample (the rows of every group)
// whose histogram is added to the group's at equal total weight. A group
// fitted to a few hundred rows then still ranks the symbols of the tails it
// did not see (rare exponents: escapes otherwise, which cost the decoders a
// serial step each) and orders them by the wider sample's counts.
bool select_codes(const uint8_t* x, uint64_t row_bytes, uint32_t row_words, uint32_t dtype,
                  const uint64_t* sample, uint64_t n, uint32_t* codes,
                  const uint64_t* prior = nullptr, uint64_t np = 0);

}  // namespace ibp
