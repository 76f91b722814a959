// subset: the compressed tensor made of some of another's rows, row i of the
// result = row rows[i] of the source, each row copied as its compressed bits
// (no decode, no re-encode), so the result shares the source's mask tables
// and header geometry (block_rows, rel_bytes, group_bits) and decodes with
// the same decoders. Used for the GPU cache of hot rows and to pack the missed
// rows of a gather into one staging buffer.
//
// The caller checks every input once: rows in [0, source rows), a source that
// passed validate(), output arrays of the sizes below.
#pragma once

#include <cstdint>

#include "gather.h"

namespace ibp {

// trim (for a source of row layout kSectors): copy each kRaw, kIbp and kCoded
// row's own bits, without the zero gap after them; kSparse rows and rows of
// other sources are copied with their whole span [start(r), start(r + 1)).
// The subset keeps the source's layout field: the gaps it still holds are
// under a sector and zero. The caller checks that each block of the subset
// fits the index's relative offsets (its rows' spans may exceed raw rows by
// up to a sector each).

// Bits subset() copies for each row, into out[n].
void subset_row_bits(const CompressedView& c, const int64_t* rows, uint64_t n, bool trim,
                     uint64_t* out, int num_threads);

// Payload bits of the subset: the sum of subset_row_bits (the size bound
// beside subset(); its payload holds payload_words(bits) words).
uint64_t subset_payload_bits(const CompressedView& c, const int64_t* rows, uint64_t n,
                             int num_threads, bool trim = false);

// Writes the subset's index and payload: bases (ceil(n / block_rows) + 1
// entries), rel (n entries of geo.rel_bytes bytes), payload
// (payload_words(subset_payload_bits(...)) words, padding zeroed) and
// mode_rows[4], the number of rows of each RowMode.
void subset(const CompressedView& c, const int64_t* rows, uint64_t n, uint64_t* bases,
            void* rel, uint32_t* payload, uint64_t* mode_rows, int num_threads,
            bool trim = false);

}  // namespace ibp
