// CPU decode of kIbp rows (format.h): whole chunks of words at once.
//
// In a chunk whose words all participate, the field widths are those of the
// group (nvar), so each field's bit offset from the chunk's first field is
// fixed: DenseProgram precomputes it per group (`pre`) with the chunk's total
// (`total`). Such a chunk decodes with no per-word branch and no serial
// dependency between its words: scalar (portable deposit or BMI2 PDEP) and
// AVX2 (gathers of 64-bit windows) over 8-word chunks; a chunk with an
// exception, a word stored whole, takes the per-word path with a running bit
// position. AVX-512 VBMI2 decodes 16-word chunks, exceptions included, from
// two 64-byte loads, dword permutes and a funnel shift, the offsets of the
// words stored whole from one byte prefix sum per 64 words, and two rows at
// a time where it can (ibp_rows2_avx512). Every variant writes the same
// words: value + deposit(field, ~mask), or the field itself.
//
// Reads: a field at bit b is read as the 8 bytes from byte b / 8, inside the
// payload padding (format.h) since fields are at most 32 bits. The AVX-512
// chunk loads of 2 x 64 bytes are masked at the payload's end.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../gather.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define IBP_X86_SIMD 1
#include <immintrin.h>
#define IBP_TARGET_AVX2 __attribute__((target("avx2,bmi,bmi2,popcnt")))
#define IBP_TARGET_AVX512 \
  __attribute__((target("avx2,bmi2,avx512f,avx512bw,avx512vl,avx512cd,avx512vbmi,avx512vbmi2")))
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the CPU decoder reads the payload's words as a little-endian byte stream");

namespace ibp {

constexpr uint32_t kChunkWords = 8;

// What one kIbp row decode of the scalar and AVX2 kernels reads besides the
// payload.
struct DenseRow {
  const uint32_t* table;  // the group's decode table (bits.h layout)
  const uint32_t* pre;    // DenseProgram::pre of the group
  const uint32_t* total;  // DenseProgram::total of the group
  uint32_t W;
};

// Per group g, for word w in chunk c = w / 8: pre[g * padded + w] is the sum
// of nvar over the words of c before w; total[g * chunks + c] the sum over c.
// padded = chunks * 8; entries past row_words are 0 (the scalar and AVX2
// kernels).
//
// The AVX-512 kernel reads one block per group instead (at g * stride u32
// of `blk`, 64-byte aligned, so a row takes one pointer): per 64 words (a
// span), one record of kSpanU32 u32 (a last span of k < 4 chunks: of
// span_u32(k)), every part at a fixed offset from the record (what the
// kernel would otherwise derive from nvar in every chunk of every row); w
// below is a word of the span, c = w / 16 its 16-word chunk:
//   kGap8   (64 bytes) 32 - nvar[w]: how many bits a word stored whole adds
//           to the later fields' offsets;
//   kPre8   (64 bytes) the sum of nvar over the words before w in its 8
//           words (at most 7 * 32: a byte);
//   kTotal16 + c  the sum of nvar over chunk c;
//   kHalf16 + c   the sum of nvar over chunk c's first 8 words;
//   kDep16 + c    0 when every word's variable bits are its low nvar bits (no
//           deposit), 2 when every word of the chunk has its variable bits in
//           at most two runs: the deposit is then (f << sh1 & run1) |
//           (f << sh2 & run2) (runs as masks at their place in the word, sh:
//           how far the run's bits move up; 0 for no run), 5 operations
//           instead of the five stages' 20; else 1;
//   kAnyDep       the OR of the span's kDep16 entries: 0 when no chunk of the
//           span deposits (the pair kernel then drops the per-chunk test);
//   kChunk + kChunkU32 c + {kLow16, kValue16} + w % 16: the field mask,
//           the low nvar bits; the word's value (the table's, copied beside
//           them);
//   kChunk + kChunkU32 c + {kSh1, kRun1, kSh2, kRun2} + w % 16: those runs.
// Entries past row_words are 0.
constexpr uint32_t kGap8 = 0, kPre8 = 16, kTotal16 = 32, kHalf16 = 36, kDep16 = 40,
                   kAnyDep = 44, kChunk = 48, kLow16 = 0, kValue16 = 16, kSh1 = 32, kRun1 = 48,
                   kSh2 = 64, kRun2 = 80, kChunkU32 = 96;
constexpr uint32_t span_u32(uint32_t chunks) { return kChunk + kChunkU32 * chunks; }
constexpr uint32_t kSpanU32 = span_u32(4);
static_assert(kChunk % 16 == 0 && kChunkU32 % 16 == 0, "records keep 64-byte alignment");

struct DenseProgram {
  uint32_t chunks = 0, padded = 0, stride = 0;
  std::vector<uint32_t> pre, total;
  std::vector<uint32_t> blk_store;  // the AVX-512 blocks, from blk on
  const uint32_t* blk = nullptr;

  DenseRow row(const uint32_t* table, uint32_t g, uint32_t W) const {
    return {table, pre.data() + static_cast<size_t>(g) * padded,
            total.data() + static_cast<size_t>(g) * chunks, W};
  }
  const uint32_t* block(uint32_t g) const { return blk + static_cast<size_t>(g) * stride; }

  explicit DenseProgram(const CompressedView& c) {
    const uint32_t W = c.geo.row_words, G = c.geo.num_groups;
    chunks = (W + kChunkWords - 1) / kChunkWords;
    padded = chunks * kChunkWords;
    stride = W / 64 * kSpanU32 + (W % 64 ? span_u32((W % 64 + 15) / 16) : 0);
    pre.assign(static_cast<size_t>(G) * padded, 0);
    total.assign(static_cast<size_t>(G) * chunks, 0);
    blk_store.assign(static_cast<size_t>(G) * stride + 16, 0);
    uint32_t* base = blk_store.data();
    while (reinterpret_cast<uintptr_t>(base) % 64) ++base;
    blk = base;
    std::vector<uint8_t> many((W + 15) / 16);  // a chunk with a word of > 2 runs
    for (uint32_t g = 0; g < G; ++g) {
      const uint32_t* t = c.table + static_cast<uint64_t>(g) * kDecodeRows * W;
      const uint32_t* nvar = t + kNvar * W;
      std::fill(many.begin(), many.end(), 0);
      for (uint32_t w = 0; w < W; ++w) {
        uint32_t& a = total[static_cast<size_t>(g) * chunks + w / kChunkWords];
        pre[static_cast<size_t>(g) * padded + w] = a;
        a += nvar[w];
        uint32_t* span = base + static_cast<size_t>(g) * stride + w / 64 * kSpanU32;
        const uint32_t c16 = w % 64 / 16, j = w % 16;
        uint32_t* chunk = span + kChunk + kChunkU32 * c16;
        uint8_t* pre8 = reinterpret_cast<uint8_t*>(span + kPre8);
        pre8[w % 64] = static_cast<uint8_t>(w % 8 ? pre8[w % 64 - 1] + nvar[w - 1] : 0);
        span[kTotal16 + c16] += nvar[w];
        if (j < 8) span[kHalf16 + c16] += nvar[w];
        chunk[kLow16 + j] = nvar[w] ? ~uint32_t{0} >> (32 - nvar[w]) : 0;
        chunk[kValue16 + j] = t[kValue * W + w];
        reinterpret_cast<uint8_t*>(span + kGap8)[w % 64] = static_cast<uint8_t>(32 - nvar[w]);
        for (uint32_t i = 0; i < 5; ++i) span[kDep16 + c16] |= t[(kDep0 + i) * W + w] != 0;
        // The runs of set bits of the variable mask, lowest first.
        uint64_t vm = t[kVarMask * W + w];
        uint32_t src = 0, n = 0;
        while (vm) {
          const uint32_t lo = static_cast<uint32_t>(__builtin_ctzll(vm));
          const uint64_t from_lo = vm >> lo;
          const uint32_t len = static_cast<uint32_t>(__builtin_ctzll(~from_lo));
          const uint32_t mask = static_cast<uint32_t>(((uint64_t{1} << len) - 1) << lo);
          if (n < 2) {
            chunk[(n ? kSh2 : kSh1) + j] = lo - src;
            chunk[(n ? kRun2 : kRun1) + j] = mask;
          }
          ++n;
          src += len;
          vm &= ~uint64_t{mask};
        }
        many[w / 16] |= n > 2;
      }
      for (uint32_t c16 = 0; c16 < many.size(); ++c16) {
        uint32_t* span = base + static_cast<size_t>(g) * stride + c16 / 4 * kSpanU32;
        uint32_t& dep = span[kDep16 + c16 % 4];
        if (dep && !many[c16]) dep = 2;
        span[kAnyDep] |= dep;
      }
    }
  }
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
// Byte i = i (the bit positions a VPCOMPRESSB of a 64-bit mask lists).
IBP_TARGET_AVX512 inline __m512i iota_epi8() {
  return _mm512_set_epi8(63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46,
                         45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28,
                         27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10,
                         9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
}

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

// The participation bits of words [w, w + n), n <= 64, of the row whose
// bitmap starts at bit `head`. A full 64 bits are read as the 16 bytes from
// the first one's byte: inside the payload and its padding, since the
// bitmap ends at least 64 bits after that byte's first bit.
inline uint64_t part_bits64(const uint8_t* bytes, uint64_t head, uint32_t w, uint32_t n) {
  const uint64_t p = head + w;
  if (n == 64) {  // two shifts: a 128-bit shift compiled to a branch on counts >= 64
    const uint32_t sh = p & 7;
    return load_u64(bytes + (p >> 3)) >> sh | (load_u64(bytes + (p >> 3) + 8) << 1) << (63 - sh);
  }
  if (n <= 32) return field_at(bytes, p, n);
  return field_at(bytes, p, 32) | uint64_t{field_at(bytes, p + 32, n - 32)} << 32;
}

// AVX-512: 16 words at a time, exceptions included, without a branch. The
// field widths k (nvar, or 32 for a word stored whole) give each field's bit
// offset o from the chunk's window: the sum of nvar over its earlier words
// plus the sum of 32 - nvar (gap8) over those stored whole. Both are taken
// within 8 words, as bytes, once per 64 words (a span), whatever the
// participation bits: the gap8 bytes of the span's whole words in one
// register (a masked byte load), their exclusive prefix sum within each 8
// words by three shift-adds of the 64-bit lanes, plus the program's nvar
// sums (pre8): together at most 7 widths of at most 32 bits, 224, so no byte
// carries. The 8 words' gap totals come from VPSADBW (at most 256, 16 bits).
// A chunk's offsets are its 16 prefix bytes widened plus a start: p mod 512
// in its first 8 lanes, that plus its first 8 words' widths (program half
// total and gap total) in its last 8; the next chunk starts past the
// program's total plus the chunk's two gap totals, so no chunk waits for
// another's fields. (A prefix sum per chunk over 16 dword lanes took twice
// the operations: whole gathers of hot reddit rows 39 -> 36 ns a row; the
// program's offsets as 16 dwords per chunk, one more load and add per chunk,
// 0.93-0.99 of the time at 1024 reddit rows.)
// The window starts at the 64-byte line (of the payload) holding the chunk's
// first bit, so both loads are line-aligned: the window touches two lines,
// never three, and no load splits a line. (Starting at the 32-bit word
// holding the first bit: B/A of the aligned window 0.91-0.93 at 1024 reddit
// rows, 0.94-0.95 at 100k, ~1.00 on syn_papers; narrow rows 0.98-1.07, noise.)
// A chunk's fields take at most 16 x 32 = 512 bits and start at bit o <= 511
// of the window, so each field lies in its words o / 32 and o / 32 + 1 <= 31:
// two dword permutes (VPERMT2D) of the window's two 64-byte loads pick them
// and a funnel shift by o (VPSHRDVD, which takes o mod 32) extracts the
// field. Loads are masked at the payload's end (payload_bytes is a multiple
// of 4) in the rows near it only (avx512_inside), stores in a last chunk of
// under 16 words only.

// The five-stage deposit of bits.h for the 16 words from w (m: those < W),
// out of line: only chunks with a word of more than two runs of variable
// bits take it, and inlined it made every row set up its table addresses.
IBP_TARGET_AVX512 __attribute__((noinline)) inline __m512i deposit16_stages(
    __m512i f, const uint32_t* t, uint32_t W, uint32_t w, __mmask16 m) {
#define IBP_STAGE(i)                                                                 \
  {                                                                                  \
    const __m512i d = _mm512_maskz_loadu_epi32(m, t + (kDep0 + i) * W + w);          \
    const __m512i s = _mm512_and_si512(f, d);                                        \
    f = _mm512_or_si512(_mm512_xor_si512(f, s), _mm512_slli_epi32(s, 1 << i));       \
  }
  IBP_STAGE(4) IBP_STAGE(3) IBP_STAGE(2) IBP_STAGE(1) IBP_STAGE(0)
#undef IBP_STAGE
  return f;
}

struct Avx512Row {
  const uint8_t* bytes;
  const uint32_t* t;  // the group's decode table
  uint32_t W;
  uint64_t payload_bytes;
};

// Chunk C (0..3) of the span at w0 (record R): `ex` the span's prefix bytes,
// q its 8-word totals, part its participation bits; *pos the chunk's first
// field, advanced past the chunk. kInside: the window's 128 bytes are inside
// the payload (no load masks); kFull: the chunk has 16 words (no store mask);
// kNoDep: the chunk deposits nothing (R[kAnyDep] == 0, no kDep16 test).
template <uint32_t C, bool kInside, bool kFull, bool kNoDep = false>
IBP_TARGET_AVX512 __attribute__((always_inline)) inline void ibp_chunk16(
    const Avx512Row& r, const uint32_t* R, uint32_t w0, __m512i ex, const uint64_t* q,
    uint64_t part, uint64_t* pos, uint32_t* out) {
  const uint32_t w = w0 + 16 * C;
  const uint32_t n = kFull || r.W - w >= 16 ? 16 : r.W - w;
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
  const __mmask16 in = static_cast<__mmask16>(part >> (16 * C));
  const uint32_t* ch = R + kChunk + kChunkU32 * C;
  const __m128i eb = C == 0 ? _mm512_castsi512_si128(ex) : _mm512_extracti32x4_epi32(ex, C);
  // Each field's offset in its 8 words (eb) plus where those 8 words start
  // in the window: at bit p & 511, the last 8 past the first 8's fields.
  const uint64_t p = *pos;
  const uint32_t b = static_cast<uint32_t>(p & 511);
  const __m512i start = _mm512_mask_set1_epi32(
      _mm512_set1_epi32(static_cast<int>(b)), 0xFF00,
      static_cast<int>(b + R[kHalf16 + C] + static_cast<uint32_t>(q[2 * C])));
  __m512i off = _mm512_add_epi32(_mm512_cvtepu8_epi32(eb), start);
  const uint64_t at = (p >> 9) << 6;
  *pos = p + R[kTotal16 + C] + q[2 * C] + q[2 * C + 1];
  const __m512i idx = _mm512_srli_epi32(off, 5);
  __m512i src0, src1;
  if (kInside) {
    src0 = _mm512_loadu_si512(r.bytes + at);
    src1 = _mm512_loadu_si512(r.bytes + at + 64);
  } else {
    load128(r.bytes, at, r.payload_bytes, &src0, &src1);
  }
  const __m512i lo = _mm512_permutex2var_epi32(src0, idx, src1);
  const __m512i hi =
      _mm512_permutex2var_epi32(src0, _mm512_add_epi32(idx, _mm512_set1_epi32(1)), src1);
  // raw: the 32 bits at each field (a word stored whole as it is).
  const __m512i raw = _mm512_shrdv_epi32(lo, hi, off);
  __m512i f = _mm512_and_si512(raw, _mm512_load_si512(ch + kLow16));
  if constexpr (!kNoDep) {
    const uint32_t dep = R[kDep16 + C];
    if (dep == 2) {
      f = _mm512_or_si512(
          _mm512_and_si512(_mm512_sllv_epi32(f, _mm512_load_si512(ch + kSh1)),
                           _mm512_load_si512(ch + kRun1)),
          _mm512_and_si512(_mm512_sllv_epi32(f, _mm512_load_si512(ch + kSh2)),
                           _mm512_load_si512(ch + kRun2)));
    } else if (dep) {
      f = deposit16_stages(f, r.t, r.W, w, m);
    }
  }
  f = _mm512_add_epi32(f, _mm512_load_si512(ch + kValue16));
  if (kFull) {
    _mm512_storeu_si512(out + w, _mm512_mask_mov_epi32(raw, in, f));
  } else {
    _mm512_mask_storeu_epi32(out + w, m, _mm512_mask_mov_epi32(raw, in, f));
  }
}

// What the chunks of a span share: its participation bits, the prefix
// bytes `ex` and the 8-word totals q (kFull: n = 64).
struct Span64 {
  uint64_t part;
  __m512i ex;
  alignas(64) uint64_t q[8];
};

template <bool kFull>
IBP_TARGET_AVX512 __attribute__((always_inline)) inline void span64_prefix(
    const uint8_t* bytes, const uint32_t* R, uint64_t head, uint32_t w0, uint32_t n, Span64* s) {
  s->part = part_bits64(bytes, head, w0, kFull ? 64 : n);
  const uint64_t valid = kFull || n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
  const __m512i gap = _mm512_maskz_loadu_epi8(_cvtu64_mask64(valid & ~s->part), R + kGap8);
  // Byte i: the sum of gap over the whole words before it in its 8 words.
  __m512i ex = _mm512_slli_epi64(gap, 8);
  ex = _mm512_add_epi8(ex, _mm512_slli_epi64(ex, 8));
  ex = _mm512_add_epi8(ex, _mm512_slli_epi64(ex, 16));
  ex = _mm512_add_epi8(ex, _mm512_slli_epi64(ex, 32));
  // Plus the program's offsets in the 8 words: each field's offset from the
  // first field of its 8 words (7 widths of at most 32 bits: a byte).
  s->ex = _mm512_add_epi8(ex, _mm512_load_si512(R + kPre8));
  _mm512_store_si512(s->q, _mm512_sad_epu8(gap, _mm512_setzero_si512()));
}

// The span of n words (n <= 64) at w0, record R; kInside: every chunk window
// inside the payload; kFull: n = 64.
template <bool kInside, bool kFull>
IBP_TARGET_AVX512 __attribute__((always_inline)) inline void ibp_span64(
    const Avx512Row& r, const uint32_t* R, uint64_t head, uint32_t w0, uint32_t n,
    uint64_t* pos, uint32_t* out) {
  Span64 s;
  span64_prefix<kFull>(r.bytes, R, head, w0, n, &s);
  ibp_chunk16<0, kInside, kFull>(r, R, w0, s.ex, s.q, s.part, pos, out);
  if (kFull || n > 16) ibp_chunk16<1, kInside, kFull>(r, R, w0, s.ex, s.q, s.part, pos, out);
  if (kFull || n > 32) ibp_chunk16<2, kInside, kFull>(r, R, w0, s.ex, s.q, s.part, pos, out);
  if (kFull || n > 48) ibp_chunk16<3, kInside, kFull>(r, R, w0, s.ex, s.q, s.part, pos, out);
}

// Whether every window of a row at `head` lies inside the payload: they
// start before the row's last field's byte, at most (W + 32 W) / 8 bytes
// past its first byte; with 128 bytes more inside the payload, no window
// load needs a mask.
inline bool avx512_inside(uint64_t head, uint32_t W, uint64_t payload_bytes) {
  return payload_bytes - (head >> 3) >= 33ull * W / 8 + 136;
}

IBP_TARGET_AVX512 void ibp_row_avx512(const uint32_t* payload, uint64_t head, const uint32_t* t,
                                      const uint32_t* blk, uint32_t W, uint64_t payload_bytes,
                                      uint32_t* out) {
  const Avx512Row r{reinterpret_cast<const uint8_t*>(payload), t, W, payload_bytes};
  uint64_t pos = head + W;
  const bool inside = avx512_inside(head, W, payload_bytes);
  const uint32_t* R = blk;
  for (uint32_t w0 = 0; w0 < W; w0 += 64, R += kSpanU32) {
    const uint32_t n = W - w0 < 64 ? W - w0 : 64;
    if (!inside) {
      ibp_span64<false, false>(r, R, head, w0, n, &pos, out);
    } else if (n == 64) {
      ibp_span64<true, true>(r, R, head, w0, n, &pos, out);
    } else {
      ibp_span64<true, false>(r, R, head, w0, n, &pos, out);
    }
  }
}

// One of the two rows of ibp_rows2_avx512.
struct Avx512Pair {
  uint64_t head;        // the row's participation bitmap
  const uint32_t* t;    // its group's decode table
  const uint32_t* blk;  // its group's DenseProgram block
  uint32_t* out;
};

// The spans at w0 of rows a and b, chunk by chunk in turn.
template <bool kFull, bool kNoDep>
IBP_TARGET_AVX512 __attribute__((always_inline)) inline void ibp_span64_pair_as(
    const Avx512Row& ra, const Avx512Row& rb, const uint32_t* Ra, const uint32_t* Rb,
    const Avx512Pair& a, const Avx512Pair& b, uint32_t w0, uint32_t n, uint64_t* pa,
    uint64_t* pb) {
  Span64 sa, sb;
  span64_prefix<kFull>(ra.bytes, Ra, a.head, w0, n, &sa);
  span64_prefix<kFull>(rb.bytes, Rb, b.head, w0, n, &sb);
  ibp_chunk16<0, true, kFull, kNoDep>(ra, Ra, w0, sa.ex, sa.q, sa.part, pa, a.out);
  ibp_chunk16<0, true, kFull, kNoDep>(rb, Rb, w0, sb.ex, sb.q, sb.part, pb, b.out);
  if (kFull || n > 16) {
    ibp_chunk16<1, true, kFull, kNoDep>(ra, Ra, w0, sa.ex, sa.q, sa.part, pa, a.out);
    ibp_chunk16<1, true, kFull, kNoDep>(rb, Rb, w0, sb.ex, sb.q, sb.part, pb, b.out);
  }
  if (kFull || n > 32) {
    ibp_chunk16<2, true, kFull, kNoDep>(ra, Ra, w0, sa.ex, sa.q, sa.part, pa, a.out);
    ibp_chunk16<2, true, kFull, kNoDep>(rb, Rb, w0, sb.ex, sb.q, sb.part, pb, b.out);
  }
  if (kFull || n > 48) {
    ibp_chunk16<3, true, kFull, kNoDep>(ra, Ra, w0, sa.ex, sa.q, sa.part, pa, a.out);
    ibp_chunk16<3, true, kFull, kNoDep>(rb, Rb, w0, sb.ex, sb.q, sb.part, pb, b.out);
  }
}

// ibp_span64_pair, without the per-chunk deposit tests (a load and two
// branches each) where neither full span deposits (kAnyDep): reddit's
// 64-word rows, whose groups keep their variable bits low, ab_builds B/A
// 0.93 at 1024 rows, 0.97 at 100k; 1024 ids from 64 rows 23.0 -> 22.0 us.
template <bool kFull>
IBP_TARGET_AVX512 __attribute__((always_inline)) inline void ibp_span64_pair(
    const Avx512Row& ra, const Avx512Row& rb, const uint32_t* Ra, const uint32_t* Rb,
    const Avx512Pair& a, const Avx512Pair& b, uint32_t w0, uint32_t n, uint64_t* pa,
    uint64_t* pb) {
  if constexpr (kFull) {  // (a copy for the last, shorter span is not worth its code)
    if ((Ra[kAnyDep] | Rb[kAnyDep]) == 0) {
      ibp_span64_pair_as<true, true>(ra, rb, Ra, Rb, a, b, w0, n, pa, pb);
      return;
    }
  }
  ibp_span64_pair_as<kFull, false>(ra, rb, Ra, Rb, a, b, w0, n, pa, pb);
}

// Two kIbp rows at once, each as ibp_row_avx512 writes it: their chunks in
// turn give the out-of-order core a second row's independent work beside
// each dependent chain of the first (one row at a time, its scheduler filled
// up with one row's waiting operations: hot reddit rows 19.2 -> 17.1 ns a
// row). A row whose windows are not all inside the payload goes alone.
IBP_TARGET_AVX512 __attribute__((always_inline)) inline void ibp_rows2_avx512(
    const uint32_t* payload, uint32_t W, uint64_t payload_bytes, const Avx512Pair& a,
    const Avx512Pair& b) {
  if (!avx512_inside(a.head, W, payload_bytes) || !avx512_inside(b.head, W, payload_bytes)) {
    ibp_row_avx512(payload, a.head, a.t, a.blk, W, payload_bytes, a.out);
    ibp_row_avx512(payload, b.head, b.t, b.blk, W, payload_bytes, b.out);
    return;
  }
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(payload);
  const Avx512Row ra{bytes, a.t, W, payload_bytes}, rb{bytes, b.t, W, payload_bytes};
  uint64_t pa = a.head + W, pb = b.head + W;
  const uint32_t *Ra = a.blk, *Rb = b.blk;
  for (uint32_t w0 = 0; w0 < W; w0 += 64, Ra += kSpanU32, Rb += kSpanU32) {
    const uint32_t n = W - w0 < 64 ? W - w0 : 64;
    if (n == 64) {
      ibp_span64_pair<true>(ra, rb, Ra, Rb, a, b, w0, n, &pa, &pb);
    } else {
      ibp_span64_pair<false>(ra, rb, Ra, Rb, a, b, w0, n, &pa, &pb);
    }
  }
}

inline bool cpu_has_avx2_kernel() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
         __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
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
