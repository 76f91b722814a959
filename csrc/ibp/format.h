// The ibp_gnn compressed-tensor format, version 4: the contract shared by the
// encoder, both gather-decoders, the validator and the Python layer.
//
// A compressed tensor holds a 2-D row-major matrix of `rows x cols` elements of
// one dtype. Each row is viewed as `row_words` little-endian 32-bit words: the
// row's bytes, zero-padded up to a multiple of 4 (uint8 packs 4 elements in a
// word, fp16/bf16/int16 two, int64 spans two words: low word first).
//
// Sections (in memory: separate arrays; on disk: in this order, each starting
// at a multiple of kSectionAlign after the FileHeader):
//   tables   uint32[num_groups][2 + code_rows][row_words]  per group: mask[],
//            value[], then (version >= 3, code_rows > 0) the code rows below
//            Word w of a group has a *value* v = value[w] and *variable bits*
//            m = ~mask[w]. A word x fits the word iff x - v (mod 2^32) has no
//            bit outside m; it is then stored as its field extract(x - v, m)
//            of popcount(m) bits and rebuilt as v + deposit(field, m).
//            With v inside mask (as in version 1, where value & ~mask == 0)
//            this is plain Invariant Bit Packing: x matches the invariant bits
//            of the mask. With m = the k low bits it is frame-of-reference
//            coding: x in [v, v + 2^k).
//            Code rows (kCoded rows, version >= 3): a row is viewed as `units`
//            units of U bits (U = 16 for 2-byte dtypes, 2 units a word, low
//            half first; else U = 32, one unit a word); code_rows is 0 or
//            8 * units_per_word. Unit u = w * units_per_word + h of a group has
//            kCodeSlots 16-bit slots, slot k in the low (k even) or high (k
//            odd) half of row 2 + 8h + k/2 at column w. Slot 0 describes the
//            unit: bits 0-3 s (ranked symbols, <= kMaxCodeSymbols), bits 4-8
//            lo, bits 9-13 nc (lo + nc <= U, nc <= kMaxCodeBits), bits 14-15 0:
//            the unit's *coded field* is bits [lo, lo + nc) (for floats the
//            exponent), its other U - nc bits are its *plain bits*. Slots 1..s
//            are the ranked symbols (values of the coded field), most frequent
//            first; slots past s are zero.
//   bases    uint64[num_blocks + 1]   bit offset of the first row of each block
//            of `block_rows` rows; bases[num_blocks] = payload_bits.
//   rel      uint16 or uint32[rows]   (rel_bytes) bit offset of each row from
//            its block's base; the first row of a block has rel 0.
//   payload  uint32[payload_words(payload_bits)]  rows packed back to back as a
//            bit stream, LSB first within each word, plus kPayloadPadWords
//            zero words so a 64-bit window read never leaves the buffer.
//
// Row r occupies bits [start(r), end(r)) with start(r) = bases[r / B] + rel[r]
// and end(r) = start(r + 1) (or bases[r / B + 1] for the last row of a block).
// With layout kSectors (version >= 4) a row's bits may end before end(r): the
// gap after them is under kSectorBits bits and all zero, so the encoder can
// start a row at the next 32-byte sector boundary where that makes the row
// touch fewer sectors (see RowLayout). Readers only use start(r).
// A row's bits, in order:
//   mode      kModeBits bits   RowMode below
//   group     group_bits bits  index into tables (group_bits = 0 when one group)
//   then, for kRaw:  row_words fields of 32 bits: the words themselves.
//         for kIbp:  row_words participation bits p[w], then for each word w a
//                    field of nvar(g, w) = popcount(~mask[g][w]) bits when
//                    p[w] = 1 (the word is rebuilt from it as above), or of 32
//                    bits, the word itself, when p[w] = 0.
//         for kSparse (version >= 2): every word equals value[g][w] except c
//                    listed words, in increasing order:
//                      c      count_bits(row_words) bits
//                      d      count_bits(row_words) bits: dictionary size
//                      form   1 bit: 0 = positions listed, 1 = bitmap
//                      dict   d words of 32 bits (when d > 0)
//                      vals   when d = 0: c words of 32 bits, in order;
//                             when d > 0: c dictionary indices of
//                             count_bits(d - 1) bits each (0 bits when d = 1)
//                      where  form 0: c positions of count_bits(row_words - 1)
//                             bits, strictly increasing; form 1: row_words
//                             bits, bit w set iff word w is listed (c set bits).
//                    Coded form (version >= 4; sparse_code.h): d = c + 1
//                    marks it (the forms above have d <= c), form = 0, then
//                      k      kSparseRiceBits bits: Rice parameter of the gaps
//                      h      kSparseHiBits bits: coded high bits of a word
//                      base   h bits
//                      then per listed word, by increasing position w:
//                        gap  w - w' - 1 (w' the previous listed position,
//                             -1 for the first): q = gap >> k one bits, a zero
//                             bit, then the k low bits of gap
//                        hi   when h > 0, the word's top h bits t coded by
//                             z = zigzag(t - base) (2e for e >= 0, -2e - 1 for
//                             e < 0): z one bits then a zero bit when
//                             z < kSparseEscape, else kSparseEscape one bits
//                             then t in h bits (an escape)
//                        lo   the word's low 32 - h bits
//         for kCoded (version >= 3, code_rows > 0): no participation bitmap;
//                    two sections, each over the units u = 0, 1, ... in order:
//                      plain  per unit, its U - nc plain bits as one field:
//                             the bits below lo, then those above lo + nc
//                      codes  per unit, its coded field: r one bits then a
//                             zero bit when it equals ranked symbol r (r < s,
//                             the first match), else s one bits then the
//                             field itself in nc bits (an escape)
//                    The plain section's length is fixed by the group.
// deposit(f, m) places the low popcount(m) bits of f, in order, at the set bit
// positions of m (x86 PDEP); extract is its inverse (PEXT). The length of
// every row is fully determined by its bits, which validate() checks against
// the index.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ibp {

constexpr uint32_t kFormatVersion = 4;
constexpr uint32_t kOldestVersion = 1;  // oldest version this code reads
constexpr char kMagic[8] = {'I', 'B', 'P', 'G', 'N', 'N', '\r', '\n'};
constexpr uint32_t kSectionAlign = 64;
constexpr uint32_t kPayloadPadWords = 2;
constexpr uint32_t kModeBits = 2;
constexpr uint32_t kMaxGroups = 1u << 16;
constexpr uint32_t kCodeSlots = 16;       // 16-bit slots per unit of the code rows
constexpr uint32_t kMaxCodeSymbols = kCodeSlots - 1;
constexpr uint32_t kMaxCodeBits = 16;     // widest coded field
constexpr uint32_t kSparseRiceBits = 5;   // coded-form kSparse row: Rice parameter field
constexpr uint32_t kSparseHiBits = 5;     // its coded high bits field
constexpr uint32_t kSparseEscape = 8;     // its longest unary hi code
constexpr uint32_t kSectorBits = 256;     // a 32-byte sector of the payload

enum class DType : uint32_t {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
  kInt8 = 3,
  kUInt8 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kNumDTypes = 8,
};

// Bytes per element of a dtype, 0 for an unknown one.
inline uint32_t dtype_bytes(uint32_t d) {
  constexpr uint32_t sizes[] = {4, 2, 2, 1, 1, 2, 4, 8};
  return d < static_cast<uint32_t>(DType::kNumDTypes) ? sizes[d] : 0;
}

enum class RowMode : uint32_t {
  kRaw = 0,     // words stored whole
  kIbp = 1,     // participation bitmap + fields
  kSparse = 2,  // listed words differ from the group's values (version >= 2)
  kCoded = 3,   // plain bits + prefix-coded fields, no bitmap (version >= 3)
};

// How the encoder chose the masks. Stored for information only: decoding never
// depends on it.
enum class Selector : uint32_t {
  kAuto = 0,   // per word the cheaper of an invariance mask and a frame of
               // reference; sparse rows where they pay
  kPaper = 1,  // the published algorithm: one majority threshold for all words,
               // swept over 0.70..1.00; raw and kIbp rows only
};

// Where rows sit in the payload (version >= 4; earlier files are kPacked).
enum class RowLayout : uint8_t {
  kPacked = 0,   // back to back: every row ends where the next starts
  kSectors = 1,  // a row that would touch more sectors than
                 // ceil(bits / kSectorBits) starts at the next sector boundary
                 // instead, zero bits filling the gap, unless it is not its
                 // block's first row and its rel there plus raw_row_bits for
                 // each row of the block from it on would pass rel's range
};

struct FileHeader {
  char magic[8];            // kMagic
  uint32_t version;         // kFormatVersion of the writer
  uint32_t header_bytes;    // sizeof(FileHeader)
  uint32_t dtype;           // DType
  uint32_t word_view;       // 0: 32-bit little-endian words (the only view of v1)
  uint64_t rows;
  uint64_t cols;
  uint32_t row_words;       // ceil(cols * dtype_bytes / 4)
  uint32_t num_groups;      // >= 1
  uint32_t group_bits;      // bits of the per-row group id: ceil(log2(num_groups))
  uint32_t block_rows;      // rows per index block, a power of two
  uint32_t rel_bytes;       // 2 or 4
  uint32_t selector;        // Selector (informational)
  uint64_t payload_bits;    // total bits of all rows
  uint64_t mode_rows[4];    // number of rows stored in each RowMode
  uint32_t crc_tables;      // CRC-32 (zlib) of each section's bytes as stored
  uint32_t crc_index;       // bases then rel
  uint32_t crc_payload;
  uint32_t crc_header;      // of this header with crc_header set to 0
  uint32_t code_rows;       // rows of code tables per group (version >= 3; else 0)
  uint8_t layout;           // RowLayout (version >= 4; else 0)
  uint8_t reserved[3];      // zero
};
static_assert(sizeof(FileHeader) == 128, "FileHeader must stay 128 bytes");

// Words of a row of `cols` elements of `elem_bytes` bytes.
inline uint64_t row_words_for(uint64_t cols, uint32_t elem_bytes) {
  return (cols * elem_bytes + 3) / 4;
}

// Words the payload array holds for `payload_bits` bits, padding included.
inline uint64_t payload_words(uint64_t payload_bits) {
  return (payload_bits + 31) / 32 + kPayloadPadWords;
}

// Bits of a row stored raw; also the upper bound of any row's length.
inline uint64_t raw_row_bits(uint32_t row_words, uint32_t group_bits) {
  return kModeBits + group_bits + 32ull * row_words;
}

// Upper bound of payload_bits for `rows` rows: the size bound beside compress()
// (kSectors: each row may follow a gap of under a sector).
inline uint64_t max_payload_bits(uint64_t rows, uint32_t row_words, uint32_t group_bits,
                                 RowLayout layout = RowLayout::kPacked) {
  return rows * (raw_row_bits(row_words, group_bits) +
                 (layout == RowLayout::kSectors ? kSectorBits - 1 : 0));
}

// Index geometry, fixed by the shape alone so a streaming encoder knows it
// before it sees any data: the longest possible block (all rows raw) must fit
// the relative offsets. 16-bit offsets when that allows blocks of at least 16
// rows, else 32-bit ones; blocks hold at most 64 rows. Returns false when a
// single raw row is too long for 32-bit offsets.
inline bool index_geometry(uint32_t row_words, uint32_t group_bits,
                           uint32_t* block_rows, uint32_t* rel_bytes) {
  const uint64_t raw = raw_row_bits(row_words, group_bits);
  const uint64_t limit = raw * 16 <= 0xFFFFull ? 0xFFFFull : 0xFFFFFFFFull;
  if (raw > limit) return false;
  uint32_t b = 64;
  while (b > 1 && raw * b > limit) b >>= 1;
  *block_rows = b;
  *rel_bytes = limit == 0xFFFFull ? 2 : 4;
  return true;
}

// Units per word of kCoded rows: 2 for 2-byte dtypes, else 1.
inline uint32_t units_per_word(uint32_t dtype) { return dtype_bytes(dtype) == 2 ? 2 : 1; }

// Code rows per group a version-3 writer stores when it codes the dtype.
inline uint32_t code_rows_for(uint32_t dtype) { return 8 * units_per_word(dtype); }

inline uint32_t group_bits_for(uint32_t num_groups) {
  uint32_t b = 0;
  while ((1ull << b) < num_groups) ++b;
  return b;
}

inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Byte offsets of each section in a file, derived from the header alone.
struct FileLayout {
  uint64_t tables, tables_bytes;
  uint64_t bases, bases_bytes;
  uint64_t rel, rel_bytes;
  uint64_t payload, payload_bytes;
  uint64_t total;
};

inline FileLayout file_layout(const FileHeader& h) {
  FileLayout l;
  const uint64_t blocks = h.block_rows ? (h.rows + h.block_rows - 1) / h.block_rows : 0;
  l.tables = align_up(sizeof(FileHeader), kSectionAlign);
  l.tables_bytes = 4ull * h.num_groups * (2ull + h.code_rows) * h.row_words;
  l.bases = align_up(l.tables + l.tables_bytes, kSectionAlign);
  l.bases_bytes = 8ull * (blocks + 1);
  l.rel = align_up(l.bases + l.bases_bytes, kSectionAlign);
  l.rel_bytes = static_cast<uint64_t>(h.rel_bytes) * h.rows;
  l.payload = align_up(l.rel + l.rel_bytes, kSectionAlign);
  l.payload_bytes = 4ull * payload_words(h.payload_bits);
  l.total = l.payload + l.payload_bytes;
  return l;
}

// Error codes of the core, turned into Python exceptions by the binding.
enum class Status : int {
  kOk = 0,
  kBadMagic,
  kNewerVersion,
  kBadHeader,      // an inconsistent or out-of-range header field
  kBadIndex,       // offsets not monotone or past the payload
  kBadRow,         // a row's mode, group or length disagrees with the index
};

}  // namespace ibp
