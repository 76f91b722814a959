// validate: proves that a compressed tensor can be decoded without reading
// outside its arrays, so the decoders need no checks of their own. Used on
// every load (after the checksums) and on tensors built from arrays.
#pragma once

#include <cstdint>
#include <string>

#include "format.h"

namespace ibp {

// Magic, version and the consistency of every header field with the others.
// Checksums are the caller's (the Python layer computes CRC-32 with zlib).
Status validate_header(const FileHeader& h, std::string* msg);

// Section sizes against the header, then every row: its mode, its group and
// its length as its own bits define it, against the offsets of the index.
// `payload_words` is the length of the payload array.
Status validate_arrays(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                       uint64_t num_bases, const void* rel, uint64_t num_rel,
                       const uint32_t* payload, uint64_t payload_words, int num_threads,
                       std::string* msg);

}  // namespace ibp
