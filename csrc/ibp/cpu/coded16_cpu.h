// AVX-512 decode of kCoded rows of 16-bit units (code_rows == 16: fp16,
// bf16): the same words as decode_coded_words.
//
// A row's units u = 2w + h (h = 0 the low half of word w) have their codes
// one after another in the code section; a ranked code is r one bits and a
// zero, an escape s one bits and nc raw bits. The row decodes in blocks of
// up to kBlock16 units in two passes:
//
// 1. Ranks. The code section is scanned ahead in 64-bit chunks, each chunk's
//    zero positions extracted at once (VPCOMPRESSB of the byte indices) and
//    stored modulo 256 in a byte buffer; the scan has no serial dependency
//    but the zero count. Without escapes, consecutive units end at
//    consecutive zeros, so the rank of the unit ending at zero i is the
//    difference of positions i and i - 1, less one: 64 units at a time are
//    one byte subtraction, one compare against the units' s (an escape reads
//    as a rank >= s) and a store. A difference of 256 or more (a zero-free
//    chunk between the two zeros) would wrap, so the scan, after a zero-free
//    chunk, shifts its positions to make that difference read 200 (any rank
//    >= 16 means "escape"). An escape's field has the zeros less than
//    s + nc + 1 bits past the position before it (counted from the positions,
//    one compare), which moves i to the next unit's zero; that unit's code
//    starts after the field, so the next step takes the escape's last bit as
//    its lane 0's position before. The escape's bit, for its field, is the
//    last escape's end plus the code bits since, summed per step (VPSADBW of
//    the position differences). Only once the scan has
//    shifted its positions is the unit after an escape (and each unit after
//    it until the next ranked one) read alone from its bit position.
// 2. Words, 16 (32 units) at a time. Each unit's symbol, slot 1 + r of its
//    code rows, comes from the bit planes of Coded16Program: plane b rotated
//    right by r (VPSHRDVW) has bit b of the symbol at bit lo + b of the unit,
//    put in place under that bit's mask (VPTERNLOG); escapes' fields are
//    blended in. When the 32 units share unit 0's (lo, nc) with nc >= 2 (a
//    float dtype's exponent: every unit but an odd row's padding; a
//    per-group flag of Coded16Program), the words' plain bits lie every
//    16 - nc bits per unit and come from one 64-byte load (Uniform16), whole
//    runs of such words at a time; otherwise the plain offsets come from the
//    offset row (two 64-byte loads masked at the payload's end, as in
//    coded_row_avx512) and each unit is rebuilt in its 16-bit lane with
//    variable shifts. Gathers of more than gather.cpp's kStreamMinBytes
//    write the uniform words with non-temporal stores.
//
// Reads: scan chunks past the row (they may run into later rows) are masked
// at the payload's end; the serial steps read 8 bytes from a bit inside the
// row's code section, like the scalar loop (the payload padding). A uniform
// run's 64-byte loads end inside the payload (else its words take the
// masked path). The planes are the group's, the offset row's and code rows'
// reads the group's code part.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../coded.h"
#include "dense.h"

namespace ibp {

// Per-group data of 16-bit kCoded rows derived from the decode table's code
// rows (no format change), built once per CpuGather like dense.h's
// DenseProgram: what coded16_row_avx512 would otherwise rebuild from the
// code rows for every row. sym[g * stride + u] is the s (ranked symbols) of
// unit u of group g, followed by 64 zero bytes past the last group (the rank
// pass reads 64 at a time); uniform[g * ustride + j] = 1 when every unit of
// words 16j .. 16j + 15 (those < row_words) has unit 0's (lo, nc).
// The ranked symbols as bit planes: plane b of unit u is the 16-bit truth
// table of bit b of its symbols by rank (bit r: bit b of slot 1 + r, r < s;
// 0 for b >= nc), rotated left by lo + b, so that rotating it right by a
// rank r puts the symbol's bit b at bit lo + b of the unit. Lane u % 32 of
// the 32 lanes plane_of(g, u / 32, b) (64-byte aligned; planes per 32 units:
// the largest nc of any unit). Empty when the tensor has no 16-bit code rows.
// Shifts a[0..3] such that x & x >> a0 & x >> (a0 + a1) ... has a bit set
// where x has a run of L ones (k += a per step, a <= k, from k = 1); a0 =
// kNoRun for L = 0 (a unit of no symbols: every code of it an escape). The
// AVX2 coded kernels' escape test (coded_cpu.h).
constexpr uint8_t kNoRun = 0xFF;
inline void run_shifts(uint32_t L, uint8_t* a) {
  for (uint32_t i = 0, k = 1; i < 4; ++i) {
    a[i] = static_cast<uint8_t>(std::min(k, L > k ? L - k : 0u));
    k += a[i];
  }
  if (!L) a[0] = kNoRun;
}

struct Coded16Program {
  uint32_t stride = 0, ustride = 0, planes = 0;
  std::vector<uint8_t> sym, uniform;
  // For the AVX2 kernel (coded16_row_fast_avx2), like Coded32Program's:
  // fast[g] = 1 when every unit of group g has unit 0's (lo, nc), its
  // symbols are below 256 and row_words is a multiple of 8; then bsym_of(g)
  // [16 u + r] is slot 1 + r of unit u (16 zero units past the last),
  // run_of(g)[4 b ..] the run shifts of units 16 b .. 16 b + 15
  // (Coded32Program::runs) and lo_nc[2 g ..] unit 0's lo, nc.
  std::vector<uint8_t> fast, bsym, runs;
  std::vector<uint32_t> lo_nc;
  std::vector<uint16_t> plane;
  size_t plane_at = 0;  // first element of group 0's planes (64-byte aligned)

  // build = false: left empty (ready() false), for calls of too few rows to
  // pay for it (gather_cpu).
  explicit Coded16Program(const CompressedView& c, bool build = true) {
    const uint32_t W = c.geo.row_words, G = c.geo.num_groups;
    if (c.geo.code_rows != 16 || !W || !build) return;
    stride = 2 * W;
    ustride = (W + 15) / 16;
    sym.assign(static_cast<size_t>(G) * stride + 64, 0);
    uniform.assign(static_cast<size_t>(G) * ustride, 1);
    for (uint32_t g = 0; g < G; ++g) {
      const uint32_t* codes = code_part(c.table, G, W, 16, g);
      for (uint32_t u = 0; u < 2 * W; ++u) {
        const uint32_t nc = code_unit(codes, W, 2, u).nc;
        planes = nc > planes ? nc : planes;
      }
    }
    plane.assign(static_cast<size_t>(G) * ustride * planes * 32 + 32, 0);
    plane_at = (64 - reinterpret_cast<uintptr_t>(plane.data()) % 64) % 64 / 2;
    for (uint32_t g = 0; g < G; ++g) {
      const uint32_t* codes = code_part(c.table, G, W, 16, g);
      const CodeUnit u0 = code_unit(codes, W, 2, 0);
      for (uint32_t u = 0; u < 2 * W; ++u) {
        const CodeUnit cu = code_unit(codes, W, 2, u);
        sym[static_cast<size_t>(g) * stride + u] = static_cast<uint8_t>(cu.s);
        if (cu.lo != u0.lo || cu.nc != u0.nc) {
          uniform[static_cast<size_t>(g) * ustride + u / 32] = 0;
        }
        uint16_t* pl = plane.data() + plane_at +
                       (static_cast<size_t>(g) * ustride + u / 32) * planes * 32 + u % 32;
        uint32_t t[kMaxCodeBits] = {};  // t[b]: bit b of the symbols by rank
        for (uint32_t r = 0; r < cu.s; ++r) {
          for (uint32_t v = code_slot(codes, W, 2, u, 1 + r); v; v &= v - 1) {
            t[ctz32(v)] |= 1u << r;  // (v < 2^nc: validated code rows)
          }
        }
        for (uint32_t b = 0; b < cu.nc; ++b) {
          const uint32_t rot = (cu.lo + b) & 15u;
          pl[b * 32] = static_cast<uint16_t>(t[b] << rot | t[b] >> ((16 - rot) & 15u));
        }
      }
    }
    if (W % 8) return;
    fast.assign(G, 1);
    bsym.assign(static_cast<size_t>(G) * 16 * (stride + 16), 0);
    runs.assign(static_cast<size_t>(G) * 4 * (stride / 16), 0);
    lo_nc.assign(2 * static_cast<size_t>(G), 0);
    for (uint32_t g = 0; g < G; ++g) {
      const uint32_t* codes = code_part(c.table, G, W, 16, g);
      const CodeUnit u0 = code_unit(codes, W, 2, 0);
      lo_nc[2 * g] = u0.lo;
      lo_nc[2 * g + 1] = u0.nc;
      // the plain fields one after another from the section's start, as the
      // offset row says (build_decode_table derives it from nc; the kernel
      // does not read it, so a decode table from elsewhere must agree)
      const uint32_t* offset = codes + 16 * W;
      for (uint32_t w = 0; w < W; ++w) fast[g] &= offset[w] == 2 * (16 - u0.nc) * w;
      uint8_t* bs = bsym.data() + static_cast<size_t>(g) * 16 * (stride + 16);
      for (uint32_t u = 0; u < 2 * W; ++u) {
        const CodeUnit cu = code_unit(codes, W, 2, u);
        if (cu.lo != u0.lo || cu.nc != u0.nc) fast[g] = 0;
        for (uint32_t r = 0; r < cu.s; ++r) {
          const uint32_t v = code_slot(codes, W, 2, u, 1 + r);
          if (v > 0xFF) fast[g] = 0;
          bs[16 * static_cast<size_t>(u) + r] = static_cast<uint8_t>(v);
        }
      }
      for (uint32_t b = 0; b < 2 * W / 16; ++b) {
        uint32_t L = 16;
        for (uint32_t u = 16 * b; u < 16 * b + 16; ++u) {
          L = std::min<uint32_t>(L, sym[static_cast<size_t>(g) * stride + u]);
        }
        run_shifts(L, runs.data() + (static_cast<size_t>(g) * (stride / 16) + b) * 4);
      }
    }
  }
  bool ready() const { return !sym.empty(); }
  bool fast_of(uint32_t g) const { return !fast.empty() && fast[g]; }
  const uint8_t* bsym_of(uint32_t g) const {
    return bsym.data() + static_cast<size_t>(g) * 16 * (stride + 16);
  }
  const uint8_t* run_of(uint32_t g) const {
    return runs.data() + static_cast<size_t>(g) * 4 * (stride / 16);
  }
  const uint8_t* sym_of(uint32_t g) const {
    return sym.data() + static_cast<size_t>(g) * stride;
  }
  const uint8_t* uniform_of(uint32_t g) const {
    return uniform.data() + static_cast<size_t>(g) * ustride;
  }
  // The planes of words 16j .. 16j + 15 of group g: planes x 32 uint16.
  const uint16_t* planes_of(uint32_t g, uint32_t j) const {
    return plane.data() + plane_at + (static_cast<size_t>(g) * ustride + j) * planes * 32;
  }
};

#if defined(IBP_X86_SIMD)

constexpr uint32_t kBlock16 = 512;     // units per block (256 words)
constexpr uint32_t kZeroCap16 = 2048;  // zero-position buffer bytes

// Producer of the zero positions (mod 256) of a bit stream from bit `start`
// on: pos[0] is the position of bit start - 1 (the virtual zero before the
// first code), pos[1 + j] that of the stream's zero j.
struct ZeroScan16 {
  const uint8_t* bytes;
  uint64_t payload_bytes;
  uint64_t at;         // byte of the next chunk
  uint64_t first;      // bits of the next chunk at or after the start
  __m512i base;        // position of the next chunk's bit 0, in every byte
  uint32_t count = 1;  // positions in the buffer
  bool empty = false;  // the last chunk had no zero
  bool shifted = false;  // positions shifted after a zero-free chunk (see chunk)

  IBP_TARGET_AVX512 ZeroScan16(const uint8_t* b, uint64_t pb, uint64_t start, uint8_t* pos)
      : bytes(b), payload_bytes(pb), at(start >> 3), first(~uint64_t{0} << (start & 7)),
        base(_mm512_setzero_si512()) {
    pos[0] = static_cast<uint8_t>((start & 7) + 255);
    chunk(pos);  // the first chunk (its bits before the start masked off)
  }

  // Chunks until the buffer holds `target` positions: whole chunks inside the
  // payload after one with a zero take the short path.
  IBP_TARGET_AVX512 void scan_to(uint8_t* pos, uint32_t target) {
    while (count < target) {
      if (__builtin_expect(!empty && at + 8 <= payload_bytes, 1)) {
        const uint64_t z = ~load_u64(bytes + at);
        at += 8;
        if (__builtin_expect(z != 0, 1)) {
          put(pos, z);
        } else {
          empty = true;
          base = _mm512_add_epi8(base, _mm512_set1_epi8(64));
        }
      } else {
        chunk(pos);
      }
    }
  }

  // The positions of the zeros z of the chunk at `base` appended.
  IBP_TARGET_AVX512 void put(uint8_t* pos, uint64_t z) {
    const __m512i iota8 = iota_epi8();
    const __m512i at_zero = _mm512_maskz_compress_epi8(_cvtu64_mask64(z), iota8);
    _mm512_storeu_si512(pos + count, _mm512_add_epi8(at_zero, base));
    base = _mm512_add_epi8(base, _mm512_set1_epi8(64));
    count += static_cast<uint32_t>(__builtin_popcountll(z));
  }

  // One chunk: the positions of its zeros appended at pos[count].
  IBP_TARGET_AVX512 void chunk(uint8_t* pos) {
    uint64_t raw;
    if (at < payload_bytes && payload_bytes - at >= 8) {
      raw = load_u64(bytes + at);
    } else {  // bytes at or past the payload's end read as zero
      const uint64_t left = at < payload_bytes ? payload_bytes - at : 0;
      raw = static_cast<uint64_t>(_mm_cvtsi128_si64(
          _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << left) - 1), bytes + at)));
    }
    // z = ~raw & first in a general register (BMI1 ANDN, which every AVX-512
    // CPU has): the compiler would use mask registers, whose port is busy
    uint64_t z;
    asm("andn %2, %1, %0" : "=r"(z) : "r"(raw), "r"(first));
    at += 8;
    first = ~uint64_t{0};
    if (__builtin_expect(!z, 0)) {
      empty = true;
      base = _mm512_add_epi8(base, _mm512_set1_epi8(64));
      return;
    }
    if (__builtin_expect(empty, 0)) {  // the first zero 201 past the last one
      empty = false;
      shifted = true;
      base = _mm512_set1_epi8(static_cast<char>(pos[count - 1] + 201 - __builtin_ctzll(z)));
    }
    put(pos, z);
  }
};

// Plane b (Coded16Program) rotated right by each lane's rank r (VPSHRDVW):
// the symbol's bit b at bit lo + b of the lane.
IBP_TARGET_AVX512 inline __m512i symbol_bit16(const uint16_t* planes, uint32_t b, __m512i r) {
  const __m512i t = _mm512_load_si512(planes + 32 * b);
  return _mm512_shrdv_epi16(t, t, r);
}

// The ranks of 32 units (bytes) in 16-bit lanes.
IBP_TARGET_AVX512 inline __m512i ranks16(const uint8_t* rank) {
  return _mm512_cvtepu8_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(rank)));
}

// What the words of uniform units (every unit (lo, nc) = (L, N), N >= 2)
// share in a row: unit k of 16 words has its 16 - N plain bits at bit
// o = k (16 - N) + sh of the words' plain bits from their first byte (sh < 8,
// the same for all such words of a row: 16 words' plain bits are
// 16 (32 - 2N) bits). Units 4q .. 4q + 3 have theirs in the 8 bytes from
// byte o(4q) / 8 (4 (16 - N) + 7 <= 63 bits), which one byte permute of the
// 64 bytes from the first (`window`) puts in qword q; VPMULTISHIFTQB then
// takes each unit's 16 bits from o (`plain`: bits [0, L) of the unit) and
// from o - N (`upper`: its bits [L + N, 16), the plain bits above the field;
// the bits it takes from before o, wrapped around the qword, land below
// L + N). Bits [L, L + N) are the symbol's.
struct Uniform16 {
  uint32_t L, N, sh = 8;  // sh: none yet
  __m512i m_lo, m_field, wL, window, plain, upper;
  __m512i bit[kMaxCodeBits];  // bit L + k of every lane, k < N

  IBP_TARGET_AVX512 explicit Uniform16(uint32_t desc0)
      : L((desc0 >> 4) & 31u), N((desc0 >> 9) & 31u),
        m_lo(_mm512_set1_epi16(static_cast<short>(low_mask(L)))),
        m_field(_mm512_set1_epi16(static_cast<short>(low_mask(N) << L))),
        wL(_mm512_set1_epi16(static_cast<short>(L))) {
    for (uint32_t k = 0; k < N && L + k < 16; ++k) {
      bit[k] = _mm512_set1_epi16(static_cast<short>(1u << (L + k)));
    }
  }
  IBP_TARGET_AVX512 void set_shift(uint32_t s) {
    if (s == sh) return;
    sh = s;
    const __m512i iota16 = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
                                            18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4,
                                            3, 2, 1, 0);
    const __m512i o = _mm512_add_epi16(  // each unit's offset
        _mm512_mullo_epi16(iota16, _mm512_set1_epi16(static_cast<short>(16 - N))),
        _mm512_set1_epi16(static_cast<short>(s)));
    // byte o(4q) / 8 of lane 4q in the lanes of its qword: the window's first
    const __m512i first = _mm512_srli_epi16(
        _mm512_permutexvar_epi16(_mm512_and_si512(iota16, _mm512_set1_epi16(~3)), o), 3);
    const __m512i rel = _mm512_sub_epi16(o, _mm512_slli_epi16(first, 3));  // o in the qword
    const __m512i two = _mm512_set1_epi16(0x0800);  // +8 in each lane's high byte
    plain = _mm512_add_epi16(_mm512_mullo_epi16(rel, _mm512_set1_epi16(0x0101)), two);
    upper = _mm512_and_si512(_mm512_sub_epi8(plain, _mm512_set1_epi8(static_cast<char>(N))),
                             _mm512_set1_epi8(63));
    // window byte 8q + j: byte first(q) + j (lanes 4q .. 4q + 3 hold first(q))
    const __m512i j8 = _mm512_set1_epi64(0x0706050403020100);
    window = _mm512_add_epi8(j8, _mm512_mullo_epi16(first, _mm512_set1_epi16(0x0101)));
  }
};

// Words 16t .. 16t + 15 of a run of `chunks` x 16 uniform words: plain bits
// from the 64 bytes at src + 4t (16 - N) (all inside the payload), ranks,
// escapes (bit k of esc[t]: unit 32t + k an escape, its field at
// field[32t + k]) and planes (plane_step apart) of the run's units from its
// first (kN: N when fixed, else 0).
template <uint32_t kN>
IBP_TARGET_AVX512 inline void uniform_words16(const Uniform16& c, const uint8_t* src,
                                              const uint8_t* rank, const uint32_t* esc,
                                              const uint16_t* field, const uint16_t* planes,
                                              uint32_t plane_step, uint32_t chunks,
                                              uint32_t* words, bool stream) {
  const uint32_t N = kN ? kN : c.N, step = 4 * (16 - N);
  // the row's constants in registers (the stores to `words` could alias c)
  const __m512i window = c.window, plain = c.plain, upper = c.upper, m_lo = c.m_lo;
  for (uint32_t t = 0; t < chunks; ++t) {
    const __m512i win = _mm512_permutexvar_epi8(window, _mm512_loadu_si512(src + t * step));
    __m512i word = _mm512_ternarylogic_epi32(m_lo, _mm512_multishift_epi64_epi8(plain, win),
                                             _mm512_multishift_epi64_epi8(upper, win), 0xCA);
    const __m512i r = ranks16(rank + 32 * t);
    for (uint32_t k = 0; k < N; ++k) {
      word = _mm512_ternarylogic_epi32(word, symbol_bit16(planes + t * plane_step, k, r), c.bit[k],
                                       0xD8);
    }
    const __mmask32 e = esc[t];
    if (__builtin_expect(e != 0, 0)) {  // escapes: their fields at [L, L + N)
      const __m512i f = _mm512_sllv_epi16(_mm512_maskz_loadu_epi16(e, field + 32 * t), c.wL);
      word = _mm512_mask_mov_epi16(word, e, _mm512_ternarylogic_epi32(c.m_field, f, word, 0xCA));
    }
    if (stream) {  // (64-byte aligned)
      _mm512_stream_si512(reinterpret_cast<__m512i*>(words + 16 * t), word);
    } else {
      _mm512_storeu_si512(words + 16 * t, word);
    }
  }
}

IBP_TARGET_AVX512 inline void coded16_row_avx512(const uint32_t* p, uint64_t pos,
                                                 const uint32_t* codes, uint32_t W,
                                                 uint64_t payload_bytes, uint32_t* words,
                                                 const Coded16Program& prog, uint32_t g,
                                                 bool stream = false) {
  if (!W) return;
  // non-temporal stores of whole 64-byte lines only
  stream = stream && reinterpret_cast<uintptr_t>(words) % 64 == 0;
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(p);
  const uint32_t* offset = codes + 16 * W;
  const uint64_t code_start = pos + offset[W - 1] + 32 - ((codes[W - 1] >> 9) & 31u) -
                              ((codes[8 * W + W - 1] >> 9) & 31u);
  const uint8_t* gsym = prog.sym_of(g);
  const uint8_t* guniform = prog.uniform_of(g);
  const uint16_t* gplanes = prog.planes_of(g, 0);
  const uint32_t plane_step = 32 * prog.planes;
  const __m512i k16 = _mm512_set1_epi32(16);
  const __m512i k31 = _mm512_set1_epi32(31);
  const __m512i ones = _mm512_set1_epi32(-1), w31 = _mm512_set1_epi16(31);
  const __m512i w1 = _mm512_set1_epi16(1), w16 = _mm512_set1_epi16(16);
  const __m512i one8 = _mm512_set1_epi8(1);
  // The uniform (lo, nc) = (L, N) of unit 0.
  Uniform16 uni(codes[0] & 0x3FF0u);
  const uint32_t N = uni.N;
  constexpr __mmask32 kHigh = 0xAAAAAAAAu;  // the h = 1 lanes of 16-bit lanes
  alignas(64) uint8_t zpos[kZeroCap16];
  alignas(64) uint8_t rank[kBlock16 + 64];    // each unit's rank (any value at escapes)
  alignas(64) uint16_t field[kBlock16 + 32];  // an escape's field
  uint32_t escapes[kBlock16 / 32];            // bit u % 32 of word u / 32: unit u an escape
  ZeroScan16 scan(bytes, payload_bytes, code_start, zpos);
  uint32_t i = 0;              // zero index of the next unit's code end; zpos[i] its last zero
  // The next unit's bit is bpos + the sum of the 8 counts in `bits` (the
  // code bits of the units ranked since; VPSADBW sums of each step's gaps).
  uint64_t bpos = code_start;
  __m512i bits = _mm512_setzero_si512();
  uint64_t b = code_start;     // the next unit's bit when `serial`
  bool serial = false;         // the next unit is read alone (after an escape)
  // Right after an escape (after = 1), the next unit's code starts after the
  // escape's field: its position before it is after_pos (mod 256).
  uint64_t after = 0;
  uint32_t after_pos = 0;
  for (uint32_t b0 = 0; b0 < W; b0 += kBlock16 / 2) {
    const uint32_t nbw = W - b0 < kBlock16 / 2 ? W - b0 : kBlock16 / 2, nb = 2 * nbw;
    const uint8_t* sym = gsym + 2 * b0;  // s of the block's units
    for (uint32_t& e : escapes) e = 0;
    // Pass 1: ranks.
    uint32_t u = 0;
    while (u < nb) {
      if (serial) {  // unit u starts at bit b, zero i is the first at or after b
        const uint32_t d = codes[8 * (u & 1u) * W + b0 + (u >> 1)];
        const uint32_t s = d & 15u, nc = (d >> 9) & 31u;
        const uint32_t t = static_cast<uint32_t>(load_u64(bytes + (b >> 3)) >> (b & 7));
        const uint32_t r = ctz32(~t | (1u << s));
        if (r < s) {
          rank[u] = static_cast<uint8_t>(r);
          b += r + 1;
          ++i;
          bpos = b;
          bits = _mm512_setzero_si512();
          serial = false;
        } else {
          const uint32_t f = field_at(bytes, b + s, nc);
          escapes[u / 32] |= 1u << (u % 32);
          field[u] = static_cast<uint16_t>(f);
          i += nc - static_cast<uint32_t>(__builtin_popcount(f));
          b += s + nc;
        }
        ++u;
        continue;
      }
      if (i >= scan.count) {
        // zero i - 1 not scanned (only right after serial steps: bpos the
        // next unit's bit): scan again from there
        scan = ZeroScan16(bytes, payload_bytes, bpos, zpos);
        i = 0;
      }
      // The zeros of the rest of the block (if it has no escapes) + 64,
      // scanned before they are read (a load of bytes just stored stalls).
      const uint32_t ahead = nb - u + 64;
      if (i + ahead + 65 > kZeroCap16) {  // room for a chunk past them: move the tail down
        const uint32_t keep = scan.count - i;
        for (uint32_t k = 0; k < keep; ++k) zpos[k] = zpos[i + k];
        scan.count = keep;
        i = 0;
      }
      scan.scan_to(zpos, i + 1 + ahead);
      if (__builtin_expect(after != 0 && scan.shifted, 0)) {
        // the unit after an escape may end at a shifted position: read it
        // alone (b: its bit, zero i the first at or after it)
        after = 0;
        serial = true;
        continue;
      }
      const uint32_t n = nb - u < 64 ? nb - u : 64;
      const __mmask64 valid = n == 64 ? ~__mmask64{0} : _cvtu64_mask64((uint64_t{1} << n) - 1);
      // the position before each unit's code: the previous unit's last zero,
      // or (lane 0 right after an escape) the escape's last bit
      const __m512i prev = _mm512_mask_mov_epi8(_mm512_loadu_si512(zpos + i),
                                                _cvtu64_mask64(after), _mm512_set1_epi8(
                                                    static_cast<char>(after_pos)));
      // each unit's code bits (rank + 1), 0 past the block
      const __m512i len = _mm512_maskz_sub_epi8(valid, _mm512_loadu_si512(zpos + i + 1), prev);
      const __m512i gap = _mm512_sub_epi8(len, one8);
      const uint64_t esc = _cvtmask64_u64(
          _mm512_mask_cmpge_epu8_mask(valid, gap, _mm512_loadu_si512(sym + u)));
      _mm512_storeu_si512(rank + u, gap);  // lanes from an escape on are rewritten
      if (__builtin_expect(!esc, 1)) {
        bits = _mm512_add_epi64(bits, _mm512_sad_epu8(len, _mm512_setzero_si512()));
        after = 0;
        u += n;
        i += n;
        continue;
      }
      const uint32_t k = static_cast<uint32_t>(__builtin_ctzll(esc));
      // Unit u + k is an escape, its code s + nc bits after position
      // `before`. The next unit starts after it and ends at the first zero
      // past the field's zeros (zeros i + k.. less than s + nc + 1 bits past
      // `before`); lane 0 of the next step takes its start. The escape's bit
      // follows from the code bits since bpos (only its field needs it).
      const uint32_t before = k == 0 && after ? after_pos : zpos[i + k];
      u += k;
      i += k;
      const uint32_t d = codes[8 * (u & 1u) * W + b0 + (u >> 1)];
      const uint32_t s = d & 15u, nc = (d >> 9) & 31u;
      const uint64_t inside = _cvtmask64_u64(_mm512_cmple_epu8_mask(
          _mm512_sub_epi8(_mm512_loadu_si512(zpos + i + 1),
                          _mm512_set1_epi8(static_cast<char>(before))),
          _mm512_set1_epi8(static_cast<char>(s + nc))));
      b = bpos + static_cast<uint64_t>(_mm512_reduce_add_epi64(_mm512_add_epi64(
                     bits, _mm512_sad_epu8(_mm512_maskz_mov_epi8(_cvtu64_mask64((uint64_t{1} << k) - 1), len),
                                           _mm512_setzero_si512()))));
      const uint32_t f = field_at(bytes, b + s, nc);
      escapes[u / 32] |= 1u << (u % 32);
      field[u] = static_cast<uint16_t>(f);
      i += static_cast<uint32_t>(__builtin_ctzll(~inside));
      ++u;
      b += s + nc;
      after = 1;
      after_pos = (before + s + nc) & 255u;
      bpos = b;
      bits = _mm512_setzero_si512();
    }
    // Pass 2: words, 16 (32 units) at a time: runs of uniform words (whose
    // 64-byte plain loads stay inside the payload) at once, other words alone.
    for (uint32_t x = 0; x < nbw;) {
      const uint32_t w0 = b0 + x, n = nbw - x < 16 ? nbw - x : 16;
      const uint16_t* planes = gplanes + (w0 / 16) * plane_step;
      const uint64_t base = pos + offset[w0], at = base >> 3;
      uint32_t run = 0;  // uniform 16-word chunks from w0 on
      if (N >= 2) {
        const uint32_t step = 4 * (16 - N);
        while (x + 16 * (run + 1) <= nbw && guniform[w0 / 16 + run] &&
               at + step * run + 64 <= payload_bytes) {
          ++run;
        }
      }
      if (__builtin_expect(run != 0, 1)) {
        uni.set_shift(static_cast<uint32_t>(base & 7));
        const uint8_t* src = bytes + at;
        if (N == 5) {  // fp16
          uniform_words16<5>(uni, src, rank + 2 * x, escapes + x / 16, field + 2 * x, planes,
                             plane_step, run, words + w0, stream);
        } else if (N == 8) {  // bf16
          uniform_words16<8>(uni, src, rank + 2 * x, escapes + x / 16, field + 2 * x, planes,
                             plane_step, run, words + w0, stream);
        } else {
          uniform_words16<0>(uni, src, rank + 2 * x, escapes + x / 16, field + 2 * x, planes,
                             plane_step, run, words + w0, stream);
        }
        x += 16 * run;
        continue;
      }
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const __m512i r = ranks16(rank + 2 * x);
      const __mmask32 e = escapes[x / 16];
      __m512i word;
      {
        // Per-unit (lo, nc): the plain offsets from the offset row, each unit
        // rebuilt in its 16-bit lane with variable shifts (plain bits: the
        // word's 32 - nc0 - nc1, h = 0's 16 - nc0 first).
        const __m512i off = _mm512_add_epi32(
            _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, offset + w0),
                             _mm512_set1_epi32(static_cast<int>(offset[w0]))),
            _mm512_set1_epi32(static_cast<int>(base & 7)));
        const __m512i pl = bits32_at(bytes, at, payload_bytes, off);
        const __m512i a0 = _mm512_maskz_loadu_epi32(m, codes + w0);
        const __m512i c0 = _mm512_maskz_loadu_epi32(m, codes + 8 * W + w0);
        const __m512i desc = _mm512_mask_blend_epi16(kHigh, a0, _mm512_slli_epi32(c0, 16));
        const __m512i lo = _mm512_and_si512(_mm512_srli_epi16(desc, 4), w31);
        const __m512i nc = _mm512_and_si512(_mm512_srli_epi16(desc, 9), w31);
        const __m512i nc0 = _mm512_and_si512(_mm512_srli_epi32(a0, 9), k31);
        const __m512i hi = _mm512_srlv_epi32(pl, _mm512_sub_epi32(k16, nc0));
        const __m512i plain =
            _mm512_and_si512(_mm512_mask_blend_epi16(kHigh, pl, _mm512_slli_epi32(hi, 16)),
                             _mm512_srlv_epi16(ones, nc));
        // unit = plain's low lo bits | (its symbol) << lo | the rest << (lo + nc)
        word = _mm512_or_si512(
            _mm512_andnot_si512(_mm512_sllv_epi16(ones, lo), plain),
            _mm512_sllv_epi16(_mm512_srlv_epi16(plain, lo), _mm512_add_epi16(lo, nc)));
        for (uint32_t k = 0; k < prog.planes; ++k) {  // bit lo + k of the lanes with nc > k
          const __m512i bk = _mm512_set1_epi16(static_cast<short>(k));
          const __m512i at_k = _mm512_maskz_sllv_epi16(_mm512_cmpgt_epu16_mask(nc, bk), w1,
                                                       _mm512_add_epi16(lo, bk));
          word = _mm512_ternarylogic_epi32(word, symbol_bit16(planes, k, r), at_k, 0xD8);
        }
        if (e) {
          const __m512i f = _mm512_sllv_epi16(_mm512_maskz_loadu_epi16(e, field + 2 * x), lo);
          const __m512i fm = _mm512_sllv_epi16(_mm512_srlv_epi16(ones, _mm512_sub_epi16(w16, nc)), lo);
          word = _mm512_mask_mov_epi16(word, e, _mm512_ternarylogic_epi32(fm, f, word, 0xCA));
        }
      }
      _mm512_mask_storeu_epi32(words + w0, m, word);
      x += 16;
    }
  }
}

#endif

}  // namespace ibp
