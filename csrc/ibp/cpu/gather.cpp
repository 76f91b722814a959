#include "../gather.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "../coded.h"
#include "../parallel.h"

namespace ibp {
namespace {

// The shared five-stage deposit of bits.h: what the CUDA kernel runs.
struct PortableDeposit {
  static uint32_t word(uint32_t field, const uint32_t* table, uint32_t W, uint32_t w) {
    return decode_word(field, true, table, W, w);
  }
};

#if defined(__x86_64__)
// The same result from the BMI2 PDEP instruction, used only when the CPU has
// it. Inline assembly keeps the instruction out of every other function, so
// the module still runs on CPUs without BMI2.
struct Bmi2Deposit {
  static uint32_t word(uint32_t field, const uint32_t* table, uint32_t W, uint32_t w) {
    uint32_t out;
    asm("pdepl %2, %1, %0" : "=r"(out) : "r"(field), "r"(table[kVarMask * W + w]));
    return table[kValue * W + w] + out;
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

// Decodes row r into `words` (row_words words).
template <typename Deposit>
void decode_row(const CompressedView& c, uint64_t r, uint32_t* words) {
  const Geometry& geo = c.geo;
  const uint32_t W = geo.row_words;
  const uint64_t start = row_start(c.bases, c.rel, geo.rel_bytes, geo.block_shift, r);
  BitReader in(c.payload, start);
  const uint32_t mode = in.read(kModeBits);
  const uint32_t g = in.read(geo.group_bits);
  if (mode == static_cast<uint32_t>(RowMode::kRaw)) {
    const uint64_t head = start + kModeBits + geo.group_bits;
    for (uint32_t w = 0; w < W; ++w) words[w] = read_bits(c.payload, head + 32ull * w, 32);
    return;
  }
  const uint32_t* table = c.table + static_cast<uint64_t>(g) * kDecodeRows * W;
  if (mode == static_cast<uint32_t>(RowMode::kSparse)) {
    decode_sparse(c.payload, start + kModeBits + geo.group_bits, table, W, words);
    return;
  }
  if (mode == static_cast<uint32_t>(RowMode::kCoded) && geo.code_rows) {
    decode_coded_words(c.payload, start + kModeBits + geo.group_bits,
                       code_part(c.table, geo.num_groups, W, geo.code_rows, g), W, geo.code_rows,
                       words);
    return;
  }
  const uint32_t* nvar = table + kNvar * W;
  const uint64_t head = start + kModeBits + geo.group_bits;
  // Branch-free per word: a participating word's field has the fixed width
  // nvar[w] of its group, any other word 32 bits; both decodings are computed
  // and the participation bit selects one, so rows where every word
  // participates (the common dense row) and rows with exceptions run the same
  // straight-line code.
  const uint32_t* __restrict p = c.payload;
  uint32_t* __restrict out = words;
  uint64_t pos = head + W;
  for (uint32_t w0 = 0; w0 < W; w0 += 32) {
    const uint32_t chunk = W - w0 < 32 ? W - w0 : 32;
    const uint32_t bits = read_bits(p, head + w0, chunk);
    for (uint32_t j = 0; j < chunk; ++j) {
      const uint32_t w = w0 + j;
      const bool part = (bits >> j) & 1u;
      const uint32_t k = part ? nvar[w] : 32u;
      const uint64_t i = pos >> 5;
      const uint64_t window = static_cast<uint64_t>(p[i]) | (static_cast<uint64_t>(p[i + 1]) << 32);
      const uint32_t field =
          static_cast<uint32_t>((window >> (pos & 31)) & ((uint64_t{1} << k) - 1));
      const uint32_t word = Deposit::word(field, table, W, w);
      out[w] = part ? word : field;
      pos += k;
    }
  }
}

// Software prefetch: a random row costs three dependent cache misses (its
// relative offset, its block base, its payload bits) and a row's decode is
// too long for the CPU to run ahead into the next row by itself. So the index
// entries of row i + kIndexAhead and the payload lines of row i + kRowAhead
// are requested while row i decodes.
constexpr uint64_t kIndexAhead = 16;
constexpr uint64_t kRowAhead = 8;

inline void prefetch_index(const CompressedView& c, uint64_t r) {
  const Geometry& geo = c.geo;
  __builtin_prefetch(static_cast<const uint8_t*>(c.rel) + r * geo.rel_bytes);
  __builtin_prefetch(c.bases + (r >> geo.block_shift));
  __builtin_prefetch(c.bases + (r >> geo.block_shift) + 1);
}

inline void prefetch_row(const CompressedView& c, uint64_t r) {
  const Geometry& geo = c.geo;
  const uint64_t a = row_start(c.bases, c.rel, geo.rel_bytes, geo.block_shift, r) >> 9;
  const uint64_t b = row_end(c.bases, c.rel, geo.rel_bytes, geo.block_shift, geo.rows, r) >> 9;
  const uint8_t* p = reinterpret_cast<const uint8_t*>(c.payload);
  for (uint64_t line = a; line <= b; ++line) __builtin_prefetch(p + line * 64);
}

template <typename Deposit, typename Id>
void gather_rows(const CompressedView& c, const Id* ids, uint64_t n, uint8_t* out,
                 int num_threads) {
  const uint64_t row_bytes = c.geo.row_bytes;
  const bool aligned = row_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;
  parallel_for(n, num_threads, n * row_bytes, [&](uint64_t a, uint64_t b) {
    std::vector<uint32_t> words(c.geo.row_words);
    for (uint64_t i = a; i < b && i < a + kIndexAhead; ++i) {
      prefetch_index(c, static_cast<uint64_t>(ids[i]));
    }
    for (uint64_t i = a; i < b && i < a + kRowAhead; ++i) {
      prefetch_row(c, static_cast<uint64_t>(ids[i]));
    }
    for (uint64_t i = a; i < b; ++i) {
      if (i + kIndexAhead < b) prefetch_index(c, static_cast<uint64_t>(ids[i + kIndexAhead]));
      if (i + kRowAhead < b) prefetch_row(c, static_cast<uint64_t>(ids[i + kRowAhead]));
      uint8_t* dst = out + i * row_bytes;
      if (aligned) {
        decode_row<Deposit>(c, static_cast<uint64_t>(ids[i]), reinterpret_cast<uint32_t*>(dst));
      } else {
        decode_row<Deposit>(c, static_cast<uint64_t>(ids[i]), words.data());
        std::memcpy(dst, words.data(), row_bytes);
      }
    }
  });
}

template <typename Deposit>
void gather_any(const CompressedView& c, const void* ids, bool ids64, uint64_t n, uint8_t* out,
                int num_threads) {
  if (ids64) {
    gather_rows<Deposit>(c, static_cast<const int64_t*>(ids), n, out, num_threads);
  } else {
    gather_rows<Deposit>(c, static_cast<const int32_t*>(ids), n, out, num_threads);
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

int gather_threads(uint64_t n, uint64_t row_bytes, int num_threads) {
  const uint64_t work = n * row_bytes / kGatherBytesPerThread;
  if (num_threads < 1 || work < 2) return 1;
  return static_cast<int>(std::min<uint64_t>(work, static_cast<uint64_t>(num_threads)));
}

void gather_cpu(const CompressedView& c, const void* ids, bool ids64, uint64_t n, uint8_t* out,
                int num_threads, CpuKernel kernel) {
  num_threads = gather_threads(n, c.geo.row_bytes, num_threads);
#if defined(__x86_64__)
  if (kernel == CpuKernel::kBmi2 || (kernel == CpuKernel::kAuto && cpu_has_bmi2())) {
    gather_any<Bmi2Deposit>(c, ids, ids64, n, out, num_threads);
    return;
  }
#endif
  gather_any<PortableDeposit>(c, ids, ids64, n, out, num_threads);
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
