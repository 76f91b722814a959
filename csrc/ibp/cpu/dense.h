// CPU decode of kIbp rows (format.h): whole 8-word chunks at once.
//
// In a chunk whose words all participate, the field widths are those of the
// group (nvar), so each field's bit offset from the chunk's first field is
// fixed: DenseProgram precomputes it per group (`pre`) with the chunk's total
// (`total`). Such a chunk decodes with no per-word branch and no serial
// dependency between its words: scalar (portable deposit or BMI2 PDEP), AVX2
// (gathers of 64-bit windows; a chunk with an exception, a word stored
// whole, takes the per-word path with a running bit position) or AVX-512
// VBMI2 (16 words, exceptions included, from two 64-byte loads, dword
// permutes and a funnel shift). Every variant writes the same words:
// value + deposit(field, ~mask), or the field itself.
//
// Reads: a field at bit b is read as the 8 bytes from byte b / 8, inside the
// payload padding (format.h) since fields are at most 32 bits. The AVX-512
// chunk loads of 2 x 64 bytes are masked at the payload's end.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "../gather.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define IBP_X86_SIMD 1
#include <immintrin.h>
#define IBP_TARGET_AVX2 __attribute__((target("avx2,bmi2")))
#define IBP_TARGET_AVX512 \
  __attribute__((target("avx2,bmi2,avx512f,avx512bw,avx512vl,avx512cd,avx512vbmi,avx512vbmi2")))
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the CPU decoder reads the payload's words as a little-endian byte stream");

namespace ibp {

constexpr uint32_t kChunkWords = 8;

// Per group g, for word w in chunk c = w / 8: pre[g * padded + w] is the sum
// of nvar over the words of c before w; total[g * chunks + c] the sum over c.
// padded = chunks * 8; entries past row_words are 0. The same for the 16-word
// chunks of the AVX-512 kernel (pre16, total16, padded16, chunks16), with
// dep16[g * chunks16 + c] = 1 when a word of the chunk has a non-zero deposit
// mask (0: every word's variable bits are its low nvar bits, no deposit).
// low16 (padded16 per group) is each word's field mask, the low nvar bits:
// what the AVX-512 kernel would otherwise derive from nvar in every chunk of
// every row (32 - nvar is its count of leading zeros, VPLZCNTD). It replaces
// the table's nvar row in that kernel, so the cache lines a row touches
// stay as many. dep16 is 2 instead of 1 when every word of the chunk has its
// variable bits in at most two runs: the deposit is then
// (f << sh1 & run1) | (f << sh2 & run2) (runs as masks at their place in the
// word, sh: how far the run's bits move up; padded16 per group, 0 for no run),
// 5 operations instead of the five stages' 20.
struct DenseProgram {
  uint32_t chunks = 0, padded = 0, chunks16 = 0, padded16 = 0;
  std::vector<uint32_t> pre, total, pre16, total16, low16, sh1, run1, sh2, run2;
  std::vector<uint8_t> dep16;

  explicit DenseProgram(const CompressedView& c) {
    const uint32_t W = c.geo.row_words, G = c.geo.num_groups;
    chunks = (W + kChunkWords - 1) / kChunkWords;
    padded = chunks * kChunkWords;
    chunks16 = (W + 15) / 16;
    padded16 = chunks16 * 16;
    pre.assign(static_cast<size_t>(G) * padded, 0);
    total.assign(static_cast<size_t>(G) * chunks, 0);
    pre16.assign(static_cast<size_t>(G) * padded16, 0);
    total16.assign(static_cast<size_t>(G) * chunks16, 0);
    dep16.assign(static_cast<size_t>(G) * chunks16, 0);
    low16.assign(static_cast<size_t>(G) * padded16, 0);
    for (auto* v : {&sh1, &run1, &sh2, &run2}) v->assign(static_cast<size_t>(G) * padded16, 0);
    std::vector<uint8_t> many(static_cast<size_t>(G) * chunks16, 0);  // a word with > 2 runs
    for (uint32_t g = 0; g < G; ++g) {
      const uint32_t* t = c.table + static_cast<uint64_t>(g) * kDecodeRows * W;
      const uint32_t* nvar = t + kNvar * W;
      for (uint32_t w = 0; w < W; ++w) {
        uint32_t& a = total[static_cast<size_t>(g) * chunks + w / kChunkWords];
        pre[static_cast<size_t>(g) * padded + w] = a;
        a += nvar[w];
        const size_t c16 = static_cast<size_t>(g) * chunks16 + w / 16;
        pre16[static_cast<size_t>(g) * padded16 + w] = total16[c16];
        total16[c16] += nvar[w];
        low16[static_cast<size_t>(g) * padded16 + w] =
            nvar[w] ? ~uint32_t{0} >> (32 - nvar[w]) : 0;
        for (uint32_t i = 0; i < 5; ++i) dep16[c16] |= t[(kDep0 + i) * W + w] != 0;
        // The runs of set bits of the variable mask, lowest first.
        const size_t at = static_cast<size_t>(g) * padded16 + w;
        uint64_t vm = t[kVarMask * W + w];
        uint32_t src = 0, runs = 0;
        while (vm) {
          const uint32_t lo = static_cast<uint32_t>(__builtin_ctzll(vm));
          const uint64_t from_lo = vm >> lo;
          const uint32_t len = static_cast<uint32_t>(__builtin_ctzll(~from_lo));
          const uint32_t mask = static_cast<uint32_t>(((uint64_t{1} << len) - 1) << lo);
          if (runs == 0) {
            sh1[at] = lo - src;
            run1[at] = mask;
          } else if (runs == 1) {
            sh2[at] = lo - src;
            run2[at] = mask;
          }
          ++runs;
          src += len;
          vm &= ~uint64_t{mask};
        }
        many[c16] |= runs > 2;
      }
    }
    for (size_t i = 0; i < dep16.size(); ++i) {
      if (dep16[i] && !many[i]) dep16[i] = 2;
    }
  }
};

// What one kIbp row decode reads besides the payload.
struct DenseRow {
  const uint32_t* table;  // the group's decode table (bits.h layout)
  const uint32_t* pre;    // DenseProgram::pre of the group
  const uint32_t* total;  // DenseProgram::total of the group
  uint32_t W;
  uint64_t payload_bytes;
  const uint32_t* pre16;    // DenseProgram::pre16 of the group
  const uint32_t* total16;  // DenseProgram::total16 of the group
  const uint8_t* dep16;     // DenseProgram::dep16 of the group
  const uint32_t* low16;    // DenseProgram::low16 of the group
  const uint32_t* sh1;      // DenseProgram::sh1, run1, sh2, run2 of the group
  const uint32_t* run1;
  const uint32_t* sh2;
  const uint32_t* run2;
};

inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// k bits (k <= 32) at bit `pos` of the byte stream.
inline uint32_t field_at(const uint8_t* bytes, uint64_t pos, uint32_t k) {
  return static_cast<uint32_t>((load_u64(bytes + (pos >> 3)) >> (pos & 7)) &
                               ((uint64_t{1} << k) - 1));
}

// Words [w, w + n) of a chunk with exceptions (participation bits `part`),
// the first field at bit *pos; advances *pos past them.
template <typename Deposit>
inline void chunk_words(const uint8_t* bytes, uint64_t* pos, uint32_t part, uint32_t w,
                        uint32_t n, const DenseRow& r, uint32_t* out) {
  const uint32_t* nvar = r.table + kNvar * r.W;
  uint64_t p = *pos;
  for (uint32_t j = 0; j < n; ++j) {
    const bool in = (part >> j) & 1u;
    const uint32_t k = in ? nvar[w + j] : 32u;
    const uint32_t f = field_at(bytes, p, k);
    const uint32_t word = Deposit::word(f, r.table, r.W, w + j);
    out[w + j] = in ? word : f;
    p += k;
  }
  *pos = p;
}

// The participation bits of words [w, w + n), n <= 32, of the row whose
// bitmap starts at bit `head`.
inline uint32_t part_bits(const uint8_t* bytes, uint64_t head, uint32_t w, uint32_t n) {
  return field_at(bytes, head + w, n);
}

// Scalar kIbp row: full chunks from the program, one independent read per word.
template <typename Deposit>
void ibp_row_scalar(const uint32_t* payload, uint64_t head, const DenseRow& r, uint32_t* out) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(payload);
  const uint32_t W = r.W;
  const uint32_t* nvar = r.table + kNvar * W;
  uint64_t pos = head + W;
  for (uint32_t w = 0; w < W; w += kChunkWords) {
    const uint32_t n = W - w < kChunkWords ? W - w : kChunkWords;
    const uint32_t all = (1u << n) - 1;
    const uint32_t part = part_bits(bytes, head, w, n);
    if (part == all) {
      for (uint32_t j = 0; j < n; ++j) {
        const uint32_t f = field_at(bytes, pos + r.pre[w + j], nvar[w + j]);
        out[w + j] = Deposit::word(f, r.table, W, w + j);
      }
      pos += r.total[w / kChunkWords];
    } else {
      chunk_words<Deposit>(bytes, &pos, part, w, n, r, out);
    }
  }
}

#if defined(IBP_X86_SIMD)
// PDEP for the chunks with exceptions of the SIMD paths (those CPUs have BMI2).
struct Bmi2Deposit {
  static uint32_t word(uint32_t field, const uint32_t* table, uint32_t W, uint32_t w) {
    uint32_t out;
    asm("pdepl %2, %1, %0" : "=r"(out) : "r"(field), "r"(table[kVarMask * W + w]));
    return table[kValue * W + w] + out;
  }
};

// value + deposit(f, ~mask) for 8 words, the five-stage deposit of bits.h.
IBP_TARGET_AVX2 inline __m256i deposit8(__m256i f, const uint32_t* table, uint32_t W,
                                        uint32_t w) {
  const __m256i k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + kNvar * W + w));
  f = _mm256_and_si256(f, _mm256_srlv_epi32(_mm256_set1_epi32(-1),
                                            _mm256_sub_epi32(_mm256_set1_epi32(32), k)));
#define IBP_STAGE(i)                                                                     \
  {                                                                                      \
    const __m256i d =                                                                    \
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + (kDep0 + i) * W + w)); \
    const __m256i t = _mm256_and_si256(f, d);                                            \
    f = _mm256_or_si256(_mm256_xor_si256(f, t), _mm256_slli_epi32(t, 1 << i));          \
  }
  IBP_STAGE(4) IBP_STAGE(3) IBP_STAGE(2) IBP_STAGE(1) IBP_STAGE(0)
#undef IBP_STAGE
  return _mm256_add_epi32(
      f, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + kValue * W + w)));
}

// The low 32 bits of four 64-bit windows, read at bit offsets off (4 x u64).
IBP_TARGET_AVX2 inline __m128i windows4(const uint8_t* bytes, __m256i off) {
  const __m256i win = _mm256_srlv_epi64(
      _mm256_i64gather_epi64(reinterpret_cast<const long long*>(bytes),
                             _mm256_srli_epi64(off, 3), 1),
      _mm256_and_si256(off, _mm256_set1_epi64x(7)));
  return _mm256_castsi256_si128(
      _mm256_permutevar8x32_epi32(win, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)));
}

// AVX2: like the AVX-512 kernel below, every full chunk without a branch
// (field offsets from an in-register prefix sum of the widths, windows read
// by two 4-lane gathers); the table rows deposit8 reads exist for
// w + 8 <= W, so a shorter last chunk decodes word by word.
IBP_TARGET_AVX2 void ibp_row_avx2(const uint32_t* payload, uint64_t head, const DenseRow& r,
                                  uint32_t* out) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(payload);
  const uint32_t W = r.W;
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i k32 = _mm256_set1_epi32(32), ones = _mm256_set1_epi32(-1);
  const __m256i up1 = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
  const __m256i up2 = _mm256_setr_epi32(0, 0, 0, 1, 2, 3, 4, 5);
  const __m256i keep1 = _mm256_setr_epi32(0, -1, -1, -1, -1, -1, -1, -1);
  const __m256i keep2 = _mm256_setr_epi32(0, 0, -1, -1, -1, -1, -1, -1);
  uint64_t pos = head + W;
  for (uint32_t w = 0; w < W; w += kChunkWords) {
    const uint32_t n = W - w < kChunkWords ? W - w : kChunkWords;
    const uint32_t part = part_bits(bytes, head, w, n);
    if (n < kChunkWords) {
      chunk_words<Bmi2Deposit>(bytes, &pos, part, w, n, r, out);
      continue;
    }
    const __m256i pm = _mm256_cmpeq_epi32(
        _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(part)), bit), bit);
    const __m256i k = _mm256_blendv_epi8(
        k32, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r.table + kNvar * W + w)), pm);
    __m256i incl = _mm256_add_epi32(k, _mm256_and_si256(_mm256_permutevar8x32_epi32(k, up1), keep1));
    incl = _mm256_add_epi32(incl,
                            _mm256_and_si256(_mm256_permutevar8x32_epi32(incl, up2), keep2));
    incl = _mm256_add_epi32(incl, _mm256_permute2x128_si256(incl, incl, 0x08));
    const uint32_t sum = static_cast<uint32_t>(_mm256_extract_epi32(incl, 7));
    const __m256i excl = _mm256_sub_epi32(incl, k);
    const __m256i base = _mm256_set1_epi64x(static_cast<long long>(pos));
    const __m128i lo = windows4(
        bytes, _mm256_add_epi64(base, _mm256_cvtepu32_epi64(_mm256_castsi256_si128(excl))));
    const __m128i hi = windows4(
        bytes, _mm256_add_epi64(base, _mm256_cvtepu32_epi64(_mm256_extracti128_si256(excl, 1))));
    const __m256i raw = _mm256_and_si256(
        _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1),
        _mm256_srlv_epi32(ones, _mm256_sub_epi32(k32, k)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + w),
                        _mm256_blendv_epi8(raw, deposit8(raw, r.table, W, w), pm));
    pos += sum;
  }
}

// The 128 payload bytes from byte `at` as two registers, bytes at or past
// payload_bytes read as zero (masked loads never touch them).
IBP_TARGET_AVX512 inline void load128(const uint8_t* bytes, uint64_t at, uint64_t payload_bytes,
                                      __m512i* src0, __m512i* src1) {
  const uint64_t left = payload_bytes - at;
  if (left >= 128) {
    *src0 = _mm512_loadu_si512(bytes + at);
    *src1 = _mm512_loadu_si512(bytes + at + 64);
  } else if (left >= 64) {
    *src0 = _mm512_loadu_si512(bytes + at);
    *src1 = _mm512_maskz_loadu_epi8(_cvtu64_mask64((uint64_t{1} << (left - 64)) - 1),
                                    bytes + at + 64);
  } else {
    *src0 = _mm512_maskz_loadu_epi8(_cvtu64_mask64((uint64_t{1} << left) - 1), bytes + at);
    *src1 = _mm512_setzero_si512();
  }
}

// The 32 bits from bit off[i] (< 96 + 32, counted from byte `at`) of each of
// 16 lanes: a byte permute of the 128 bytes from `at` (load128) to each
// lane's first byte and the next word, then a funnel shift by off & 7.
IBP_TARGET_AVX512 inline __m512i bits32_at(const uint8_t* bytes, uint64_t at,
                                           uint64_t payload_bytes, __m512i off) {
  const __m512i first_byte = _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0x00000000);
  const __m512i idx = _mm512_add_epi8(
      _mm512_shuffle_epi8(_mm512_srli_epi32(off, 3), first_byte), _mm512_set1_epi32(0x03020100));
  __m512i src0, src1;
  load128(bytes, at, payload_bytes, &src0, &src1);
  const __m512i wlo = _mm512_permutex2var_epi8(src0, idx, src1);
  const __m512i whi =
      _mm512_permutex2var_epi8(src0, _mm512_add_epi8(idx, _mm512_set1_epi8(4)), src1);
  return _mm512_shrdv_epi32(wlo, whi, _mm512_and_si512(off, _mm512_set1_epi32(7)));
}

// AVX-512: 16 words at a time, exceptions included, without a branch. The
// field widths k (nvar, or 32 for a word stored whole) give each field's bit
// offset o from the chunk's window: the program's offset plus an exclusive
// prefix sum over the lanes of 32 - nvar at the words stored whole. The
// window starts at the 32-bit word holding the chunk's first bit, so a field
// (at most 32 bits) lies in the window's words o / 32 and o / 32 + 1: two
// dword permutes (VPERMT2D) of the window's two 64-byte loads pick them and
// a funnel shift by o (VPSHRDVD, which takes o mod 32) extracts the field.
// Loads are masked at the payload's end (payload_bytes is a multiple of 4).
IBP_TARGET_AVX512 void ibp_row_avx512(const uint32_t* payload, uint64_t head,
                                      const DenseRow& r, uint32_t* out) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(payload);
  const uint32_t W = r.W;
  const uint32_t* t = r.table;
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
  const __m512i last = _mm512_set1_epi32(15);
  uint64_t pos = head + W;
  for (uint32_t w = 0, c = 0; w < W; w += 16, ++c) {
    const uint32_t n = W - w < 16 ? W - w : 16;
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    const __mmask16 part = static_cast<__mmask16>(part_bits(bytes, head, w, n));
    // Offsets: the program's, plus 32 - nvar for each earlier word stored
    // whole (a prefix sum over the lanes, taken whether or not there is
    // such a word: a branch on it mispredicts on random rows, a third of
    // reddit's chunks have such a word); the chunk's total is the program's
    // plus the sum's last lane, which depends on the participation bits and
    // the table only, so the next chunk's position waits for no load of
    // this one's fields.
    const __mmask16 whole = m & ~part;
    const __m512i low = _mm512_loadu_si512(r.low16 + w);
    __m512i excl = _mm512_loadu_si512(r.pre16 + w);
    uint32_t sum = r.total16[c];
    {
      const __m512i d = _mm512_maskz_lzcnt_epi32(whole, low);  // 32 - nvar
      __m512i incl = _mm512_add_epi32(d, _mm512_alignr_epi32(d, zero, 15));
      incl = _mm512_add_epi32(incl, _mm512_alignr_epi32(incl, zero, 14));
      incl = _mm512_add_epi32(incl, _mm512_alignr_epi32(incl, zero, 12));
      incl = _mm512_add_epi32(incl, _mm512_alignr_epi32(incl, zero, 8));
      excl = _mm512_add_epi32(excl, _mm512_sub_epi32(incl, d));
      sum += static_cast<uint32_t>(
          _mm_cvtsi128_si32(_mm512_castsi512_si128(_mm512_permutexvar_epi32(last, incl))));
    }
    const uint64_t at = (pos >> 5) << 2;
    const __m512i off = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(pos & 31)), excl);
    const __m512i idx = _mm512_srli_epi32(off, 5);
    __m512i src0, src1;
    load128(bytes, at, r.payload_bytes, &src0, &src1);
    const __m512i lo = _mm512_permutex2var_epi32(src0, idx, src1);
    const __m512i hi = _mm512_permutex2var_epi32(src0, _mm512_add_epi32(idx, one), src1);
    // raw: the 32 bits at each field (a word stored whole as it is).
    const __m512i raw = _mm512_shrdv_epi32(lo, hi, off);
    __m512i f = _mm512_and_si512(raw, low);
    if (r.dep16[c] == 2) {
      f = _mm512_or_si512(
          _mm512_and_si512(_mm512_sllv_epi32(f, _mm512_loadu_si512(r.sh1 + w)),
                           _mm512_loadu_si512(r.run1 + w)),
          _mm512_and_si512(_mm512_sllv_epi32(f, _mm512_loadu_si512(r.sh2 + w)),
                           _mm512_loadu_si512(r.run2 + w)));
    } else if (r.dep16[c]) {
#define IBP_STAGE(i)                                                                 \
  {                                                                                  \
    const __m512i d = _mm512_maskz_loadu_epi32(m, t + (kDep0 + i) * W + w);          \
    const __m512i s = _mm512_and_si512(f, d);                                        \
    f = _mm512_or_si512(_mm512_xor_si512(f, s), _mm512_slli_epi32(s, 1 << i));       \
  }
      IBP_STAGE(4) IBP_STAGE(3) IBP_STAGE(2) IBP_STAGE(1) IBP_STAGE(0)
#undef IBP_STAGE
    }
    f = _mm512_add_epi32(f, _mm512_maskz_loadu_epi32(m, t + kValue * W + w));
    _mm512_mask_storeu_epi32(out + w, m, _mm512_mask_mov_epi32(raw, part, f));
    pos += sum;
  }
}

inline bool cpu_has_avx2_kernel() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2");
}
inline bool cpu_has_avx512_kernel() {
  return cpu_has_avx2_kernel() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512vbmi") &&
         __builtin_cpu_supports("avx512vbmi2");
}
#else
inline bool cpu_has_avx2_kernel() { return false; }
inline bool cpu_has_avx512_kernel() { return false; }
#endif

}  // namespace ibp
