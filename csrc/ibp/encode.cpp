#include "encode.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "coded.h"
#include "gather.h"
#include "host_rows.h"
#include "parallel.h"
#include "sparse_code.h"

namespace ibp {
namespace {

// ORs the k low bits of v into the stream at bit `pos`. The words lo and
// hi - 1 at the ends of a thread's span may be shared with its neighbours and
// are updated atomically.
inline void or_bits(uint32_t* buf, uint64_t pos, uint32_t v, uint32_t k, uint64_t lo,
                    uint64_t hi) {
  if (k == 0 || v == 0) return;
  const uint64_t i = pos >> 5;
  const uint32_t s = pos & 31;
  const uint32_t a = v << s;
  const uint32_t b = s + k > 32 ? v >> (32 - s) : 0;
  if (i > lo && i + 2 < hi) {
    buf[i] |= a;
    buf[i + 1] |= b;
  } else {
    __atomic_fetch_or(&buf[i], a, __ATOMIC_RELAXED);
    if (b) __atomic_fetch_or(&buf[i + 1], b, __ATOMIC_RELAXED);
  }
}

// extract() by the BMI2 PEXT instruction; only called when the CPU has it.
inline uint32_t pext32(uint32_t x, uint32_t m) {
#if defined(__x86_64__)
  uint32_t out;
  asm("pextl %2, %1, %0" : "=r"(out) : "r"(x), "rm"(m));
  return out;
#else
  (void)x;
  (void)m;
  return 0;
#endif
}

}  // namespace

Encoder::Encoder(uint64_t row_bytes, uint32_t row_words, uint32_t num_groups,
                 const uint32_t* tables, bool allow_sparse, uint32_t code_rows,
                 bool sparse_code)
    : row_bytes_(row_bytes), row_words_(row_words), num_groups_(num_groups),
      allow_sparse_(allow_sparse), sparse_code_(allow_sparse && sparse_code),
      code_rows_(code_rows) {
  if (code_rows != 0 && code_rows != 8 && code_rows != 16) {
    throw std::invalid_argument("ibp encode: code_rows must be 0, 8 or 16, got " +
                                std::to_string(code_rows));
  }
  if (num_groups == 0 || num_groups > kMaxGroups) {
    throw std::invalid_argument("ibp encode: num_groups must be in [1, " +
                                std::to_string(kMaxGroups) + "], got " +
                                std::to_string(num_groups));
  }
  group_bits_ = group_bits_for(num_groups);
  if (!index_geometry(row_words, group_bits_, &block_rows_, &rel_bytes_)) {
    throw std::invalid_argument("ibp encode: rows of " + std::to_string(row_words) +
                                " words are too long for the format");
  }
  const size_t n = static_cast<size_t>(num_groups) * row_words;
  mask_.resize(n);
  value_.resize(n);
  nvar_.resize(n);
  dep_.resize(n * 5);
  for (uint32_t g = 0; g < num_groups; ++g) {
    for (uint32_t w = 0; w < row_words; ++w) {
      const size_t i = static_cast<size_t>(g) * row_words + w;
      const uint64_t at = (2ull + code_rows) * g * row_words + w;
      const uint32_t m = tables[at];
      mask_[i] = m;
      value_[i] = tables[at + row_words];
      nvar_[i] = popc32(~m);
      const DepositMasks d = make_deposit_masks(~m);
      for (int k = 0; k < 5; ++k) dep_[i * 5 + k] = d.dep[k];
    }
  }
  ibp_floor_.assign(num_groups, 0);
  for (uint32_t g = 0; g < num_groups; ++g) {
    uint64_t bits = kModeBits + group_bits_ + row_words;
    for (uint32_t w = 0; w < row_words; ++w) bits += nvar_[static_cast<size_t>(g) * row_words + w];
    ibp_floor_[g] = bits;
  }
  if (code_rows_) {
    upw_ = code_rows_ / 8;
    const uint32_t U = unit_bits(upw_);
    codes_.resize(static_cast<size_t>(num_groups) * code_rows_ * row_words);
    plain_.assign(num_groups, 0);
    for (uint32_t g = 0; g < num_groups; ++g) {
      const uint32_t* src = tables + (2ull + code_rows_) * g * row_words + 2ull * row_words;
      uint32_t* dst = codes_.data() + static_cast<size_t>(g) * code_rows_ * row_words;
      std::copy(src, src + static_cast<size_t>(code_rows_) * row_words, dst);
      for (uint32_t u = 0; u < row_words * upw_; ++u) {
        const CodeUnit cu = code_unit(dst, row_words, upw_, u);
        if (cu.s > kMaxCodeSymbols || cu.nc > kMaxCodeBits || cu.lo + cu.nc > U) {
          throw std::invalid_argument("ibp encode: code table of group " + std::to_string(g) +
                                      " unit " + std::to_string(u) + " is out of range");
        }
        plain_[g] += U - cu.nc;
      }
    }
    units_.resize(static_cast<size_t>(num_groups) * row_words * upw_);
    desc_.resize(units_.size());
    for (uint32_t g = 0; g < num_groups; ++g) {
      const uint32_t* codes = codes_.data() + static_cast<size_t>(g) * code_rows_ * row_words;
      for (uint32_t u = 0; u < row_words * upw_; ++u) {
        const CodeUnit cu = code_unit(codes, row_words, upw_, u);
        UnitCode& c = units_[static_cast<size_t>(g) * row_words * upw_ + u];
        c.s = cu.s;
        c.lo = cu.lo;
        c.nc = cu.nc;
        desc_[static_cast<size_t>(g) * row_words * upw_ + u] =
            static_cast<uint16_t>(code_slot0(cu.s, cu.lo, cu.nc));
        for (uint32_t r = 0; r < kCodeSlots; ++r) {
          c.slot[r] = r < cu.s ? static_cast<uint16_t>(code_slot(codes, row_words, upw_, u, 1 + r))
                               : 0;
        }
      }
    }
    build_cost_tables();
  }
}

void Encoder::build_cost_tables() {
  // Tables of all units together stay under kMaxCostBytes; past that every
  // unit is looked up per group.
  constexpr uint64_t kMaxCostBytes = 64ull << 20;
  constexpr uint32_t kMaxTableGroups = 16;
  gp_ = 1;
  while (gp_ < num_groups_) gp_ *= 2;
  const uint32_t units = row_words_ * upw_, U = unit_bits(upw_);
  const size_t per_group = static_cast<size_t>(row_words_) * upw_;
  std::vector<uint8_t> shared(units, 0);
  uint64_t bytes = 0;
  for (uint32_t u = 0; u < units; ++u) {
    const UnitCode& c0 = units_[u];
    bool same = c0.nc >= 1 && c0.nc <= kCostFieldBits;
    for (uint32_t g = 1; same && g < num_groups_; ++g) {
      const UnitCode& c = units_[g * per_group + u];
      same = c.lo == c0.lo && c.nc == c0.nc;
    }
    shared[u] = same;
    if (same) bytes += (uint64_t{gp_} << c0.nc);
  }
  fields_.clear();
  cost_.clear();
  slow_.clear();
  cost_at_.assign(units, kSlowUnit);
  if (bytes > kMaxCostBytes || gp_ > kMaxTableGroups) std::fill(shared.begin(), shared.end(), 0);
  for (uint32_t u = 0; u < units; ++u) {
    if (!shared[u]) {
      slow_.push_back(u);
      continue;
    }
    const UnitCode& c0 = units_[u];
    const uint32_t at = static_cast<uint32_t>(cost_.size());
    cost_.resize(cost_.size() + (size_t{gp_} << c0.nc), 0);
    for (uint32_t g = 0; g < num_groups_; ++g) {
      const UnitCode& c = units_[g * per_group + u];
      for (uint32_t f = 0; f < (1u << c.nc); ++f) {
        const uint32_t r = rank_of(c, f);
        cost_[at + static_cast<size_t>(f) * gp_ + g] = static_cast<uint8_t>(r < c.s ? r + 1 : c.s + c.nc);
      }
    }
    fields_.push_back(UnitField{u / upw_, (u % upw_) * U + c0.lo, low_mask(c0.nc), at});
    cost_at_[u] = at;
  }
}

// Code bits (without the plain bits and the head) of row x under each of the
// first GP groups, into sums[0 .. GP). The unit costs are at most
// kMaxCodeSymbols + kMaxCodeBits < 32, so 16-bit sums hold 2048 units.
template <uint32_t GP>
void Encoder::coded_sums(const uint32_t* x, uint64_t* sums) const {
  constexpr size_t kSpan = 2048;
  for (uint32_t g = 0; g < GP; ++g) sums[g] = 0;
  const UnitField* f = fields_.data();
  const uint8_t* cost = cost_.data();
  for (size_t a = 0; a < fields_.size(); a += kSpan) {
    const size_t b = std::min(fields_.size(), a + kSpan);
    uint16_t acc[GP] = {};
    for (size_t i = a; i < b; ++i) {
      const uint8_t* t = cost + f[i].at + static_cast<size_t>((x[f[i].word] >> f[i].shift) & f[i].mask) * GP;
      for (uint32_t g = 0; g < GP; ++g) acc[g] = static_cast<uint16_t>(acc[g] + t[g]);
    }
    for (uint32_t g = 0; g < GP; ++g) sums[g] += acc[g];
  }
}

void Encoder::coded_bits_all(const uint32_t* x, uint64_t* bits) const {
  uint64_t sums[16] = {};
  switch (fields_.empty() ? 0 : gp_) {
    case 0: break;
    case 1: coded_sums<1>(x, sums); break;
    case 2: coded_sums<2>(x, sums); break;
    case 4: coded_sums<4>(x, sums); break;
    case 8: coded_sums<8>(x, sums); break;
    default: coded_sums<16>(x, sums); break;
  }
  const uint32_t U = unit_bits(upw_);
  const size_t per_group = static_cast<size_t>(row_words_) * upw_;
  for (uint32_t g = 0; g < num_groups_; ++g) {
    uint64_t b = kModeBits + group_bits_ + plain_[g] + (fields_.empty() ? 0 : sums[g]);
    for (uint32_t u : slow_) {
      const UnitCode& c = units_[g * per_group + u];
      const uint32_t x_u = static_cast<uint32_t>(static_cast<uint64_t>(x[u / upw_]) >> ((u % upw_) * U));
      const uint32_t r = rank_of(c, field_of(x_u, c.lo, c.nc));
      b += r < c.s ? r + 1 : c.s + c.nc;
    }
    bits[g] = b;
  }
}

uint64_t Encoder::coded_bits(const uint32_t* x, uint32_t g) const {
  const UnitCode* units = units_.data() + static_cast<size_t>(g) * row_words_ * upw_;
  const uint32_t U = unit_bits(upw_);
  uint64_t bits = kModeBits + group_bits_ + plain_[g];
  for (uint32_t w = 0; w < row_words_; ++w) {
    for (uint32_t h = 0; h < upw_; ++h) {
      const UnitCode& c = units[w * upw_ + h];
      const uint32_t f = field_of(static_cast<uint32_t>(static_cast<uint64_t>(x[w]) >> (h * U)),
                                  c.lo, c.nc);
      const uint32_t r = rank_of(c, f);
      bits += r < c.s ? r + 1 : c.s + c.nc;
    }
  }
  return bits;
}

namespace {
// Packs fields LSB-first into out[0 ..), branch-free: out[i] is written
// whole on every add (out must hold one word past the last full one).
struct WordSink {
  uint32_t* out;
  uint64_t acc = 0;  // pending bits
  uint32_t n = 0;    // pending bits, < 32 between calls
  size_t i = 0;      // word being filled
  void add(uint32_t v, uint32_t k) {  // k <= 32, v < 2^k
    acc |= static_cast<uint64_t>(v) << n;
    n += k;
    out[i] = static_cast<uint32_t>(acc);
    i += n >> 5;
    acc >>= n & 32;
    n &= 31;
  }
  void flush() { out[i] = static_cast<uint32_t>(acc); }
};

// ORs the `bits` bits of words[] into the stream at `pos` through put.
template <typename Put>
void put_words(const Put& put, uint64_t pos, const uint32_t* words, uint64_t bits) {
  uint64_t j = 0;
  for (; 32 * (j + 1) <= bits; ++j) put(pos + 32 * j, words[j], 32);
  if (bits > 32 * j) put(pos + 32 * j, words[j], static_cast<uint32_t>(bits - 32 * j));
}
}  // namespace

template <typename Put>
void Encoder::write_coded(const uint32_t* x, uint32_t g, uint64_t p, const Put& put,
                          std::vector<uint32_t>* scratch) const {
  const uint32_t U = unit_bits(upw_), units = row_words_ * upw_;
  const UnitCode* code_of = units_.data() + static_cast<size_t>(g) * units;
  const uint16_t* desc = desc_.data() + static_cast<size_t>(g) * units;
  // The plain section (plain_[g] bits, at most 32 per word) and the codes (at
  // most 31 bits a unit) are packed apart, then put at p and p + plain_[g].
  scratch->resize(static_cast<size_t>(row_words_) + units + 4);
  WordSink plain{scratch->data()}, code{scratch->data() + row_words_ + 2};
  if (slow_.empty()) {
    // Every unit has a cost table, so all groups share each unit's lo and nc
    // (those of group 0): the plain bits of a word go in at once.
    for (uint32_t w = 0; w < row_words_; ++w) {
      if (upw_ == 1) {
        const uint32_t d = desc_[w], lo = (d >> 4) & 31u, nc = (d >> 9) & 31u;
        plain.add(plain_of(x[w], lo, nc), 32 - nc);
      } else {
        const uint32_t d0 = desc_[2 * w], lo0 = (d0 >> 4) & 31u, nc0 = (d0 >> 9) & 31u;
        const uint32_t d1 = desc_[2 * w + 1], lo1 = (d1 >> 4) & 31u, nc1 = (d1 >> 9) & 31u;
        plain.add(plain_of(x[w] & 0xFFFFu, lo0, nc0) | plain_of(x[w] >> 16, lo1, nc1) << (16 - nc0),
                  32 - nc0 - nc1);
      }
    }
    const UnitField* fu = fields_.data();
    for (uint32_t u = 0; u < units; ++u) {
      const uint32_t f = (x[fu[u].word] >> fu[u].shift) & fu[u].mask;
      const uint32_t bits = cost_[fu[u].at + static_cast<size_t>(f) * gp_ + g];
      const uint32_t s = desc[u] & 15u;
      // ranked symbol r (bits = r + 1 <= s): r ones, then a zero; an escape
      // (bits = s + nc > s): s ones, then the field
      code.add(bits > s ? low_mask(s) | f << s : low_mask(bits - 1), bits);
    }
  } else {
    for (uint32_t w = 0; w < row_words_; ++w) {
      for (uint32_t h = 0; h < upw_; ++h) {
        const uint32_t u = w * upw_ + h;
        const uint32_t d = desc[u], s = d & 15u, lo = (d >> 4) & 31u, nc = (d >> 9) & 31u;
        const uint32_t x_u = static_cast<uint32_t>(static_cast<uint64_t>(x[w]) >> (h * U)) &
                             low_mask(U);
        plain.add(plain_of(x_u, lo, nc), U - nc);
        const uint32_t f = field_of(x_u, lo, nc);
        // Ranked symbol r: r ones, then a zero (r + 1 <= s bits); an escape: s
        // ones, then the field (s + nc bits, more than s as a tabled unit has nc >= 1).
        uint32_t ones;
        bool escape;
        if (cost_at_[u] != kSlowUnit) {
          const uint32_t bits = cost_[cost_at_[u] + static_cast<size_t>(f) * gp_ + g];
          escape = bits > s;
          ones = escape ? s : bits - 1;
        } else {
          const uint32_t r = rank_of(code_of[u], f);
          escape = r >= s;
          ones = escape ? s : r;
        }
        // one field of at most kMaxCodeSymbols + kMaxCodeBits < 32 bits
        code.add(low_mask(ones) | (escape ? f << ones : 0u), ones + (escape ? nc : 1u));
      }
    }
  }
  const uint64_t plain_bits = 32ull * plain.i + plain.n, code_bits = 32ull * code.i + code.n;
  plain.flush();
  code.flush();
  put_words(put, p, plain.out, plain_bits);
  put_words(put, p + plain_bits, code.out, code_bits);
}

uint32_t Encoder::count_listed(const uint32_t* x, uint32_t g) const {
  const uint32_t* value = value_.data() + static_cast<size_t>(g) * row_words_;
  uint32_t c = 0;
  for (uint32_t w = 0; w < row_words_; ++w) c += static_cast<uint32_t>(x[w] != value[w]);
  return c;
}

uint64_t Encoder::ibp_bits(const uint32_t* x, uint32_t g, uint32_t* listed) const {
  const size_t base = static_cast<size_t>(g) * row_words_;
  const uint32_t* mask = mask_.data() + base;
  const uint32_t* value = value_.data() + base;
  const uint32_t* nvar = nvar_.data() + base;
  // 32-bit sums cannot overflow: a row has fewer than 2^32 bits (index_geometry).
  uint32_t bits = 0, c = 0;
  // Branch-free so the compiler vectorises it: this runs once per row and group.
  for (uint32_t w = 0; w < row_words_; ++w) {
    const uint32_t miss = static_cast<uint32_t>(((x[w] - value[w]) & mask[w]) != 0);
    bits += nvar[w] + miss * (32u - nvar[w]);
    c += static_cast<uint32_t>(x[w] != value[w]);
  }
  *listed = c;
  return kModeBits + group_bits_ + row_words_ + static_cast<uint64_t>(bits);
}

// A kSparse row with c listed words of d distinct values takes
//   head + min(c * pos_bits, row_words) + min(32 c, 32 d + c * count_bits(d - 1))
// bits (format.h), nondecreasing in d. The d of a group is at least the row's
// number of distinct words less the row_words - c words left out, and that
// number is at least the count of distinct hashes of the words, found without
// sorting. Rows whose bound reaches `limit` skip the exact plan; the plan, when
// made, is the same as without the bound, so the output does not change.
bool Encoder::sparse_may_win(const uint32_t* x, uint32_t c, uint64_t limit,
                             SparseTrial* t) const {
  const uint32_t W = row_words_;
  const uint64_t head = kModeBits + group_bits_ + 2ull * count_bits(W) + 1;
  if (c == 0) return head < limit;
  const uint64_t where = std::min<uint64_t>(static_cast<uint64_t>(c) * count_bits(W - 1), W);
  if (head + where + 32 >= limit) return false;  // even one dictionary entry loses
  if (head + where + 32ull * c < limit) return true;  // values inline may win: d is moot
  if (t->distinct < 0) {
    const uint32_t log_bits = std::min<uint32_t>(16, std::max<uint32_t>(6, count_bits(8ull * W)));
    t->seen.resize(std::max<size_t>(t->seen.size(), size_t{1} << (log_bits - 6)), 0);
    uint64_t* seen = t->seen.data();
    int64_t d = 0;
    for (uint32_t w = 0; w < W; ++w) {
      const uint32_t h = (x[w] * 0x9E3779B1u) >> (32 - log_bits);
      const uint64_t bit = 1ull << (h & 63);
      d += (seen[h >> 6] & bit) == 0;
      seen[h >> 6] |= bit;
    }
    for (uint32_t w = 0; w < W; ++w) seen[((x[w] * 0x9E3779B1u) >> (32 - log_bits)) >> 6] = 0;
    t->distinct = d;
  }
  const uint64_t d = static_cast<uint64_t>(std::max<int64_t>(1, t->distinct - (W - c)));
  const uint64_t values = std::min<uint64_t>(32ull * c, 32 * d + c * count_bits(d - 1));
  return head + where + values < limit;
}

// The cheapest kSparse layout of row x under group g, or false when no sparse
// layout can beat `limit` bits.
bool Encoder::sparse_plan(const uint32_t* x, uint32_t g, uint64_t limit, SparsePlan* plan,
                          std::vector<uint32_t>* scratch) const {
  const size_t base = static_cast<size_t>(g) * row_words_;
  uint32_t c = 0;
  for (uint32_t w = 0; w < row_words_; ++w) c += x[w] != value_[base + w];
  const uint32_t cb = count_bits(row_words_);
  const uint64_t head = kModeBits + group_bits_ + 2ull * cb + 1;
  const uint64_t where_list = static_cast<uint64_t>(c) * (row_words_ ? count_bits(row_words_ - 1) : 0);
  const uint64_t where = std::min<uint64_t>(where_list, row_words_);
  // Even a one-entry dictionary costs 32 bits when anything is listed.
  if (head + where + (c ? 32 : 0) >= limit) return false;
  scratch->clear();
  for (uint32_t w = 0; w < row_words_; ++w) {
    if (x[w] != value_[base + w]) scratch->push_back(x[w]);
  }
  std::sort(scratch->begin(), scratch->end());
  scratch->erase(std::unique(scratch->begin(), scratch->end()), scratch->end());
  const uint32_t d = static_cast<uint32_t>(scratch->size());
  const uint64_t inline_bits = 32ull * c;
  const uint64_t dict_bits = 32ull * d + static_cast<uint64_t>(c) * (d ? count_bits(d - 1) : 0);
  plan->count = c;
  plan->dict = dict_bits < inline_bits ? d : 0;
  plan->bitmap = where_list > row_words_;
  plan->bits = head + where + std::min(inline_bits, dict_bits);
  return plan->bits < limit;
}

uint64_t Encoder::row_cost(const uint32_t* row, uint32_t g, uint64_t limit, uint64_t coded,
                           SparsePlan* plan, SparseTrial* trial) const {
  uint32_t c;
  uint64_t best = std::min(limit, ibp_bits(row, g, &c));
  if (allow_sparse_ && sparse_may_win(row, c, best, trial) &&
      sparse_plan(row, g, best, plan, &trial->scratch)) {
    best = plan->bits;
  }
  best = std::min(best, coded);
  if (sparse_code_ && sparse_code_plan(row, g, c, best, plan, &trial->scratch)) best = plan->bits;
  return best;
}

void Encoder::row_bits(const uint8_t* x, uint64_t n, int num_threads, uint64_t* out) const {
  const uint64_t raw_bits = raw_row_bits(row_words_, group_bits_);
  parallel_for(n, num_threads, n * row_bytes_ * num_groups_, [&](uint64_t a, uint64_t b) {
    std::vector<uint32_t> row(row_words_);
    std::vector<uint64_t> coded(num_groups_, raw_bits);
    SparseTrial trial;
    SparsePlan plan;
    for (uint64_t i = a; i < b; ++i) {
      load_row(x + i * row_bytes_, row_bytes_, row_words_, row.data());
      trial.distinct = -1;
      if (code_rows_) coded_bits_all(row.data(), coded.data());
      for (uint32_t g = 0; g < num_groups_; ++g) {
        out[i * num_groups_ + g] = row_cost(row.data(), g, raw_bits, coded[g], &plan, &trial);
      }
    }
  });
}

// Start of a row of `len` bits that the packed layout would start at `pos`,
// under RowLayout::kSectors: the next sector boundary when the row would
// otherwise touch one sector more than ceil(len / kSectorBits) and the move
// (the gap) is at most `room` bits, else pos.
static uint64_t sector_start(uint64_t pos, uint64_t len, uint64_t room) {
  const uint64_t o = pos % kSectorBits;
  if (o == 0 || len == 0) return pos;
  const uint64_t touched = (o + len + kSectorBits - 1) / kSectorBits;
  const uint64_t least = (len + kSectorBits - 1) / kSectorBits;
  const uint64_t gap = kSectorBits - o;
  return touched > least && gap <= room ? pos + gap : pos;
}

void Encoder::encode(const uint8_t* x, uint64_t n, int num_threads,
                     std::vector<uint32_t>* words, std::vector<uint8_t>* rel,
                     std::vector<uint64_t>* bases) {
  if (n == 0) return;
  const uint64_t raw_bits = raw_row_bits(row_words_, group_bits_);

  // Pass 1 (parallel): each row's mode, group and length.
  std::vector<uint64_t> len(n);
  std::vector<uint32_t> tag(n);  // group << 2 | mode
  std::vector<SparsePlan> plans(allow_sparse_ ? n : 0);
  parallel_for(n, num_threads, n * row_bytes_, [&](uint64_t a, uint64_t b) {
    std::vector<uint32_t> row(row_words_), listed(num_groups_);
    std::vector<uint64_t> coded(code_rows_ ? num_groups_ : 0);
    SparseTrial trial;
    for (uint64_t i = a; i < b; ++i) {
      load_row(x + i * row_bytes_, row_bytes_, row_words_, row.data());
      // The row takes the fewest bits, ties going to raw, kIbp, kSparse,
      // kCoded in that order and then to the lowest group. The kCoded bits of
      // every group come first: a group's kIbp bits are at least
      // ibp_floor_[g], so a group whose floor cannot beat the best so far, or
      // exceeds the best kCoded row, is not tried.
      uint64_t coded_best = ~0ull;
      uint32_t coded_g = 0;
      if (code_rows_) {
        coded_bits_all(row.data(), coded.data());
        for (uint32_t g = 0; g < num_groups_; ++g) {
          if (coded[g] < coded_best) {
            coded_best = coded[g];
            coded_g = g;
          }
        }
      }
      uint64_t best = raw_bits;
      uint32_t best_tag = static_cast<uint32_t>(RowMode::kRaw);
      for (uint32_t g = 0; g < num_groups_; ++g) {
        if (ibp_floor_[g] >= best || ibp_floor_[g] > coded_best) {
          listed[g] = allow_sparse_ ? count_listed(row.data(), g) : 0;
          continue;
        }
        const uint64_t bits = ibp_bits(row.data(), g, &listed[g]);
        if (bits < best) {
          best = bits;
          best_tag = g << 2 | static_cast<uint32_t>(RowMode::kIbp);
        }
      }
      // A kSparse row must take fewer bits than `best` and at most coded_best.
      if (coded_best < best) {
        best = coded_best + 1;
        best_tag = coded_g << 2 | static_cast<uint32_t>(RowMode::kCoded);
      }
      trial.distinct = -1;
      for (uint32_t g = 0; allow_sparse_ && g < num_groups_; ++g) {
        SparsePlan plan;
        if (sparse_may_win(row.data(), listed[g], best, &trial) &&
            sparse_plan(row.data(), g, best, &plan, &trial.scratch)) {
          best = plan.bits;
          best_tag = g << 2 | static_cast<uint32_t>(RowMode::kSparse);
          plans[i] = plan;
        }
      }
      if ((best_tag & 3) == static_cast<uint32_t>(RowMode::kCoded)) best = coded_best;
      for (uint32_t g = 0; sparse_code_ && g < num_groups_; ++g) {
        SparsePlan plan;
        if (sparse_code_plan(row.data(), g, listed[g], best, &plan, &trial.scratch)) {
          best = plan.bits;
          best_tag = g << 2 | static_cast<uint32_t>(RowMode::kSparse);
          plans[i] = plan;
        }
      }
      len[i] = best;
      tag[i] = best_tag;
    }
  });

  // Row starts, index entries and mode counts.
  std::vector<uint64_t> start(n + 1);
  const size_t rel_at = rel->size();
  rel->resize(rel_at + n * rel_bytes_);
  uint64_t pos = bits_;
  const uint64_t rel_limit = rel_bytes_ == 2 ? 0xFFFFull : 0xFFFFFFFFull;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t r = rows_ + i;
    if (layout_ == RowLayout::kSectors) {
      // A block's first row may move freely (its base is 64-bit); a later one
      // as far as leaves room for the block's remaining rows stored raw.
      const uint64_t left = block_rows_ - r % block_rows_;
      pos = sector_start(pos, len[i], r % block_rows_ == 0
                                          ? ~0ull
                                          : rel_limit - (pos - block_base_) - left * raw_bits);
    }
    if (r % block_rows_ == 0) {
      block_base_ = pos;
      bases->push_back(pos);
    }
    const uint64_t off = pos - block_base_;
    if (rel_bytes_ == 2) {
      const uint16_t v = static_cast<uint16_t>(off);
      std::memcpy(rel->data() + rel_at + i * 2, &v, 2);
    } else {
      const uint32_t v = static_cast<uint32_t>(off);
      std::memcpy(rel->data() + rel_at + i * 4, &v, 4);
    }
    start[i] = pos;
    pos += len[i];
    ++mode_rows_[tag[i] & 3];
  }
  start[n] = pos;

  // Pass 2 (parallel): write the rows into the words covering
  // [bits_ rounded down to a word, pos).
  const uint64_t first_word = bits_ >> 5;
  const uint64_t end_word = (pos + 31) >> 5;
  std::vector<uint32_t> buf(end_word - first_word, 0);
  buf[0] = tail_;
  const uint64_t origin = first_word * 32;
  const bool pext = cpu_has_bmi2();
  parallel_for(n, num_threads, n * row_bytes_, [&](uint64_t a, uint64_t b) {
    const uint64_t lo = (start[a] - origin) >> 5;
    const uint64_t hi = ((start[b] - origin) >> 5) + 1;
    std::vector<uint32_t> row(row_words_), dict, scratch;
    auto put = [&](uint64_t at, uint32_t v, uint32_t k) { or_bits(buf.data(), at, v, k, lo, hi); };
    for (uint64_t i = a; i < b; ++i) {
      load_row(x + i * row_bytes_, row_bytes_, row_words_, row.data());
      const uint32_t mode = tag[i] & 3, g = tag[i] >> 2;
      uint64_t p = start[i] - origin;
      put(p, mode, kModeBits);
      put(p + kModeBits, g, group_bits_);
      p += kModeBits + group_bits_;
      const size_t base = static_cast<size_t>(g) * row_words_;
      if (mode == static_cast<uint32_t>(RowMode::kRaw)) {
        for (uint32_t w = 0; w < row_words_; ++w) put(p + 32ull * w, row[w], 32);
      } else if (mode == static_cast<uint32_t>(RowMode::kIbp)) {
        uint64_t f = p + row_words_;
        for (uint32_t w = 0; w < row_words_; ++w) {
          const size_t j = base + w;
          if (fits(row[w], j)) {
            put(p + w, 1, 1);
            put(f, pext ? pext32(row[w] - value_[j], ~mask_[j])
                        : extract(row[w] - value_[j], ~mask_[j], &dep_[j * 5]),
                nvar_[j]);
            f += nvar_[j];
          } else {
            put(f, row[w], 32);
            f += 32;
          }
        }
      } else if (mode == static_cast<uint32_t>(RowMode::kCoded)) {
        write_coded(row.data(), g, p, put, &scratch);
      } else if (plans[i].code) {
        write_sparse_code(row.data(), base, plans[i], p, put);
      } else {
        write_sparse(row.data(), base, plans[i], p, put, &dict);
      }
    }
  });

  const bool partial = (pos & 31) != 0;
  words->insert(words->end(), buf.begin(), partial ? buf.end() - 1 : buf.end());
  tail_ = partial ? buf.back() : 0;
  bits_ = pos;
  rows_ += n;
}

template <typename Put>
void Encoder::write_sparse(const uint32_t* x, size_t base, const SparsePlan& plan, uint64_t p,
                           const Put& put, std::vector<uint32_t>* dict) const {
  const uint32_t cb = count_bits(row_words_);
  put(p, plan.count, cb);
  put(p + cb, plan.dict, cb);
  put(p + 2ull * cb, plan.bitmap ? 1 : 0, 1);
  uint64_t v = p + 2ull * cb + 1;
  dict->clear();
  for (uint32_t w = 0; w < row_words_; ++w) {
    if (x[w] != value_[base + w]) dict->push_back(x[w]);
  }
  if (plan.dict) {
    std::sort(dict->begin(), dict->end());
    dict->erase(std::unique(dict->begin(), dict->end()), dict->end());
    for (uint32_t e : *dict) {
      put(v, e, 32);
      v += 32;
    }
  }
  const uint32_t ib = plan.dict ? count_bits(plan.dict - 1) : 0;
  const uint32_t pb = row_words_ ? count_bits(row_words_ - 1) : 0;
  uint64_t where = v + (plan.dict ? static_cast<uint64_t>(plan.count) * ib : 32ull * plan.count);
  uint32_t i = 0;
  for (uint32_t w = 0; w < row_words_; ++w) {
    if (x[w] == value_[base + w]) continue;
    if (plan.dict) {
      const auto at = std::lower_bound(dict->begin(), dict->end(), x[w]) - dict->begin();
      put(v + static_cast<uint64_t>(i) * ib, static_cast<uint32_t>(at), ib);
    } else {
      put(v + 32ull * i, x[w], 32);
    }
    if (plan.bitmap) {
      put(where + w, 1, 1);
    } else {
      put(where + static_cast<uint64_t>(i) * pb, w, pb);
    }
    ++i;
  }
}

namespace {

// Coded high bits a coded-form kSparse row may take, tried in this order (the
// first of equal sizes wins): none, the sign and exponent of float32 (or of
// the high bfloat16 of a word), and wider prefixes for small integers.
constexpr uint32_t kSparseHiChoices[] = {0, 9, 12, 16, 20, 24, 28};

// zigzag(t - base): 2e for e >= 0, -2e - 1 for e < 0.
inline uint64_t zigzag(uint32_t t, uint32_t base) {
  const int64_t e = static_cast<int64_t>(t) - static_cast<int64_t>(base);
  return e >= 0 ? 2 * static_cast<uint64_t>(e) : static_cast<uint64_t>(-2 * e - 1);
}

}  // namespace

// The gaps take the Rice parameter k in [0, count_bits(W)] of fewest bits
// (the smallest such k); the values the choice of kSparseHiChoices of fewest
// bits, with base the lower median of the row's top h bits.
bool Encoder::sparse_code_plan(const uint32_t* x, uint32_t g, uint32_t c, uint64_t limit,
                               SparsePlan* plan, std::vector<uint32_t>* scratch) const {
  const uint32_t W = row_words_;
  const uint32_t cb = count_bits(W);
  if (32ull * c >= limit || c + 1 > low_mask(cb)) return false;
  const uint64_t head = kModeBits + group_bits_ + sparse_code_head_bits(W, 0);
  if (head >= limit) return false;
  const size_t base = static_cast<size_t>(g) * W;
  // scratch: the c gaps, the c listed words, then their top bits.
  scratch->resize(3ull * c);
  uint32_t* gap = scratch->data();
  uint32_t* val = gap + c;
  uint32_t* top = val + c;
  uint32_t i = 0, next = 0;
  for (uint32_t w = 0; w < W; ++w) {
    if (x[w] == value_[base + w]) continue;
    gap[i] = w - next;
    val[i++] = x[w];
    next = w + 1;
  }
  const uint32_t kmax = std::min<uint32_t>(low_mask(kSparseRiceBits), cb);
  uint64_t gap_bits = ~0ull;
  uint32_t rice = 0;
  for (uint32_t k = 0; k <= kmax; ++k) {
    uint64_t b = static_cast<uint64_t>(c) * (k + 1);
    for (uint32_t j = 0; j < c; ++j) b += gap[j] >> k;
    if (b < gap_bits) {
      gap_bits = b;
      rice = k;
    }
  }
  uint64_t val_bits = ~0ull;
  uint32_t hi = 0, hi_base = 0;
  for (uint32_t h : kSparseHiChoices) {
    uint64_t b = static_cast<uint64_t>(c) * (32 - h) + h;
    uint32_t med = 0;
    if (h && c) {
      for (uint32_t j = 0; j < c; ++j) top[j] = val[j] >> (32 - h);
      std::nth_element(top, top + (c - 1) / 2, top + c);
      med = top[(c - 1) / 2];
      for (uint32_t j = 0; j < c; ++j) {
        const uint64_t z = zigzag(val[j] >> (32 - h), med);
        b += z < kSparseEscape ? z + 1 : kSparseEscape + h;
      }
    }
    if (b < val_bits) {
      val_bits = b;
      hi = h;
      hi_base = med;
    }
  }
  const uint64_t bits = head + gap_bits + val_bits;
  if (bits >= limit) return false;
  plan->count = c;
  plan->dict = c + 1;
  plan->bitmap = false;
  plan->bits = bits;
  plan->code = true;
  plan->rice = rice;
  plan->hi = hi;
  plan->base = hi_base;
  return true;
}

template <typename Put>
void Encoder::write_sparse_code(const uint32_t* x, size_t base, const SparsePlan& plan,
                                uint64_t p, const Put& put) const {
  const uint32_t cb = count_bits(row_words_);
  const uint32_t k = plan.rice, h = plan.hi, lo_bits = 32 - h;
  put(p, plan.count, cb);
  put(p + cb, plan.count + 1, cb);  // d = c + 1; form = 0
  uint64_t at = p + 2ull * cb + 1;
  put(at, k, kSparseRiceBits);
  put(at + kSparseRiceBits, h, kSparseHiBits);
  put(at + kSparseRiceBits + kSparseHiBits, plan.base, h);
  at += kSparseRiceBits + kSparseHiBits + h;
  uint32_t next = 0;
  for (uint32_t w = 0; w < row_words_; ++w) {
    if (x[w] == value_[base + w]) continue;
    const uint32_t gap = w - next;
    next = w + 1;
    for (uint32_t q = gap >> k; q;) {  // q one bits, then a zero bit
      const uint32_t n = std::min<uint32_t>(q, 32);
      put(at, low_mask(n), n);
      at += n;
      q -= n;
    }
    at += 1;
    put(at, gap & low_mask(k), k);
    at += k;
    if (h) {
      const uint32_t t = x[w] >> lo_bits;
      const uint64_t z = zigzag(t, plan.base);
      if (z < kSparseEscape) {
        put(at, low_mask(static_cast<uint32_t>(z)), static_cast<uint32_t>(z));
        at += z + 1;
      } else {
        put(at, low_mask(kSparseEscape), kSparseEscape);
        put(at + kSparseEscape, t, h);
        at += kSparseEscape + h;
      }
    }
    put(at, x[w] & low_mask(lo_bits), lo_bits);
    at += lo_bits;
  }
}

void Encoder::finish(std::vector<uint32_t>* words, std::vector<uint64_t>* bases) {
  if (bits_ & 31) words->push_back(tail_);
  for (uint32_t i = 0; i < kPayloadPadWords; ++i) words->push_back(0);
  bases->push_back(bits_);
  tail_ = 0;
}

void build_decode_table(uint32_t num_groups, uint32_t row_words, const uint32_t* tables,
                        uint32_t* out, uint32_t code_rows) {
  const uint64_t stride = (2ull + code_rows) * row_words;
  for (uint32_t g = 0; g < num_groups; ++g) {
    const uint32_t* mask = tables + g * stride;
    const uint32_t* value = mask + row_words;
    uint32_t* t = out + static_cast<uint64_t>(g) * kDecodeRows * row_words;
    for (uint32_t w = 0; w < row_words; ++w) {
      const DepositMasks d = make_deposit_masks(~mask[w]);
      t[kValue * row_words + w] = value[w];
      t[kNvar * row_words + w] = popc32(~mask[w]);
      for (uint32_t k = 0; k < 5; ++k) t[(kDep0 + k) * row_words + w] = d.dep[k];
      t[kVarMask * row_words + w] = ~mask[w];
    }
  }
  if (!code_rows) return;
  const uint32_t upw = code_rows / 8, U = unit_bits(upw), rows = decode_code_rows(code_rows);
  uint32_t* part = out + static_cast<uint64_t>(num_groups) * kDecodeRows * row_words;
  for (uint32_t g = 0; g < num_groups; ++g) {
    const uint32_t* codes = tables + g * stride + 2ull * row_words;
    uint32_t* t = part + static_cast<uint64_t>(g) * rows * row_words;
    std::copy(codes, codes + static_cast<uint64_t>(code_rows) * row_words, t);
    uint32_t* offset = t + static_cast<uint64_t>(code_rows) * row_words;
    uint32_t at = 0;
    for (uint32_t w = 0; w < row_words; ++w) {
      offset[w] = at;
      for (uint32_t h = 0; h < upw; ++h) at += U - code_unit(codes, row_words, upw, w * upw + h).nc;
    }
  }
}

}  // namespace ibp
