#include "validate.h"

#include <atomic>
#include <cstring>
#include <vector>

#include "bits.h"
#include "coded.h"
#include "parallel.h"

namespace ibp {
namespace {

Status fail(Status s, std::string* msg, const std::string& what) {
  *msg = what;
  return s;
}

std::string str(uint64_t v) { return std::to_string(v); }

// A kSparse row whose bits after the group id start at `pos` and end at or
// before `end` (its end into *row_end): counts in range, length as its fields
// say, positions increasing and inside the row, dictionary indices inside the
// dictionary.
bool sparse_row_ok(const uint32_t* p, uint64_t pos, uint64_t end, uint32_t W,
                   uint64_t* row_end) {
  const uint32_t cb = count_bits(W);
  if (end < pos || end - pos < 2ull * cb + 1) return false;
  const SparseRow s(p, pos, W);
  if (s.count > W || s.dict > s.count || s.end > end) return false;
  *row_end = s.end;
  for (uint32_t i = 0; s.dict && i < s.count; ++i) {
    if (read_bits(p, s.indices + static_cast<uint64_t>(i) * s.index_bits, s.index_bits) >= s.dict) {
      return false;
    }
  }
  if (s.bitmap) {
    uint64_t set = 0;
    for (uint32_t w0 = 0; w0 < W; w0 += 32) {
      set += popc32(read_bits(p, s.where + w0, W - w0 < 32 ? W - w0 : 32));
    }
    return set == s.count;
  }
  uint64_t prev = 0;
  for (uint32_t i = 0; i < s.count; ++i) {
    const uint64_t w = read_bits(p, s.where + static_cast<uint64_t>(i) * s.pos_bits, s.pos_bits);
    if (w >= W || (i > 0 && w <= prev)) return false;
    prev = w;
  }
  return true;
}

// The code rows of one group: every unit's fields in range, its symbols
// inside its coded field, unused slots zero.
bool code_rows_ok(const uint32_t* codes, uint32_t W, uint32_t code_rows) {
  const uint32_t upw = code_rows / 8, U = unit_bits(upw);
  for (uint32_t u = 0; u < W * upw; ++u) {
    const CodeUnit cu = code_unit(codes, W, upw, u);
    if ((code_slot(codes, W, upw, u, 0) >> 14) || cu.nc > kMaxCodeBits || cu.lo + cu.nc > U) {
      return false;
    }
    for (uint32_t k = 1; k < kCodeSlots; ++k) {
      const uint32_t v = code_slot(codes, W, upw, u, k);
      if (k <= cu.s ? v > low_mask(cu.nc) : v != 0) return false;
    }
  }
  return true;
}

// A kCoded row whose bits after the group id start at `pos` ends at or before
// `end` (its end into *row_end). Each step starts at or before `end`, so its
// reads (at most kMaxCodeSymbols bits on, plus read_bits' window) stay inside
// the padding.
bool coded_row_ok(const uint32_t* p, uint64_t pos, uint64_t end, const uint32_t* codes,
                  uint32_t W, uint32_t code_rows, uint64_t plain_bits, uint64_t* row_end) {
  const uint32_t upw = code_rows / 8;
  if (end < pos || end - pos < plain_bits) return false;
  uint64_t code = pos + plain_bits;
  for (uint32_t u = 0; u < W * upw; ++u) {
    const CodeUnit cu = code_unit(codes, W, upw, u);
    read_code(p, &code, codes, W, upw, u, cu);
    if (code > end) return false;
  }
  *row_end = code;
  return true;
}

// Whether the `len` bits at `pos` are all zero.
bool zero_bits(const uint32_t* p, uint64_t pos, uint64_t len) {
  for (; len; pos += 32, len -= len < 32 ? len : 32) {
    if (read_bits(p, pos, len < 32 ? static_cast<uint32_t>(len) : 32)) return false;
  }
  return true;
}

}  // namespace

Status validate_header(const FileHeader& h, std::string* msg) {
  if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) {
    return fail(Status::kBadMagic, msg, "not an ibp_gnn file (bad magic bytes)");
  }
  if (h.version > kFormatVersion) {
    return fail(Status::kNewerVersion, msg,
                "file format version " + str(h.version) + " is newer than the newest this "
                "ibp_gnn reads (" + str(kFormatVersion) + "); upgrade ibp_gnn to read it");
  }
  if (h.version < kOldestVersion) {
    return fail(Status::kBadHeader, msg, "format version " + str(h.version) + " is invalid");
  }
  if (h.header_bytes != sizeof(FileHeader)) {
    return fail(Status::kBadHeader, msg, "header_bytes is " + str(h.header_bytes) +
                                             ", expected " + str(sizeof(FileHeader)));
  }
  const uint32_t esize = dtype_bytes(h.dtype);
  if (esize == 0) return fail(Status::kBadHeader, msg, "unknown dtype code " + str(h.dtype));
  if (h.word_view != 0) {
    return fail(Status::kBadHeader, msg, "unknown word_view " + str(h.word_view));
  }
  if (h.rows >= (1ull << 48) || h.cols >= (1ull << 40)) {
    return fail(Status::kBadHeader, msg, "shape (" + str(h.rows) + ", " + str(h.cols) +
                                             ") is out of range");
  }
  if (h.row_words != row_words_for(h.cols, esize)) {
    return fail(Status::kBadHeader, msg, "row_words is " + str(h.row_words) + ", expected " +
                                             str(row_words_for(h.cols, esize)));
  }
  if (h.num_groups == 0 || h.num_groups > kMaxGroups) {
    return fail(Status::kBadHeader, msg, "num_groups " + str(h.num_groups) + " is out of range");
  }
  if (h.group_bits != group_bits_for(h.num_groups)) {
    return fail(Status::kBadHeader, msg, "group_bits " + str(h.group_bits) +
                                             " does not match num_groups " + str(h.num_groups));
  }
  uint32_t block_rows = 0, rel_bytes = 0;
  if (!index_geometry(h.row_words, h.group_bits, &block_rows, &rel_bytes) ||
      block_rows != h.block_rows || rel_bytes != h.rel_bytes) {
    return fail(Status::kBadHeader, msg, "index geometry (block_rows " + str(h.block_rows) +
                                             ", rel_bytes " + str(h.rel_bytes) +
                                             ") does not match the shape");
  }
  if (h.selector > static_cast<uint32_t>(Selector::kPaper)) {
    return fail(Status::kBadHeader, msg, "unknown selector " + str(h.selector));
  }
  if (h.layout > static_cast<uint8_t>(RowLayout::kSectors) || (h.layout && h.version < 4)) {
    return fail(Status::kBadHeader, msg, "row layout " + str(h.layout) +
                                             " is invalid for this version");
  }
  for (uint8_t b : h.reserved) {
    if (b) return fail(Status::kBadHeader, msg, "reserved header bytes are not zero");
  }
  if (h.code_rows && (h.version < 3 || h.code_rows != code_rows_for(h.dtype))) {
    return fail(Status::kBadHeader, msg, "code_rows " + str(h.code_rows) +
                                             " is invalid for this version and dtype");
  }
  const bool sparse_ok = h.version >= 2;
  if ((h.mode_rows[2] && !sparse_ok) || (h.mode_rows[3] && !h.code_rows) ||
      h.mode_rows[0] + h.mode_rows[1] + h.mode_rows[2] + h.mode_rows[3] != h.rows) {
    return fail(Status::kBadHeader, msg, "per-mode row counts do not add up to rows");
  }
  if (h.payload_bits > max_payload_bits(h.rows, h.row_words, h.group_bits,
                                        static_cast<RowLayout>(h.layout))) {
    return fail(Status::kBadHeader, msg, "payload_bits " + str(h.payload_bits) +
                                             " exceeds the bound for the shape");
  }
  return Status::kOk;
}

Status validate_arrays(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                       uint64_t num_bases, const void* rel, uint64_t num_rel,
                       const uint32_t* payload, uint64_t num_payload_words, int num_threads,
                       std::string* msg) {
  const uint64_t blocks = (h.rows + h.block_rows - 1) / h.block_rows;
  if (num_bases != blocks + 1) {
    return fail(Status::kBadIndex, msg, "index has " + str(num_bases) + " block bases, expected " +
                                            str(blocks + 1));
  }
  if (num_rel != h.rows) {
    return fail(Status::kBadIndex, msg, "index has " + str(num_rel) + " row offsets, expected " +
                                            str(h.rows));
  }
  if (num_payload_words != payload_words(h.payload_bits)) {
    return fail(Status::kBadIndex, msg, "payload has " + str(num_payload_words) +
                                            " words, expected " +
                                            str(payload_words(h.payload_bits)));
  }
  const uint32_t W = h.row_words;
  // Version 1 decoded value | deposit(...): its values lie inside the mask.
  for (uint64_t i = 0; h.version == 1 && i < 2ull * h.num_groups * W; i += 2 * W) {  // C == 0
    for (uint32_t w = 0; w < W; ++w) {
      if (tables[i + W + w] & ~tables[i + w]) {
        return fail(Status::kBadHeader, msg, "group " + str(i / (2 * W)) + " word " + str(w) +
                                                 ": value has bits outside the mask");
      }
    }
  }
  if (bases[0] != 0 || bases[blocks] != h.payload_bits) {
    return fail(Status::kBadIndex, msg, "index does not span the payload");
  }
  for (uint64_t b = 0; b < blocks; ++b) {
    if (bases[b + 1] < bases[b]) {
      return fail(Status::kBadIndex, msg, "block bases decrease at block " + str(b));
    }
  }
  const uint32_t C = h.code_rows;
  const uint64_t stride = (2ull + C) * W;
  std::vector<uint32_t> nvar(static_cast<size_t>(h.num_groups) * W);
  for (uint64_t g = 0; g < h.num_groups; ++g) {
    for (uint32_t w = 0; w < W; ++w) nvar[g * W + w] = popc32(~tables[g * stride + w]);
  }
  // Code rows, and each group's plain bits of a kCoded row.
  std::vector<uint64_t> plain(h.num_groups, 0);
  for (uint64_t g = 0; C && g < h.num_groups; ++g) {
    const uint32_t* codes = tables + g * stride + 2ull * W;
    if (!code_rows_ok(codes, W, C)) {
      return fail(Status::kBadHeader, msg, "group " + str(g) + ": code table out of range");
    }
    const uint32_t upw = C / 8;
    for (uint32_t u = 0; u < W * upw; ++u) plain[g] += unit_bits(upw) - code_unit(codes, W, upw, u).nc;
  }
  uint32_t shift = 0;
  while ((1u << shift) < h.block_rows) ++shift;

  // Rows, in parallel; the first bad row found is reported.
  std::atomic<uint64_t> bad_row{~0ull};
  std::atomic<uint64_t> raw_rows{0}, sparse_rows{0}, coded_rows{0};
  const uint64_t raw_bits = raw_row_bits(W, h.group_bits);
  const bool sectors = h.layout == static_cast<uint8_t>(RowLayout::kSectors);
  parallel_for(h.rows, num_threads, h.rows * raw_bits / 8, [&](uint64_t a, uint64_t b) {
    uint64_t raws = 0, sparses = 0, codeds = 0;
    for (uint64_t r = a; r < b; ++r) {
      const uint64_t start = row_start(bases, rel, h.rel_bytes, shift, r);
      const uint64_t block_end = bases[(r >> shift) + 1];
      const bool first = (r & (h.block_rows - 1)) == 0;
      bool ok = start <= block_end && (!first || start == bases[r >> shift]);
      uint64_t end = 0;
      if (ok) {
        end = row_end(bases, rel, h.rel_bytes, shift, h.rows, r);
        ok = end >= start && end <= block_end && end - start >= kModeBits + h.group_bits;
      }
      if (ok) {
        const uint32_t mode = read_bits(payload, start, kModeBits);
        const uint32_t g = read_bits(payload, start + kModeBits, h.group_bits);
        uint64_t len = 0;
        if (mode == static_cast<uint32_t>(RowMode::kRaw)) {
          len = raw_bits;
          ++raws;
        } else if (mode == static_cast<uint32_t>(RowMode::kIbp) && g < h.num_groups) {
          const uint64_t bm = start + kModeBits + h.group_bits;
          len = kModeBits + h.group_bits + W;
          // The bitmap lies inside the row only if the row is long enough.
          if (end - start < len) {
            ok = false;
          } else {
            for (uint32_t w0 = 0; w0 < W; w0 += 32) {
              const uint32_t chunk = W - w0 < 32 ? W - w0 : 32;
              const uint32_t bits = read_bits(payload, bm + w0, chunk);
              for (uint32_t j = 0; j < chunk; ++j) {
                len += (bits >> j) & 1u ? nvar[g * W + w0 + j] : 32;
              }
            }
          }
        } else if (mode == static_cast<uint32_t>(RowMode::kSparse) && h.version >= 2 &&
                   g < h.num_groups) {
          ++sparses;
          ok = sparse_row_ok(payload, start + kModeBits + h.group_bits, end, W, &len);
          len -= start;
        } else if (mode == static_cast<uint32_t>(RowMode::kCoded) && C && g < h.num_groups) {
          ++codeds;
          ok = coded_row_ok(payload, start + kModeBits + h.group_bits, end,
                            tables + g * stride + 2ull * W, W, C, plain[g], &len);
          len -= start;
        } else {
          ok = false;
        }
        // kSectors: a zero gap of under a sector may follow the row's bits.
        ok = ok && (sectors ? len <= end - start && end - start - len < kSectorBits &&
                                  zero_bits(payload, start + len, end - start - len)
                            : len == end - start);
      }
      if (!ok) {
        uint64_t cur = bad_row.load();
        while (r < cur && !bad_row.compare_exchange_weak(cur, r)) {
        }
        return;
      }
    }
    raw_rows += raws;
    sparse_rows += sparses;
    coded_rows += codeds;
  });
  if (bad_row.load() != ~0ull) {
    return fail(Status::kBadRow, msg, "row " + str(bad_row.load()) +
                                          " is corrupt (its mode, group or length disagrees "
                                          "with the index)");
  }
  if (sparse_rows.load() != h.mode_rows[2]) {
    return fail(Status::kBadRow, msg, "the header counts " + str(h.mode_rows[2]) +
                                          " sparse rows, the payload holds " +
                                          str(sparse_rows.load()));
  }
  if (coded_rows.load() != h.mode_rows[3]) {
    return fail(Status::kBadRow, msg, "the header counts " + str(h.mode_rows[3]) +
                                          " coded rows, the payload holds " +
                                          str(coded_rows.load()));
  }
  if (raw_rows.load() != h.mode_rows[0]) {
    return fail(Status::kBadRow, msg, "the header counts " + str(h.mode_rows[0]) +
                                          " raw rows, the payload holds " + str(raw_rows.load()));
  }
  return Status::kOk;
}

}  // namespace ibp
