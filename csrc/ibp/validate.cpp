#include "validate.h"

#include <atomic>
#include <cstring>
#include <vector>

#include "bits.h"
#include "coded.h"
#include "parallel.h"
#include "sparse_code.h"

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
// dictionary. From version 4 a row with d > c has the coded form
// (sparse_code.h): its walk must stop at or before `end`.
bool sparse_row_ok(const uint32_t* p, uint64_t pos, uint64_t end, uint32_t W, uint32_t version,
                   uint64_t* row_end) {
  const uint32_t cb = count_bits(W);
  if (end < pos || end - pos < 2ull * cb + 1) return false;
  if (version >= 4 && is_sparse_code(p, pos, W)) {
    if (end - pos < sparse_code_head_bits(W, 0)) return false;
    return walk_sparse_code(p, pos, end, W, [](uint32_t, uint32_t, uint32_t) {}, row_end) &&
           *row_end <= end;
  }
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

// Population count without the popcnt instruction (the module is built for
// any x86-64): a few shifts and adds.
inline uint64_t popc64(uint64_t x) {
  x -= (x >> 1) & 0x5555555555555555ull;
  x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
  return (x * 0x0101010101010101ull) >> 56;
}

// 64 bits at bit `pos` of the payload. For pos < payload_bits the three words
// read lie inside the payload and its kPayloadPadWords padding.
inline uint64_t read64(const uint32_t* p, uint64_t pos) {
  const uint64_t i = pos >> 5;
  const uint32_t s = static_cast<uint32_t>(pos & 31);
  const uint64_t lo = p[i] | static_cast<uint64_t>(p[i + 1]) << 32;
  return s ? lo >> s | static_cast<uint64_t>(p[i + 2]) << (64 - s) : lo;
}

// Lengths of kIbp rows. A row holds kModeBits + group_bits + W bitmap bits,
// then per word nvar(g, w) bits where its bitmap bit is set, else 32. With
// saved(w) = 32 - nvar(g, w) in [0, 32] written in binary, one plane of W bits
// per binary digit k, the bits a row saves are sum_k 2^k popc(bitmap & plane_k).
class IbpLengths {
 public:
  static constexpr uint32_t kDigits = 6;

  IbpLengths(const FileHeader& h, const uint32_t* tables)
      : W_(h.row_words), chunks_((h.row_words + 63) / 64),
        full_(kModeBits + h.group_bits + 33ull * h.row_words),
        planes_(static_cast<size_t>(h.num_groups) * chunks_ * kDigits, 0) {
    const uint64_t stride = (2ull + h.code_rows) * W_;
    for (uint64_t g = 0; g < h.num_groups; ++g) {
      uint64_t* pl = planes_.data() + g * chunks_ * kDigits;
      for (uint32_t w = 0; w < W_; ++w) {
        const uint32_t saved = 32 - popc32(~tables[g * stride + w]);
        for (uint32_t k = 0; k < kDigits; ++k) {
          if ((saved >> k) & 1u) pl[(w / 64) * kDigits + k] |= 1ull << (w % 64);
        }
      }
    }
  }

  // The length of a kIbp row of group g whose bitmap starts at bit `bitmap`
  // (the bitmap's W bits must lie inside the payload).
  uint64_t operator()(const uint32_t* p, uint64_t bitmap, uint32_t g) const {
    const uint64_t* pl = planes_.data() + static_cast<size_t>(g) * chunks_ * kDigits;
    uint64_t saved = 0;
    for (uint32_t c = 0; c < chunks_; ++c, pl += kDigits) {
      const uint32_t n = W_ - 64 * c < 64 ? W_ - 64 * c : 64;
      const uint64_t bits = read64(p, bitmap + 64ull * c) & (n == 64 ? ~0ull : (1ull << n) - 1);
      for (uint32_t k = 0; k < kDigits; ++k) saved += popc64(bits & pl[k]) << k;
    }
    return full_ - saved;
  }

 private:
  uint32_t W_, chunks_;
  uint64_t full_;                 // the length with no bitmap bit set
  std::vector<uint64_t> planes_;  // [group][chunk][digit]
};

// The units of kCoded rows per group: each unit's ranked symbols s and coded
// bits nc, and the length of the plain section.
struct CodedUnits {
  uint32_t units = 0;
  std::vector<uint8_t> s, nc;   // [group][unit]
  std::vector<uint64_t> plain;  // [group]

  CodedUnits(const FileHeader& h, const uint32_t* tables) {
    const uint32_t C = h.code_rows, W = h.row_words;
    if (!C) return;
    const uint32_t upw = C / 8;
    const uint64_t stride = (2ull + C) * W;
    units = W * upw;
    s.resize(static_cast<size_t>(h.num_groups) * units);
    nc.resize(s.size());
    plain.assign(h.num_groups, 0);
    for (uint64_t g = 0; g < h.num_groups; ++g) {
      const uint32_t* codes = tables + g * stride + 2ull * W;
      for (uint32_t u = 0; u < units; ++u) {
        const CodeUnit cu = code_unit(codes, W, upw, u);
        s[g * units + u] = static_cast<uint8_t>(cu.s);
        nc[g * units + u] = static_cast<uint8_t>(cu.nc);
        plain[g] += unit_bits(upw) - cu.nc;
      }
    }
  }

  // Whether the kCoded row of group g whose bits after the group id start at
  // `pos` ends at or before `end` (its end into *row_end): the plain section, then per unit r one bits
  // and a zero (a ranked symbol, r < s) or s one bits and nc bits (an escape).
  // The codes are read through a 64-bit buffer refilled a word at a time
  // while it holds under 32 bits. Each step starts at or before `end` <=
  // payload_bits, so the word it loads is at most one past the bit at `end`,
  // inside the padding.
  bool row_ok(const uint32_t* p, uint64_t pos, uint64_t end, uint32_t g,
              uint64_t* row_end) const {
    if (end < pos || end - pos < plain[g]) return false;
    const uint8_t* su = s.data() + static_cast<size_t>(g) * units;
    const uint8_t* nu = nc.data() + static_cast<size_t>(g) * units;
    const uint64_t code = pos + plain[g], left = end - code;
    uint64_t next = (code >> 5) + 1, buf = p[code >> 5] >> (code & 31), used = 0;
    uint32_t avail = 32 - static_cast<uint32_t>(code & 31);
    for (uint32_t u = 0; u < units; ++u) {
      if (avail < 32) {
        buf |= static_cast<uint64_t>(p[next++]) << avail;
        avail += 32;
      }
      const uint32_t k = su[u];
      const uint32_t r = ctz32(~static_cast<uint32_t>(buf) | (1u << k));
      const uint32_t len = r < k ? r + 1 : k + nu[u];  // <= 31 < avail
      buf >>= len;
      avail -= len;
      used += len;
      if (used > left) return false;
    }
    *row_end = code + used;
    return true;
  }
};

// Whether the `len` bits at `pos` are all zero.
bool zero_bits(const uint32_t* p, uint64_t pos, uint64_t len) {
  for (; len; pos += 32, len -= len < 32 ? len : 32) {
    if (read_bits(p, pos, len < 32 ? static_cast<uint32_t>(len) : 32)) return false;
  }
  return true;
}

// Checks single rows of a tensor whose sections passed check_sections: its
// bases increase and end at payload_bits, its code tables are in range.
class RowChecker {
 public:
  RowChecker(const FileHeader& h, const uint32_t* tables, const uint64_t* bases, const void* rel,
             const uint32_t* payload)
      : h_(h), bases_(bases), rel_(rel), p_(payload), ibp_(h, tables), coded_(h, tables),
        raw_bits_(raw_row_bits(h.row_words, h.group_bits)),
        sectors_(h.layout == static_cast<uint8_t>(RowLayout::kSectors)) {
    while ((1u << shift_) < h.block_rows) ++shift_;
  }

  // Row r's RowMode when its mode, group and length as its own bits define
  // it agree with the index, else -1.
  int check(uint64_t r) const {
    const uint64_t start = row_start(bases_, rel_, h_.rel_bytes, shift_, r);
    const uint64_t block_end = bases_[(r >> shift_) + 1];
    const bool first = (r & (h_.block_rows - 1)) == 0;
    if (start > block_end || (first && start != bases_[r >> shift_])) return -1;
    const uint64_t end = row_end(bases_, rel_, h_.rel_bytes, shift_, h_.rows, r);
    if (end < start || end > block_end || end - start < kModeBits + h_.group_bits) return -1;
    const uint32_t mode = read_bits(p_, start, kModeBits);
    const uint32_t g = read_bits(p_, start + kModeBits, h_.group_bits);
    const uint64_t body = start + kModeBits + h_.group_bits;
    uint64_t len = 0, stop = 0;  // the row's own bits, as they define them
    bool ok = true;
    if (mode == static_cast<uint32_t>(RowMode::kRaw)) {
      len = raw_bits_;
    } else if (g >= h_.num_groups) {
      ok = false;
    } else if (mode == static_cast<uint32_t>(RowMode::kIbp)) {
      // The bitmap lies inside the row only if the row is long enough.
      ok = end - body >= h_.row_words;
      if (ok) len = ibp_(p_, body, g);
    } else if (mode == static_cast<uint32_t>(RowMode::kSparse)) {
      ok = h_.version >= 2 && sparse_row_ok(p_, body, end, h_.row_words, h_.version, &stop);
      len = stop - start;
    } else {  // kCoded
      ok = h_.code_rows && coded_.row_ok(p_, body, end, g, &stop);
      len = stop - start;
    }
    // kSectors: a zero gap of under a sector may follow the row's bits.
    ok = ok && (sectors_ ? len <= end - start && end - start - len < kSectorBits &&
                               zero_bits(p_, start + len, end - start - len)
                         : len == end - start);
    return ok ? static_cast<int>(mode) : -1;
  }

 private:
  const FileHeader& h_;
  const uint64_t* bases_;
  const void* rel_;
  const uint32_t* p_;
  IbpLengths ibp_;
  CodedUnits coded_;
  uint64_t raw_bits_;
  bool sectors_;  // rows may be followed by a zero gap (layout kSectors)
  uint32_t shift_ = 0;
};

Status bad_row(uint64_t r, std::string* msg) {
  return fail(Status::kBadRow, msg, "row " + str(r) +
                                        " is corrupt (its mode, group or length disagrees "
                                        "with the index)");
}

// Lowers `best` to r (atomically).
void lower(std::atomic<uint64_t>& best, uint64_t r) {
  uint64_t cur = best.load();
  while (r < cur && !best.compare_exchange_weak(cur, r)) {
  }
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

Status validate_sections(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                         uint64_t num_bases, uint64_t num_rel, uint64_t num_payload_words,
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
  for (uint64_t g = 0; C && g < h.num_groups; ++g) {
    if (!code_rows_ok(tables + g * (2ull + C) * W + 2ull * W, W, C)) {
      return fail(Status::kBadHeader, msg, "group " + str(g) + ": code table out of range");
    }
  }
  return Status::kOk;
}

Status validate_row_range(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                          const void* rel, const uint32_t* payload, uint64_t begin, uint64_t end,
                          int num_threads, uint64_t counts[4], std::string* msg) {
  if (end > h.rows) end = h.rows;
  if (begin >= end) return Status::kOk;
  const RowChecker rows(h, tables, bases, rel, payload);
  std::atomic<uint64_t> bad{~0ull};
  std::atomic<uint64_t> total[4] = {{0}, {0}, {0}, {0}};
  const uint64_t work = (end - begin) * raw_row_bits(h.row_words, h.group_bits) / 8;
  parallel_for(end - begin, num_threads, work, [&](uint64_t a, uint64_t b) {
    uint64_t local[4] = {0, 0, 0, 0};
    for (uint64_t r = begin + a; r < begin + b; ++r) {
      const int mode = rows.check(r);
      if (mode < 0) {
        lower(bad, r);
        return;
      }
      ++local[mode];
    }
    for (int m = 0; m < 4; ++m) total[m] += local[m];
  });
  if (bad.load() != ~0ull) return bad_row(bad.load(), msg);
  for (int m = 0; m < 4; ++m) counts[m] += total[m].load();
  return Status::kOk;
}

Status validate_mode_counts(const FileHeader& h, const uint64_t counts[4], std::string* msg) {
  static const char* const names[4] = {"raw", "ibp", "sparse", "coded"};
  for (int m : {2, 3, 0}) {  // kIbp rows: the rest, as rows adds up (validate_header)
    if (counts[m] != h.mode_rows[m]) {
      return fail(Status::kBadRow, msg, std::string("the header counts ") + str(h.mode_rows[m]) +
                                            " " + names[m] + " rows, the payload holds " +
                                            str(counts[m]));
    }
  }
  return Status::kOk;
}

Status validate_rows(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                     const void* rel, const uint32_t* payload, const void* ids, bool ids64,
                     uint64_t n, uint64_t* checked, int num_threads, std::string* msg) {
  if (n == 0) return Status::kOk;
  const RowChecker rows(h, tables, bases, rel, payload);
  std::atomic<uint64_t> bad{~0ull};
  const uint64_t work = n * raw_row_bits(h.row_words, h.group_bits) / 8;
  parallel_for(n, num_threads, work, [&](uint64_t a, uint64_t b) {
    for (uint64_t i = a; i < b; ++i) {
      const uint64_t r = ids64 ? static_cast<uint64_t>(static_cast<const int64_t*>(ids)[i])
                               : static_cast<uint64_t>(static_cast<const int32_t*>(ids)[i]);
      if (r >= h.rows) continue;  // negative ids wrap to >= rows too
      const uint64_t bit = 1ull << (r & 63);
      if (checked && (__atomic_load_n(checked + (r >> 6), __ATOMIC_RELAXED) & bit)) continue;
      if (rows.check(r) < 0) {
        lower(bad, r);
        continue;
      }
      if (checked) __atomic_fetch_or(checked + (r >> 6), bit, __ATOMIC_RELAXED);
    }
  });
  if (bad.load() != ~0ull) return bad_row(bad.load(), msg);
  return Status::kOk;
}

Status validate_arrays(const FileHeader& h, const uint32_t* tables, const uint64_t* bases,
                       uint64_t num_bases, const void* rel, uint64_t num_rel,
                       const uint32_t* payload, uint64_t num_payload_words, int num_threads,
                       std::string* msg) {
  Status s = validate_sections(h, tables, bases, num_bases, num_rel, num_payload_words, msg);
  uint64_t counts[4] = {0, 0, 0, 0};
  if (s == Status::kOk) {
    s = validate_row_range(h, tables, bases, rel, payload, 0, h.rows, num_threads, counts, msg);
  }
  return s == Status::kOk ? validate_mode_counts(h, counts, msg) : s;
}

}  // namespace ibp
