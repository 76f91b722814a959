// Encoder: row encoding under chosen tables (CPU only; the tables come from
// select.h). Raw pointers in, no torch; inputs are checked by the caller (the
// binding) once.
#pragma once

#include <cstdint>
#include <vector>

#include "bits.h"
#include "format.h"
#include "select.h"

namespace ibp {

// Streaming row encoder. Rows are fed in chunks; every chunk but the last must
// hold a multiple of block_rows rows so each chunk starts a new index block.
class Encoder {
 public:
  // tables: num_groups x (mask[row_words], value[row_words], code_rows rows
  // of row_words). Rows are stored in the cheapest of kRaw, kIbp, (when
  // allow_sparse) kSparse and (when code_rows > 0) kCoded, under the group
  // that makes them cheapest; ties go to kRaw, kIbp, kSparse, kCoded in that
  // order, then to the lowest group (the exhaustive trial's choice). sparse_code
  // (with allow_sparse) adds the coded form of kSparse rows (version 4), tried
  // last and taken only when strictly smaller.
  Encoder(uint64_t row_bytes, uint32_t row_words, uint32_t num_groups,
          const uint32_t* tables, bool allow_sparse = true, uint32_t code_rows = 0,
          bool sparse_code = true);

  uint32_t block_rows() const { return block_rows_; }
  uint32_t rel_bytes() const { return rel_bytes_; }
  uint32_t group_bits() const { return group_bits_; }
  uint32_t num_groups() const { return num_groups_; }
  uint32_t code_rows() const { return code_rows_; }
  // Where rows are placed (format.h RowLayout; kSectors needs version >= 4).
  void set_layout(RowLayout layout) { layout_ = layout; }
  RowLayout layout() const { return layout_; }

  // Encodes n rows of x with `num_threads` threads. Appends the payload words
  // that are complete to `words` (the last partial word is kept for the next
  // call), the rows' relative offsets to `rel` (rel_bytes each) and one base
  // per started block to `bases`.
  void encode(const uint8_t* x, uint64_t n, int num_threads, std::vector<uint32_t>* words,
              std::vector<uint8_t>* rel, std::vector<uint64_t>* bases);

  // Bits each of the n rows of x would take under each group (its cheapest
  // mode), into out[n][num_groups]; for choosing groups.
  void row_bits(const uint8_t* x, uint64_t n, int num_threads, uint64_t* out) const;

  // Appends the last partial word, the padding words and the final base.
  void finish(std::vector<uint32_t>* words, std::vector<uint64_t>* bases);

  uint64_t payload_bits() const { return bits_; }
  uint64_t rows() const { return rows_; }
  const uint64_t* mode_rows() const { return mode_rows_; }

 private:
  struct SparsePlan {
    uint32_t count = 0;   // listed words
    uint32_t dict = 0;    // dictionary entries, 0 for inline values
    bool bitmap = false;  // positions as a bitmap
    uint64_t bits = 0;    // length of the row
    bool code = false;    // the coded form (sparse_code.h): rice, hi, base below
    uint32_t rice = 0, hi = 0, base = 0;
  };

  // Whether word x fits word j (= g * row_words + w) of the tables.
  bool fits(uint32_t x, size_t j) const { return ((x - value_[j]) & mask_[j]) == 0; }
  // Bits of row `x` under group g in kIbp mode; *listed receives the number
  // of words that differ from the group's values (the c of a kSparse row).
  uint64_t ibp_bits(const uint32_t* x, uint32_t g, uint32_t* listed) const;
  // That number of words alone.
  uint32_t count_listed(const uint32_t* x, uint32_t g) const;
  // Per-thread state of the kSparse trial of one row.
  struct SparseTrial {
    std::vector<uint32_t> scratch;  // listed values
    std::vector<uint64_t> seen;     // hash bitmap for the distinct-value bound
    int64_t distinct = -1;          // lower bound of the row's distinct words, -1 = not yet
  };
  // Whether a kSparse layout of a row with `c` listed words could beat
  // `limit` bits, from a lower bound of its size that needs no sort.
  bool sparse_may_win(const uint32_t* x, uint32_t c, uint64_t limit, SparseTrial* t) const;
  bool sparse_plan(const uint32_t* x, uint32_t g, uint64_t limit, SparsePlan* plan,
                   std::vector<uint32_t>* scratch) const;
  // Bits of the row's cheapest kIbp, kSparse (either form) or kCoded layout
  // under group g (`coded`: its kCoded bits), capped at `limit` (plan is set
  // when kSparse wins).
  uint64_t row_cost(const uint32_t* row, uint32_t g, uint64_t limit, uint64_t coded,
                    SparsePlan* plan, SparseTrial* trial) const;
  // The coded form of a kSparse row with c listed words under group g, when
  // it takes fewer than `limit` bits; tried only when 32 c < limit (rows
  // whose listed words cost more than that raw are left to the other modes).
  bool sparse_code_plan(const uint32_t* x, uint32_t g, uint32_t c, uint64_t limit,
                        SparsePlan* plan, std::vector<uint32_t>* scratch) const;
  template <typename Put>
  void write_sparse_code(const uint32_t* x, size_t base, const SparsePlan& plan, uint64_t p,
                         const Put& put) const;
  // Bits of row x under group g in kCoded mode (code_rows_ > 0).
  uint64_t coded_bits(const uint32_t* x, uint32_t g) const;
  // coded_bits(x, g) for every group g into bits[0 .. num_groups) (code_rows_ > 0).
  void coded_bits_all(const uint32_t* x, uint64_t* bits) const;
  void build_cost_tables();
  template <uint32_t GP>
  void coded_sums(const uint32_t* x, uint64_t* sums) const;
  template <typename Put>
  void write_coded(const uint32_t* x, uint32_t g, uint64_t p, const Put& put,
                   std::vector<uint32_t>* scratch) const;
  template <typename Put>
  void write_sparse(const uint32_t* x, size_t base, const SparsePlan& plan, uint64_t p,
                    const Put& put, std::vector<uint32_t>* dict) const;

  uint64_t row_bytes_;
  uint32_t row_words_;
  uint32_t num_groups_;
  uint32_t group_bits_;
  bool allow_sparse_;
  bool sparse_code_ = true;
  uint32_t code_rows_ = 0, upw_ = 1;
  std::vector<uint32_t> codes_;   // [g][code_rows][row_words], as stored
  std::vector<uint64_t> plain_;   // [g]: plain bits of a kCoded row
  // [g][unit]: a unit's code unpacked for the encoder's search (the ranked
  // symbols side by side, so a row's rank lookups compare all slots at once).
  struct UnitCode {
    uint16_t slot[kCodeSlots];  // slot[r]: the symbol of rank r (r < s)
    uint32_t s, lo, nc;
  };
  std::vector<UnitCode> units_;
  std::vector<uint16_t> desc_;  // [g][unit]: slot 0 (s, lo, nc) of units_
  // The coded trial of all groups at once. A unit whose groups all code the
  // same field [lo, lo + nc) with 1 <= nc <= kCostFieldBits has a cost table
  // (when there are at most 16 groups and all tables fit 64 MiB):
  // cost_[at + f * gp_ + g] = code bits of field value f under group g
  // (gp_ = num_groups rounded up to a power of two; padding groups cost 0).
  // The other units ("slow") look their rank up per group.
  static constexpr uint32_t kCostFieldBits = 8;
  struct UnitField {
    uint32_t word, shift, mask, at;  // field = (x[word] >> shift) & mask
  };
  uint32_t gp_ = 1;
  std::vector<UnitField> fields_;  // the units with a cost table, in unit order
  std::vector<uint8_t> cost_;
  std::vector<uint32_t> slow_;     // the other units
  static constexpr uint32_t kSlowUnit = ~0u;
  std::vector<uint32_t> cost_at_;  // [unit]: its table's `at`, or kSlowUnit
  // Rank of field f in unit code c: r < c.s, or c.s when f is escaped.
  static uint32_t rank_of(const UnitCode& c, uint32_t f) {
    uint32_t m = 0;
    for (uint32_t r = 0; r < kCodeSlots; ++r) m |= static_cast<uint32_t>(c.slot[r] == f) << r;
    m &= (1u << c.s) - 1u;
    return m ? static_cast<uint32_t>(__builtin_ctz(m)) : c.s;
  }
  uint32_t block_rows_ = 1;
  uint32_t rel_bytes_ = 4;
  std::vector<uint32_t> mask_, value_, nvar_, dep_;  // [g * row_words + w], dep x5
  // [g]: the fewest bits a kIbp row of group g takes (every word fits).
  std::vector<uint64_t> ibp_floor_;
  uint64_t bits_ = 0;      // bits written so far
  uint64_t rows_ = 0;      // rows encoded so far
  uint64_t block_base_ = 0;
  uint32_t tail_ = 0;      // bits of the last partial word (bits_ % 32 valid)
  uint64_t mode_rows_[4] = {0, 0, 0, 0};
  RowLayout layout_ = RowLayout::kPacked;
};

// Turns the group tables (mask, value per word, code rows) into the decoder's
// table layout described in bits.h and coded.h: out has
// num_groups * (kDecodeRows + decode_code_rows(code_rows)) * row_words words.
void build_decode_table(uint32_t num_groups, uint32_t row_words, const uint32_t* tables,
                        uint32_t* out, uint32_t code_rows = 0);

}  // namespace ibp
