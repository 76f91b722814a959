// validate: proves that a compressed tensor can be decoded without reading
// outside its arrays, so the decoders need no checks of their own. Used on
// loads (all at once, or validate_sections first and the rows later, in a
// background pass or row by row before they are gathered) and on tensors
// built from arrays.
#pragma once

#include <cstdint>
#include <string>

#include "format.h"

namespace ibp {

// Magic, version and the consistency of every header field with the others.
// Checksums are the caller's (the Python layer computes CRC-32 with zlib).
Status validate_header(const FileHeader& h, std::string* msg);

// Section sizes against the header, then every row: its mode, its group and
// its length as its own bits define it, against the offsets of the index; then
// the per-mode row counts of the header. `payload_words` is the length of the
// payload array. The same as validate_sections, validate_row_range over all
// rows and validate_mode_counts.
Status validate_arrays(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                       uint64_t num_bases, const void* rel, uint64_t num_rel,
                       const uint32_t* payload, uint64_t payload_words, int num_threads,
                       std::string* msg);

// The checks that read no row (O(groups x row_words + blocks)): section sizes,
// version-1 tables, block bases increasing from 0 to payload_bits, code tables
// in range. A tensor that passed them may have its rows checked one by one
// below; the functions below require it.
Status validate_sections(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                         uint64_t num_bases, uint64_t num_rel, uint64_t payload_words,
                         std::string* msg);

// Rows [begin, end) (end capped at rows) as validate_arrays checks them;
// adds the number of rows of each RowMode to counts[4]. kBadRow names the
// lowest corrupt row.
Status validate_row_range(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                          const void* rel, const uint32_t* payload, uint64_t begin, uint64_t end,
                          int num_threads, uint64_t counts[4], std::string* msg);

// The header's per-mode row counts against counts[4] of all rows.
Status validate_mode_counts(const FileHeader& h, const uint64_t counts[4], std::string* msg);

// Rows ids[0, n) (int64 when ids64, else int32; ids outside [0, rows) are
// skipped: the caller reports them), each as validate_arrays checks it. With
// `checked` (a bitmap of ceil(rows / 64) words, bit r of word r / 64), rows
// already marked are skipped and rows that pass are marked (atomically: calls
// may overlap). kBadRow names the lowest corrupt row among the ids.
Status validate_rows(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                     const void* rel, const uint32_t* payload, const void* ids, bool ids64,
                     uint64_t n, uint64_t* checked, int num_threads, std::string* msg);

}  // namespace ibp
