#include "subset.h"

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "coded.h"
#include "parallel.h"

namespace ibp {
namespace {

struct NoStore {
  void operator()(uint32_t, uint32_t) const {}
};

// Bits of a row's own encoding at `start` (its span less a kSectors gap):
// kRaw, kIbp and kCoded rows parsed; a kSparse row keeps its whole `span`.
uint64_t own_bits(const CompressedView& c, uint64_t start, uint64_t span) {
  const Geometry& geo = c.geo;
  const uint32_t W = geo.row_words;
  const uint32_t head = read_bits(c.payload, start, kModeBits + geo.group_bits);
  const uint32_t mode = head & low_mask(kModeBits), g = head >> kModeBits;
  const uint64_t body = start + kModeBits + geo.group_bits;
  uint64_t len = span;
  if (mode == static_cast<uint32_t>(RowMode::kRaw)) {
    len = raw_row_bits(W, geo.group_bits);
  } else if (mode == static_cast<uint32_t>(RowMode::kIbp)) {
    const uint32_t* nvar = c.table + static_cast<uint64_t>(g) * kDecodeRows * W + kNvar * W;
    len = kModeBits + geo.group_bits + W;
    for (uint32_t w0 = 0; w0 < W; w0 += 32) {
      const uint32_t chunk = W - w0 < 32 ? W - w0 : 32;
      const uint32_t bits = read_bits(c.payload, body + w0, chunk);
      for (uint32_t j = 0; j < chunk; ++j) len += (bits >> j) & 1u ? nvar[w0 + j] : 32;
    }
  } else if (mode == static_cast<uint32_t>(RowMode::kCoded) && geo.code_rows) {
    const uint32_t* codes = code_part(c.table, geo.num_groups, W, geo.code_rows, g);
    len = decode_coded(c.payload, body, codes, W, geo.code_rows, W, 1, NoStore{}) - start;
  }
  return len < span ? len : span;
}

// Bits of row r that a subset copies, from *start: its span, or with `trim`
// (a kSectors source) its own bits.
uint64_t span_of(const CompressedView& c, uint64_t r, uint64_t* start, bool trim = false) {
  const Geometry& g = c.geo;
  *start = row_start(c.bases, c.rel, g.rel_bytes, g.block_shift, r);
  const uint64_t span = row_end(c.bases, c.rel, g.rel_bytes, g.block_shift, g.rows, r) - *start;
  return trim ? own_bits(c, *start, span) : span;
}

// ORs the `len` bits at bit `from` of `src` into the zeroed stream `dst` at
// bit `to`. Words the span covers whole are stored; its first and last words
// may hold bits of neighbouring rows written by other threads, so they are
// ORed atomically.
void copy_bits(const uint32_t* src, uint64_t from, uint32_t* dst, uint64_t to, uint64_t len) {
  if (len == 0) return;
  const uint32_t lead = static_cast<uint32_t>(to & 31);
  if (lead) {  // up to the next word boundary of dst
    const uint64_t k = len < 32 - lead ? len : 32 - lead;
    __atomic_fetch_or(dst + (to >> 5), read_bits(src, from, static_cast<uint32_t>(k)) << lead,
                      __ATOMIC_RELAXED);
    from += k, to += k, len -= k;
  }
  uint32_t* d = dst + (to >> 5);
  for (; len >= 32; len -= 32, from += 32) *d++ = read_bits(src, from, 32);
  if (len) __atomic_fetch_or(d, read_bits(src, from, static_cast<uint32_t>(len)), __ATOMIC_RELAXED);
}

template <typename Rel>
void subset_slices(const CompressedView& c, const int64_t* rows, uint64_t n, uint64_t* bases,
                   Rel* rel, uint32_t* payload, uint64_t* mode_rows, int num_threads, bool trim) {
  const uint32_t shift = c.geo.block_shift;
  const uint64_t block = 1ull << shift;
  uint64_t t = num_threads < 1 ? 1 : static_cast<uint64_t>(num_threads);
  if (n * (c.geo.row_bytes + 16) < kMinParallelBytes) t = 1;
  // Slices of whole index blocks, so each block's base is written by one thread.
  const uint64_t blocks = (n + block - 1) >> shift;
  if (t > blocks) t = blocks ? blocks : 1;
  const uint64_t step = ((blocks + t - 1) / t) << shift;
  std::vector<uint64_t> bits(t + 1, 0);
  std::vector<uint64_t> modes(4 * t, 0);
  auto run = [&](auto&& fn) {
    std::vector<std::thread> pool;
    for (uint64_t k = 1; k < t; ++k) pool.emplace_back([&fn, k] { fn(k); });
    fn(0);
    for (auto& th : pool) th.join();
  };
  run([&](uint64_t k) {  // bits and modes of each slice
    const uint64_t a = std::min(n, k * step), b = std::min(n, a + step);
    uint64_t sum = 0, start = 0;
    for (uint64_t i = a; i < b; ++i) {
      sum += span_of(c, static_cast<uint64_t>(rows[i]), &start, trim);
      ++modes[4 * k + read_bits(c.payload, start, kModeBits)];
    }
    bits[k + 1] = sum;
  });
  for (uint64_t k = 0; k < t; ++k) bits[k + 1] += bits[k];
  // Partial words are ORed into zeros; the padding stays zero.
  std::memset(payload, 0, 4 * payload_words(bits[t]));
  run([&](uint64_t k) {
    const uint64_t a = std::min(n, k * step), b = std::min(n, a + step);
    uint64_t at = bits[k], start = 0;
    for (uint64_t i = a; i < b; ++i) {
      if ((i & (block - 1)) == 0) bases[i >> shift] = at;
      rel[i] = static_cast<Rel>(at - bases[i >> shift]);
      const uint64_t len = span_of(c, static_cast<uint64_t>(rows[i]), &start, trim);
      copy_bits(c.payload, start, payload, at, len);
      at += len;
    }
  });
  bases[blocks] = bits[t];
  for (uint64_t k = 0; k < t; ++k) {
    for (int m = 0; m < 4; ++m) mode_rows[m] += modes[4 * k + m];
  }
}

}  // namespace

void subset_row_bits(const CompressedView& c, const int64_t* rows, uint64_t n, bool trim,
                     uint64_t* out, int num_threads) {
  parallel_for(n, num_threads, n * (trim ? c.geo.row_bytes + 16 : 16), [&](uint64_t a, uint64_t b) {
    uint64_t start = 0;
    for (uint64_t i = a; i < b; ++i) out[i] = span_of(c, static_cast<uint64_t>(rows[i]), &start, trim);
  });
}

uint64_t subset_payload_bits(const CompressedView& c, const int64_t* rows, uint64_t n,
                             int num_threads, bool trim) {
  std::atomic<uint64_t> total{0};
  parallel_for(n, num_threads, n * (trim ? c.geo.row_bytes + 16 : 16), [&](uint64_t a, uint64_t b) {
    uint64_t sum = 0, start = 0;
    for (uint64_t i = a; i < b; ++i) sum += span_of(c, static_cast<uint64_t>(rows[i]), &start, trim);
    total.fetch_add(sum, std::memory_order_relaxed);
  });
  return total.load();
}

void subset(const CompressedView& c, const int64_t* rows, uint64_t n, uint64_t* bases,
            void* rel, uint32_t* payload, uint64_t* mode_rows, int num_threads, bool trim) {
  for (int m = 0; m < 4; ++m) mode_rows[m] = 0;
  if (c.geo.rel_bytes == 2) {
    subset_slices(c, rows, n, bases, static_cast<uint16_t*>(rel), payload, mode_rows,
                  num_threads, trim);
  } else {
    subset_slices(c, rows, n, bases, static_cast<uint32_t*>(rel), payload, mode_rows,
                  num_threads, trim);
  }
}

}  // namespace ibp
