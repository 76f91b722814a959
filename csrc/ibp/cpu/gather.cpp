#include "../gather.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../coded.h"
#include "../parallel.h"
#include "../sparse_code.h"
#include "coded_cpu.h"
#include "dense.h"
#include "gather_cpu.h"
#include "sparse.h"

namespace ibp {
namespace {

// The shared five-stage deposit of bits.h: what the CUDA kernel runs.
struct PortableDeposit {
  static uint32_t word(uint32_t field, const uint32_t* table, uint32_t W, uint32_t w) {
    return decode_word(field, true, table, W, w);
  }
};

// The CPU kernels: how a kIbp row decodes (dense.h).
void decode_sparse(const uint32_t* p, uint64_t pos, const uint32_t* table, uint32_t W,
                   uint32_t* words);

// A kernel with kPairs also decodes two 32-bit kCoded rows at once
// (coded_rows2), with kIbpPairs two kIbp rows (ibp_rows2).
struct PortableKernel {  // the shared bits.h deposit, what the CUDA kernel runs
  static constexpr bool kPairs = false, kIbpPairs = false;
  static void ibp_row(const uint32_t* p, uint64_t head, const DenseProgram& prog,
                      const uint32_t* table, uint32_t g, uint32_t W, uint64_t /*payload_bytes*/,
                      uint32_t* out) {
    ibp_row_scalar<PortableDeposit>(p, head, prog.row(table, g, W), out);
  }
  static void sparse_row(const uint32_t* p, uint64_t pos, const uint32_t* table, uint32_t W,
                         uint32_t* words) {
    decode_sparse(p, pos, table, W, words);
  }
  static void coded_row(const uint32_t* p, uint64_t pos, const uint32_t* codes, uint32_t W,
                        uint32_t code_rows, uint64_t /*payload_bytes*/, uint32_t* words,
                        const Coded16Program& /*c16*/, const Coded32Program& /*c32*/,
                        uint32_t /*g*/, bool /*stream*/) {
    decode_coded_words(p, pos, codes, W, code_rows, words);
  }
};
#if defined(IBP_X86_SIMD)
// The same result from the BMI2 PDEP instruction, used only when the CPU has
// it. Inline assembly (and target attributes for the SIMD kernels) keeps the
// instructions out of every other function, so the module still runs on CPUs
// without them.
// Sparse and coded rows of the BMI2 and AVX2 kernels: the scalar x86 loops.
struct ScalarRows {
  static constexpr bool kPairs = false, kIbpPairs = false;
  static void sparse_row(const uint32_t* p, uint64_t pos, const uint32_t* table, uint32_t W,
                         uint32_t* words) {
    sparse_row_scalar(p, pos, table, W, words);
  }
  static void coded_row(const uint32_t* p, uint64_t pos, const uint32_t* codes, uint32_t W,
                        uint32_t code_rows, uint64_t /*payload_bytes*/, uint32_t* words,
                        const Coded16Program& /*c16*/, const Coded32Program& /*c32*/,
                        uint32_t /*g*/, bool /*stream*/) {
    coded_row_scalar(p, pos, codes, W, code_rows, words);
  }
};
struct Bmi2Kernel : ScalarRows {
  static void ibp_row(const uint32_t* p, uint64_t head, const DenseProgram& prog,
                      const uint32_t* table, uint32_t g, uint32_t W, uint64_t /*payload_bytes*/,
                      uint32_t* out) {
    ibp_row_scalar<Bmi2Deposit>(p, head, prog.row(table, g, W), out);
  }
};
struct Avx2Kernel : ScalarRows {
  static constexpr bool kPairs = true, kIbpPairs = false;
  static void ibp_row(const uint32_t* p, uint64_t head, const DenseProgram& prog,
                      const uint32_t* table, uint32_t g, uint32_t W, uint64_t /*payload_bytes*/,
                      uint32_t* out) {
    ibp_row_avx2(p, head, prog.row(table, g, W), out);
  }
  // kCoded rows of fast groups: coded32_rows_fast_avx2, coded16_row_fast_avx2.
  static void coded_row(const uint32_t* p, uint64_t pos, const uint32_t* codes, uint32_t W,
                        uint32_t code_rows, uint64_t payload_bytes, uint32_t* words,
                        const Coded16Program& c16, const Coded32Program& c32, uint32_t g,
                        bool stream) {
    if (code_rows == 16 && c16.fast_of(g) &&
        coded16_row_fast_avx2(reinterpret_cast<const uint8_t*>(p), W, payload_bytes, c16,
                              {pos, codes, g, words, stream})) {
      return;
    }
    if (code_rows == 8 && c32.fast_of(g) &&
        coded32_rows_fast_avx2<1>(reinterpret_cast<const uint8_t*>(p), W, payload_bytes, c32,
                                  {{pos, codes, g, words, stream}})) {
      return;
    }
    coded_row_scalar(p, pos, codes, W, code_rows, words);
  }
  // Two 32-bit kCoded rows of fast groups decoded together, as Avx512Kernel's.
  static bool coded_rows2(const uint32_t* p, uint32_t W, uint64_t payload_bytes,
                          const Coded32Program& c32, const Coded32Row& a, const Coded32Row& b) {
    return c32.fast_of(a.g) && c32.fast_of(b.g) &&
           coded32_rows_fast_avx2<2>(reinterpret_cast<const uint8_t*>(p), W, payload_bytes, c32,
                                     {a, b});
  }
};
struct Avx512Kernel {
  static constexpr bool kPairs = true, kIbpPairs = true;
  IBP_TARGET_AVX512 static void ibp_rows2(const uint32_t* p, uint32_t W, uint64_t payload_bytes,
                                           const Avx512Pair& a, const Avx512Pair& b) {
    ibp_rows2_avx512(p, W, payload_bytes, a, b);
  }
  static void ibp_row(const uint32_t* p, uint64_t head, const DenseProgram& prog,
                      const uint32_t* table, uint32_t g, uint32_t W, uint64_t payload_bytes,
                      uint32_t* out) {
    ibp_row_avx512(p, head, table, prog.block(g), W, payload_bytes, out);
  }
  static void sparse_row(const uint32_t* p, uint64_t pos, const uint32_t* table, uint32_t W,
                         uint32_t* words) {
    sparse_row_avx512(p, pos, table, W, words);
  }
  static void coded_row(const uint32_t* p, uint64_t pos, const uint32_t* codes, uint32_t W,
                        uint32_t code_rows, uint64_t payload_bytes, uint32_t* words,
                        const Coded16Program& c16, const Coded32Program& c32, uint32_t g,
                        bool stream) {
    coded_row_avx512(p, pos, codes, W, code_rows, payload_bytes, words,
                     c16.ready() ? &c16 : nullptr, g, stream, &c32);
  }
  // Two 32-bit kCoded rows of fast groups decoded together; false: neither
  // written (not both fast, or a row at the payload's end).
  static bool coded_rows2(const uint32_t* p, uint32_t W, uint64_t payload_bytes,
                          const Coded32Program& c32, const Coded32Row& a, const Coded32Row& b) {
    return c32.fast_of(a.g) && c32.fast_of(b.g) &&
           coded32_rows_fast<2>(reinterpret_cast<const uint8_t*>(p), W, payload_bytes, c32, {a, b});
  }
};
#endif

// A kSparse row: the group's values, then the listed words over them.
void decode_sparse(const uint32_t* p, uint64_t pos, const uint32_t* table, uint32_t W,
                   uint32_t* words) {
  const SparseRow s(p, pos, W);
  std::memcpy(words, table + kValue * W, 4ull * W);
  if (s.bitmap) {
    BitReader bitmap(p, s.where);
    uint32_t i = 0;
    for (uint32_t w0 = 0; w0 < W; w0 += 32) {
      const uint32_t chunk = W - w0 < 32 ? W - w0 : 32;
      for (uint32_t bits = bitmap.read(chunk); bits; bits &= bits - 1) {
        words[w0 + __builtin_ctz(bits)] = s.listed_value(p, i++);
      }
    }
  } else {
    BitReader where(p, s.where);
    for (uint32_t i = 0; i < s.count; ++i) words[where.read(s.pos_bits)] = s.listed_value(p, i);
  }
}

// Where row r starts and its mode and group.
struct RowHead {
  uint64_t start;
  uint32_t mode, g;
};
__attribute__((always_inline)) inline RowHead row_head(const CompressedView& c, uint64_t r) {
  const Geometry& geo = c.geo;
  const uint64_t start = row_start(c.bases, c.rel, geo.rel_bytes, geo.block_shift, r);
  const uint32_t head = field_at(reinterpret_cast<const uint8_t*>(c.payload), start,
                                 kModeBits + geo.group_bits);
  return {start, head & ((1u << kModeBits) - 1), head >> kModeBits};
}

// Decodes the row of head h into `words` (row_words words).
template <typename Kernel>
void decode_row(const CompressedView& c, const DenseProgram& prog, const Coded16Program& c16,
                const Coded32Program& c32, const RowHead& h, uint32_t* words,
                bool stream = false) {
  const Geometry& geo = c.geo;
  const uint32_t W = geo.row_words;
  const uint64_t start = h.start;
  const uint32_t mode = h.mode, g = h.g;
  if (mode == static_cast<uint32_t>(RowMode::kRaw)) {
    const uint64_t head = start + kModeBits + geo.group_bits;
    for (uint32_t w = 0; w < W; ++w) words[w] = read_bits(c.payload, head + 32ull * w, 32);
    return;
  }
  const uint32_t* table = c.table + static_cast<uint64_t>(g) * kDecodeRows * W;
  if (mode == static_cast<uint32_t>(RowMode::kSparse)) {
    const uint64_t at = start + kModeBits + geo.group_bits;
    // No listed word (either form): the group's values, without parsing the
    // rest (reddit: 11% of the rows, all-zero ones; 25 -> 12 ns a row).
    if (field_at(reinterpret_cast<const uint8_t*>(c.payload), at, count_bits(W)) == 0) {
      std::memcpy(words, table + kValue * W, 4ull * W);
      return;
    }
    if (is_sparse_code(c.payload, at, W)) {
      decode_sparse_code_host(c.payload, at, table + kValue * W, W, words);
    } else {
      Kernel::sparse_row(c.payload, at, table, W, words);
    }
    return;
  }
  if (mode == static_cast<uint32_t>(RowMode::kCoded) && geo.code_rows) {
    Kernel::coded_row(c.payload, start + kModeBits + geo.group_bits,
                      code_part(c.table, geo.num_groups, W, geo.code_rows, g), W, geo.code_rows,
                      4 * geo.payload_words, words, c16, c32, g, stream);
    return;
  }
  Kernel::ibp_row(c.payload, start + kModeBits + geo.group_bits, prog, table, g, W,
                  4 * geo.payload_words, words);
}

// Software prefetch: a random row costs three dependent cache misses (its
// relative offset, its block base, its payload bits) and a row's decode is
// too long for the CPU to run ahead into the next row by itself. So the index
// entries of row i + 2 * ahead and the payload lines of row i + ahead are
// requested while row i decodes, ahead = row_ahead(): kRowAheadDram rows for
// a payload larger than half the last-level cache, else kRowAheadCached
// (rows from that cache arrive sooner, and lines requested further ahead
// hold the core's line-fill buffers longer). Random 1024-row batches from
// payloads of 3-86 MB, ibp per row, 8 / 4 / 2 rows ahead (same-build A/B):
// 512-byte fp32 coded rows 106-112 / 95-102 / 97-99 ns, 1536-byte fp16 ones
// 470-490 (4) / 450-460 (2), reddit 2-8% faster at 2 than at 8; from a
// 1.7 GB payload, 4 rows ahead was 0-9% slower than 8.
constexpr uint64_t kRowAheadDram = 8;
constexpr uint64_t kRowAheadCached = 2;
// Payloads of at most this many bytes stay in the caches once read: their
// rows are not prefetched (what finding a row's lines costs is then wasted;
// tables of 40-112-byte rows ran 10% slower with it).
constexpr uint64_t kPrefetchMinBytes = 1ull << 20;
// Outputs of at least this many bytes go past this core's caches anyway: the
// coded kernels write them with non-temporal stores (no read of each output
// line before its write): 16-bit rows 1.2-1.3x faster at 100k 1536-byte rows;
// fast 32-bit ones (AVX-512 64-byte, AVX2 32-byte aligned outputs), 100k
// 512-byte rows, ab_builds B/A 0.87-0.90 (AVX-512) and 0.85-0.89 (AVX2 kernel).
constexpr uint64_t kStreamMinBytes = 16ull << 20;
// gather_cpu builds the coded rows' per-group programs (Coded16Program,
// Coded32Program) for calls of at least this many rows per group.
constexpr uint64_t kCodedProgramRows = 8;
// Output bytes of the rows a thread takes at a time (parallel_slices).
constexpr uint64_t kSliceBytes = 256ull << 10;

// A prefetch the compiler keeps: GCC deletes a loop whose only statements
// are __builtin_prefetch (it counts as no side effect, and C++ loops without
// one may be removed), which left prefetch_row below without any effect.
inline void prefetch_line(const void* p) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p);
#endif
}

inline void prefetch_index(const CompressedView& c, uint64_t r) {
  const Geometry& geo = c.geo;
  __builtin_prefetch(static_cast<const uint8_t*>(c.rel) + r * geo.rel_bytes);
  __builtin_prefetch(c.bases + (r >> geo.block_shift));
  __builtin_prefetch(c.bases + (r >> geo.block_shift) + 1);
}

// The payload lines of row r: `lines` lines from its first one (the
// average row's lines, prefetch_lines), the last of them at most
// `last` (the payload's last line). Not the row's own lines from its end:
// finding row_end (a second index entry, a branch at block ends) cost more
// than the lines it spared (reddit, 170-byte rows: 30 -> 27 ns a row).
// tail > 0: also the line of the row's byte tail (the average row's last
// byte), which `lines` miss when the row starts late in its first line;
// gather_rows sets it where such a miss is a DRAM round trip (SlicePlan).
__attribute__((always_inline)) inline void prefetch_row(const CompressedView& c, uint64_t r,
                                                       uint64_t lines, uint64_t last,
                                                       uint64_t tail) {
  const Geometry& geo = c.geo;
  const uint64_t start = row_start(c.bases, c.rel, geo.rel_bytes, geo.block_shift, r);
  const uint64_t a = std::min(start >> 9, last + 1 - lines);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(c.payload);
  for (uint64_t k = 0; k < lines; ++k) prefetch_line(p + (a + k) * 64);
  if (tail) prefetch_line(p + std::min((start >> 3) + tail, 64 * last));
}

// The rows between a row and the one whose lines are requested.
inline uint64_t row_ahead(const Geometry& geo) {
  static const uint64_t llc = [] {
    const long v = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
    return v > 0 ? static_cast<uint64_t>(v) : uint64_t{0};
  }();
  return 4 * geo.payload_words <= llc / 2 ? kRowAheadCached : kRowAheadDram;
}

// How many lines prefetch_row takes: the average row's, rounded up; at most
// kMaxPrefetchLines, and at most the payload's. (The average plus two, for
// rows that start late in their first line or run longer, was slower: the
// extra lines cost DRAM bandwidth and line-fill buffers for lines mostly
// not needed. B/A of this against that, ab_builds: syn_papers 0.94 at
// 1024 rows and 0.82-0.88 at 100k, reddit 0.96 / 0.95; rounding down
// instead of up: no difference.)
constexpr uint64_t kMaxPrefetchLines = 64;
inline uint64_t prefetch_lines(const Geometry& geo) {
  const uint64_t bytes = 4 * geo.payload_words;
  const uint64_t avg = geo.rows ? (bytes + geo.rows - 1) / geo.rows : 0;
  return std::min({(avg + 63) / 64, kMaxPrefetchLines, (bytes + 63) / 64});
}

// What every slice of one gather shares (gather_rows sets it).
template <typename Id>
struct SlicePlan {
  const CompressedView& c;
  const DenseProgram& prog;
  const Coded16Program& c16;
  const Coded32Program& c32;
  const Id* ids;
  uint8_t* out;
  uint64_t row_bytes;
  bool aligned;  // rows decode in place (whole 32-bit words at 4-byte aligned addresses)
  uint64_t ahead, index_ahead;  // rows ahead whose payload lines / index entries are requested
  bool rows_ahead;              // payload lines requested at all
  // prefetch_row's. tail: payloads read from DRAM (kRowAheadDram) into an
  // output that stays in the caches (< kStreamMinBytes) only: 1024-row
  // gathers from the 2 GB table B/A 0.949-0.958 (four ab_builds runs of
  // `--datasets large`); from cached payloads (reddit, 170-byte rows) 1.035,
  // and at 100k rows from the 2 GB table 1.02-1.04 (the bus busy with the
  // output's lines: the extra line is often not needed).
  uint64_t lines, last, tail;
  bool stream;                  // non-temporal stores (coded rows; kSparse rows by stream_copy)
};

// n bytes from src to dst, the 64-byte lines of dst that it covers whole by
// non-temporal stores (the caller fences), the rest by memcpy.
inline void stream_copy(uint8_t* dst, const void* src, uint64_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
#if defined(IBP_X86_SIMD)
  const uint64_t head = std::min<uint64_t>(n, (64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64);
  std::memcpy(dst, s, head);
  uint64_t k = head;
  for (; k + 64 <= n; k += 64) {
    for (uint64_t j = 0; j < 64; j += 16) {
      _mm_stream_si128(reinterpret_cast<__m128i*>(dst + k + j),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k + j)));
    }
  }
  std::memcpy(dst + k, s + k, n - k);
#else
  std::memcpy(dst, s, n);
#endif
}

// Rows [a, b) of a gather (a thread's slice).
template <typename Kernel, typename Id>
__attribute__((always_inline)) inline void slice_rows(const SlicePlan<Id>& plan, uint64_t a,
                                                      uint64_t b) {
  const CompressedView& c = plan.c;
  const DenseProgram& prog = plan.prog;
  const Coded16Program& c16 = plan.c16;
  const Coded32Program& c32 = plan.c32;
  const Id* ids = plan.ids;
  uint8_t* out = plan.out;
  const uint64_t row_bytes = plan.row_bytes, ahead = plan.ahead, index_ahead = plan.index_ahead;
  const uint64_t lines = plan.lines, last = plan.last, tail = plan.tail;
  const bool aligned = plan.aligned, rows_ahead = plan.rows_ahead, stream = plan.stream;
  std::vector<uint32_t> words(aligned && !stream ? 0 : c.geo.row_words);
  for (uint64_t i = a; i < b && i < a + index_ahead; ++i) {
    prefetch_index(c, static_cast<uint64_t>(ids[i]));
  }
  for (uint64_t i = a; rows_ahead && i < b && i < a + ahead; ++i) {
    prefetch_row(c, static_cast<uint64_t>(ids[i]), lines, last, tail);
  }
  uint64_t next = a;  // the next row whose turn to request rows ahead has not come
  for (uint64_t i = a; i < b; ++i) {
    // Rows i and i + 1 request the index entries of the rows index_ahead
    // later and the payload lines of those `ahead` later (the pair loop
    // steps two rows; a row decoded alone takes the second turn early).
    // Requests for 8 rows at once every 8 rows, as before (meant to overlap
    // the page walks of prefetches that miss the TLB), were slower on a
    // Zen 4 EPYC: ab_builds B/A of this against them 0.875-0.88 on the
    // 2 GB table at 1024 and 100k rows, syn_papers 0.98-0.99, and 4 at once
    // every 4 rows 1.02-1.04 against this (the core's line-fill buffers
    // full with one burst's lines).
    for (; next < b && next < i + 2; ++next) {
      if (next + index_ahead < b) prefetch_index(c, static_cast<uint64_t>(ids[next + index_ahead]));
      if (rows_ahead && next + ahead < b) {
        prefetch_row(c, static_cast<uint64_t>(ids[next + ahead]), lines, last, tail);
      }
    }
    uint8_t* dst = out + i * row_bytes;
    const RowHead h = row_head(c, static_cast<uint64_t>(ids[i]));
    if (stream && h.mode == static_cast<uint32_t>(RowMode::kSparse)) {
      // The value row and its listed words built in the cache, then streamed
      // out (no read of each output line before its write): 100k rows of
      // the bag-of-words and row-normalised tables, ab_builds B/A 0.41-0.66
      // (inj_amazon's 3 KB rows 0.875 and 1.35 in two runs).
      decode_row<Kernel>(c, prog, c16, c32, h, words.data());
      stream_copy(dst, words.data(), row_bytes);
      continue;
    }
    if (!aligned) {
      decode_row<Kernel>(c, prog, c16, c32, h, words.data());
      std::memcpy(dst, words.data(), row_bytes);
      continue;
    }
    uint32_t* row = reinterpret_cast<uint32_t*>(dst);
    if (!Kernel::kPairs || i + 1 == b) {
      decode_row<Kernel>(c, prog, c16, c32, h, row, stream);
      continue;
    }
    // Rows two at a time: two kIbp rows, or two 32-bit kCoded rows of fast
    // groups, decode together.
    const RowHead h2 = row_head(c, static_cast<uint64_t>(ids[i + 1]));
    uint32_t* row2 = row + row_bytes / 4;
    constexpr uint32_t kIbp = static_cast<uint32_t>(RowMode::kIbp);
    if constexpr (Kernel::kIbpPairs) {
      if (h.mode == kIbp && h2.mode == kIbp) {
        const uint32_t W = c.geo.row_words, hb = kModeBits + c.geo.group_bits;
        const auto table = [&](uint32_t g) {
          return c.table + static_cast<uint64_t>(g) * kDecodeRows * W;
        };
        Kernel::ibp_rows2(c.payload, W, 4 * c.geo.payload_words,
                          {h.start + hb, table(h.g), prog.block(h.g), row},
                          {h2.start + hb, table(h2.g), prog.block(h2.g), row2});
        ++i;
        continue;
      }
    }
    if constexpr (Kernel::kPairs) {
      constexpr uint32_t kCoded = static_cast<uint32_t>(RowMode::kCoded);
      if (h.mode == kCoded && h2.mode == kCoded && c.geo.code_rows == 8) {
        const uint32_t W = c.geo.row_words, hb = kModeBits + c.geo.group_bits;
        const auto codes = [&](uint32_t g) { return code_part(c.table, c.geo.num_groups, W, 8, g); };
        if (Kernel::coded_rows2(c.payload, W, 4 * c.geo.payload_words, c32,
                                {h.start + hb, codes(h.g), h.g, row, stream},
                                {h2.start + hb, codes(h2.g), h2.g, row2, stream})) {
          ++i;
          continue;
        }
      }
    }
    {
      decode_row<Kernel>(c, prog, c16, c32, h, row, stream);
      decode_row<Kernel>(c, prog, c16, c32, h2, row2, stream);
    }
    ++i;
  }
#if defined(IBP_X86_SIMD)
  if (stream) _mm_sfence();  // the slice's non-temporal stores before the caller's reads
#endif
}

// slice_rows compiled for the kernel's instructions. The AVX-512 one is
// flattened so that the pair decode inlines into the loop (an always_inline
// on Avx512Kernel::ibp_rows2 fails: slice_rows itself is not compiled for
// AVX-512); compiling the loop for AVX-512 alone left it a call, the pair's
// two records on the stack and every chunk reloading its out pointer from
// them. Rows decoded alone (decode_row) stay calls. 25 KB of code a loop;
// B/A reddit 0.96-0.975 (1024 rows), 0.958 (100k), the fp16 table 0.954,
// sparse tables and syn_papers unchanged (ab_builds).
template <typename Kernel, typename Id>
struct SliceRows {
  static void run(const SlicePlan<Id>& plan, uint64_t a, uint64_t b) {
    slice_rows<Kernel, Id>(plan, a, b);
  }
};
#if defined(IBP_X86_SIMD)
template <typename Id>
struct SliceRows<Avx512Kernel, Id> {
  IBP_TARGET_AVX512 __attribute__((flatten)) static void run(const SlicePlan<Id>& plan,
                                                              uint64_t a, uint64_t b) {
    slice_rows<Avx512Kernel, Id>(plan, a, b);
  }
};
#endif

template <typename Kernel, typename Id>
void gather_rows(const CompressedView& c, const DenseProgram& prog, const Coded16Program& c16,
                 const Coded32Program& c32, const Id* ids, uint64_t n, uint8_t* out,
                 int num_threads) {
  const uint64_t row_bytes = c.geo.row_bytes;
  const bool aligned = row_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;
  const uint64_t ahead = row_ahead(c.geo), index_ahead = 2 * ahead;
  const uint64_t grain = std::max<uint64_t>(ahead, kSliceBytes / std::max<uint64_t>(row_bytes, 1));
  const bool rows_ahead = 4 * c.geo.payload_words > kPrefetchMinBytes;
  const uint64_t lines = prefetch_lines(c.geo), last = (4 * c.geo.payload_words - 1) / 64;
  const uint64_t tail = ahead == kRowAheadDram && c.geo.rows && n * row_bytes < kStreamMinBytes
                            ? (4 * c.geo.payload_words + c.geo.rows - 1) / c.geo.rows - 1
                            : 0;
  const bool stream = aligned && n * row_bytes >= kStreamMinBytes;
  const SlicePlan<Id> plan{c,           prog,       c16,   c32,  ids,  out,   row_bytes, aligned,
                           ahead,       index_ahead, rows_ahead, lines, last, tail, stream};
  parallel_slices(n, num_threads, grain, [&](uint64_t a, uint64_t b) {
    SliceRows<Kernel, Id>::run(plan, a, b);
  });
}

template <typename Kernel>
void gather_any(const CompressedView& c, const DenseProgram& prog, const Coded16Program& c16,
                const Coded32Program& c32, const void* ids, bool ids64, uint64_t n, uint8_t* out,
                int num_threads) {
  if (ids64) {
    gather_rows<Kernel>(c, prog, c16, c32, static_cast<const int64_t*>(ids), n, out, num_threads);
  } else {
    gather_rows<Kernel>(c, prog, c16, c32, static_cast<const int32_t*>(ids), n, out, num_threads);
  }
}

}  // namespace

bool cpu_has_bmi2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("bmi2");
#else
  return false;
#endif
}

bool cpu_has_kernel(CpuKernel k) {
  switch (k) {
    case CpuKernel::kAuto:
    case CpuKernel::kPortable: return true;
    case CpuKernel::kBmi2: return cpu_has_bmi2();
    case CpuKernel::kAvx2: return cpu_has_avx2_kernel();
    case CpuKernel::kAvx512: return cpu_has_avx512_kernel();
  }
  return false;
}

CpuKernel auto_kernel() {
  static const CpuKernel k = [] {
    const char* env = std::getenv("IBP_CPU_KERNEL");
    const std::string want = env ? env : "";
    const char* names[] = {"auto", "portable", "bmi2", "avx2", "avx512"};
    for (int i = 1; i <= 4; ++i) {
      const auto c = static_cast<CpuKernel>(i);
      if (want == names[i] && cpu_has_kernel(c)) return c;
    }
    for (int i = 4; i >= 1; --i) {
      if (cpu_has_kernel(static_cast<CpuKernel>(i))) return static_cast<CpuKernel>(i);
    }
    return CpuKernel::kPortable;
  }();
  return k;
}

int gather_threads(uint64_t n, uint64_t row_bytes, int num_threads, uint64_t payload_bytes) {
  const uint64_t work_ns = n * (row_bytes * kOutputPs + payload_bytes * kPayloadPs) / 1000;
  const uint64_t t = work_ns / kGatherNsPerThread;
  if (num_threads < 1 || t < 2) return 1;
  return static_cast<int>(std::min<uint64_t>(t, static_cast<uint64_t>(num_threads)));
}

namespace {

void gather_with(const CompressedView& c, const DenseProgram& prog, const Coded16Program& c16,
                 const Coded32Program& c32, const void* ids, bool ids64, uint64_t n, uint8_t* out,
                 int num_threads, CpuKernel kernel) {
  const uint64_t payload_per_row =
      c.geo.rows ? (4 * c.geo.payload_words + c.geo.rows - 1) / c.geo.rows : 0;
  num_threads = gather_threads(n, c.geo.row_bytes, num_threads, payload_per_row);
  if (kernel == CpuKernel::kAuto || !cpu_has_kernel(kernel)) kernel = auto_kernel();
  switch (kernel) {
#if defined(IBP_X86_SIMD)
    case CpuKernel::kAvx512:
      return gather_any<Avx512Kernel>(c, prog, c16, c32, ids, ids64, n, out, num_threads);
    case CpuKernel::kAvx2:
      return gather_any<Avx2Kernel>(c, prog, c16, c32, ids, ids64, n, out, num_threads);
    case CpuKernel::kBmi2:
      return gather_any<Bmi2Kernel>(c, prog, c16, c32, ids, ids64, n, out, num_threads);
#endif
    default: return gather_any<PortableKernel>(c, prog, c16, c32, ids, ids64, n, out, num_threads);
  }
}

// A private copy of ids with the range checked on it, into `copy` (n ids;
// no value-initialisation: every entry is written).
template <typename Id>
__attribute__((always_inline)) inline bool copy_ids_body(const Id* ids, uint64_t n, uint64_t rows,
                                                         Id* copy) {
  uint64_t bad = 0;  // ids outside [0, rows): as unsigned, >= rows
  for (uint64_t i = 0; i < n; ++i) {
    const Id v = ids[i];
    copy[i] = v;
    bad |= static_cast<uint64_t>(static_cast<uint64_t>(static_cast<int64_t>(v)) >= rows);
  }
  return !bad;
}
// The same loop vectorised for AVX-512 (unsigned 64-bit compares). The
// baseline x86-64 build runs it one id at a time: 0.65 ns an id, with a
// zero-filled std::vector besides. A call that only copies (its last id out
// of range): 0.98 -> 0.39 us for 1024 ids, 65 -> 19 us for 100k.
#if defined(IBP_X86_SIMD)
template <typename Id>
IBP_TARGET_AVX512 bool copy_ids_avx512(const Id* ids, uint64_t n, uint64_t rows, Id* copy) {
  return copy_ids_body(ids, n, rows, copy);
}
#endif
template <typename Id>
bool copy_ids(const Id* ids, uint64_t n, uint64_t rows, Id* copy) {
#if defined(IBP_X86_SIMD)
  static const bool avx512 = cpu_has_avx512_kernel();
  if (avx512) return copy_ids_avx512(ids, n, rows, copy);
#endif
  return copy_ids_body(ids, n, rows, copy);
}

// Checks and copies the ids (copy_ids), then gathers from the copy.
template <typename Id>
int gather_checked(const CompressedView& c, const DenseProgram& prog, const Coded16Program& c16,
                   const Coded32Program& c32, const Id* ids, uint64_t n, uint8_t* out,
                   int num_threads, bool check_out, CpuKernel kernel) {
  std::unique_ptr<Id[]> copy(new Id[n]);
  if (!copy_ids(ids, n, c.geo.rows, copy.get())) return 1;
  if (check_out && !cpu_writable(out, n * c.geo.row_bytes)) return 2;
  gather_with(c, prog, c16, c32, copy.get(), sizeof(Id) == 8, n, out, num_threads, kernel);
  return 0;
}

}  // namespace

void gather_cpu(const CompressedView& c, const void* ids, bool ids64, uint64_t n, uint8_t* out,
                int num_threads, CpuKernel kernel) {
  const DenseProgram prog(c);
  // The 16-bit coded rows' program costs about what 10 rows per group gain
  // from it (without it they take the scalar loop, ~10x slower); the 32-bit
  // one spares a few % per row (without it: the code rows' blends).
  const bool programs = n >= kCodedProgramRows * c.geo.num_groups;
  const Coded16Program c16(c, programs);
  const Coded32Program c32(c, programs);
  gather_with(c, prog, c16, c32, ids, ids64, n, out, num_threads, kernel);
}

CpuGather::CpuGather(const CompressedView& c)
    : c_(c),
      prog_(new DenseProgram(c)),
      c16_(new Coded16Program(c)),
      c32_(new Coded32Program(c)) {}
CpuGather::~CpuGather() = default;

int CpuGather::gather(const void* ids, bool ids64, uint64_t n, uint8_t* out, int num_threads,
                      bool check_out, CpuKernel kernel) const {
  if (ids64) {
    return gather_checked(c_, *prog_, *c16_, *c32_, static_cast<const int64_t*>(ids), n, out,
                          num_threads, check_out, kernel);
  }
  return gather_checked(c_, *prog_, *c16_, *c32_, static_cast<const int32_t*>(ids), n, out,
                        num_threads, check_out, kernel);
}

bool cpu_writable(void* p, uint64_t bytes) {
  static const int fd = ::open("/dev/zero", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || !bytes) return true;
  // Both bytes in one call (a syscall costs ~0.2 us here, a tenth of a small
  // gather's fixed cost); after a short read or an error, each alone.
  iovec both[2] = {{p, 1}, {static_cast<uint8_t*>(p) + bytes - 1, 1}};
  if (::readv(fd, both, 2) == 2) return true;
  for (uint8_t* at : {static_cast<uint8_t*>(p), static_cast<uint8_t*>(p) + bytes - 1}) {
    iovec v{at, 1};
    if (::readv(fd, &v, 1) < 0 && errno == EFAULT) return false;
  }
  return true;
}

#if !defined(IBP_WITH_CUDA)
int gather_cuda(const CompressedView&, const void*, bool, uint64_t, const int64_t*, uint8_t*,
                void*) {
  return -1;
}
int host_register(void*, uint64_t, bool, uintptr_t*) { return -1; }
int host_unregister(void*) { return -1; }
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
#endif

}  // namespace ibp
