// Coded-form kSparse rows (format.h, version >= 4): the walk over a row's
// gaps and values shared by the CPU decoder, the CUDA kernel and the
// validator. A row's bits after its group id start with the fields of every
// kSparse row (c, d, form); d = c + 1 marks the coded form.
#pragma once

#include <cstdint>
#include <cstring>

#include "bits.h"
#include "coded.h"

namespace ibp {

// Whether the kSparse row whose bits after the group id start at `pos` has
// the coded form (d > c: a version-3 row never has it, validate() refuses it).
IBP_HD bool is_sparse_code(const uint32_t* p, uint64_t pos, uint32_t W) {
  const uint32_t cb = count_bits(W);
  return read_bits(p, pos + cb, cb) > read_bits(p, pos, cb);
}

// The fixed fields of a coded-form row.
struct SparseCodeHead {
  uint32_t count;  // c: listed words
  uint32_t dict;   // d, c + 1 in a well-formed row
  uint32_t form;   // 0 in a well-formed row
  uint32_t rice;   // k
  uint32_t hi;     // h
  uint32_t base;
  uint64_t body;   // first bit of the first listed word's gap

  IBP_HD SparseCodeHead(const uint32_t* p, uint64_t pos, uint32_t W) {
    const uint32_t cb = count_bits(W);
    count = read_bits(p, pos, cb);
    dict = read_bits(p, pos + cb, cb);
    form = read_bits(p, pos + 2 * cb, 1);
    const uint64_t at = pos + 2 * cb + 1;
    rice = read_bits(p, at, kSparseRiceBits);
    hi = read_bits(p, at + kSparseRiceBits, kSparseHiBits);
    base = read_bits(p, at + kSparseRiceBits + kSparseHiBits, hi);
    body = at + kSparseRiceBits + kSparseHiBits + hi;
  }
};

// Bits of the fixed fields of a coded-form row with h coded high bits.
IBP_HD uint64_t sparse_code_head_bits(uint32_t W, uint32_t h) {
  return 2ull * count_bits(W) + 1 + kSparseRiceBits + kSparseHiBits + h;
}

// Walks the coded-form row whose bits after the group id start at `pos`,
// calling store(i, w, word) for its i-th listed word, at position w. Every
// read starts at or before bit `end` (decoders of validated rows pass
// ~0ull), so it touches at most the word after the one holding `end`. Returns
// false, having stopped, when the row is malformed: d != c + 1, form != 0, a
// position at or past W, a coded high part outside h bits, or a field that
// starts past `end`. *stop receives the bit after the last field read.
template <typename Store>
IBP_HD bool walk_sparse_code(const uint32_t* p, uint64_t pos, uint64_t end, uint32_t W,
                             const Store& store, uint64_t* stop) {
  const SparseCodeHead s(p, pos, W);
  *stop = s.body;
  if (s.dict != s.count + 1 || s.form != 0 || s.count > W || s.body > end) return false;
  const uint32_t k = s.rice, h = s.hi, lo_bits = 32 - h;
  SectionReader in(p, s.body);
  auto at = [&]() { return 32 * in.next - in.avail; };
  uint64_t next = 0;  // the smallest position the next listed word may take
  bool ok = true;
  for (uint32_t i = 0; i < s.count && ok; ++i) {
    uint64_t q = 0;
    for (;;) {  // the unary quotient, up to 32 bits at a time
      if (at() > end || (q << k) >= W) {
        ok = false;
        break;
      }
      const uint32_t t = in.peek(32);
      const uint32_t ones = t == 0xFFFFFFFFu ? 32 : ctz32(~t);
      q += ones;
      if (ones < 32) {
        in.skip(ones + 1);
        break;
      }
      in.skip(32);
    }
    if (!ok || at() > end) {
      ok = false;
      break;
    }
    const uint64_t w = next + ((q << k) | in.read(k));
    if (w >= W) {
      ok = false;
      break;
    }
    uint32_t top = 0;
    if (h) {
      if (at() > end) {
        ok = false;
        break;
      }
      const uint32_t t = in.peek(kSparseEscape + 1);
      const uint32_t z = ctz32(~t | (1u << kSparseEscape));
      if (z < kSparseEscape) {
        in.skip(z + 1);
        const int64_t e = (z & 1u) ? -static_cast<int64_t>((z + 1) >> 1) : static_cast<int64_t>(z >> 1);
        const int64_t v = static_cast<int64_t>(s.base) + e;
        if (v < 0 || v > static_cast<int64_t>(low_mask(h))) {
          ok = false;
          break;
        }
        top = static_cast<uint32_t>(v);
      } else {
        in.skip(kSparseEscape);
        if (at() > end) {
          ok = false;
          break;
        }
        top = in.read(h);
      }
    }
    if (at() > end) {
      ok = false;
      break;
    }
    const uint32_t low = in.read(lo_bits);
    store(i, static_cast<uint32_t>(w), h ? (top << lo_bits) | low : low);
    next = w + 1;
  }
  *stop = at();
  return ok && *stop <= end;
}

// The whole coded-form row into `words` (row_words words): the group's
// values, then the listed words over them. `value` is the group's value row.
IBP_HD void decode_sparse_code_words(const uint32_t* p, uint64_t pos, const uint32_t* value,
                                     uint32_t W, uint32_t* words) {
  for (uint32_t w = 0; w < W; ++w) words[w] = value[w];
  uint64_t stop;
  walk_sparse_code(p, pos, ~0ull, W, [&](uint32_t, uint32_t w, uint32_t word) { words[w] = word; },
                   &stop);
}

#if !defined(__CUDA_ARCH__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
// The CPU decoder's decode_sparse_code_words for validated rows: the payload
// read as a little-endian byte stream, one unaligned 64-bit load (at least 57
// valid bits) for a word's gap code and value (a second one when the gap code
// is long); quotients too long for that are counted 32 bits at a time. Each load starts inside the row,
// so it stays inside the payload's padding. Same result as
// decode_sparse_code_words on every row validate() accepts.
inline uint64_t load_bits64(const uint32_t* p, uint64_t pos) {
  uint64_t v;
  std::memcpy(&v, reinterpret_cast<const uint8_t*>(p) + (pos >> 3), 8);
  return v >> (pos & 7);
}

inline void decode_sparse_code_host(const uint32_t* p, uint64_t pos, const uint32_t* value,
                                    uint32_t W, uint32_t* words) {
  std::memcpy(words, value, 4ull * W);
  const SparseCodeHead s(p, pos, W);
  const uint32_t k = s.rice, h = s.hi, lo_bits = 32 - h;
  const uint64_t kmask = low_mask(k), lomask = low_mask(lo_bits), hmask = low_mask(h);
  uint64_t at = s.body, next = 0;
  for (uint32_t i = 0; i < s.count; ++i) {
    uint64_t v = load_bits64(p, at);
    const uint32_t ones = ~v ? static_cast<uint32_t>(__builtin_ctzll(~v)) : 64;
    uint64_t gap;
    uint32_t used = 64;  // bits of v consumed by the gap code (64: v is spent)
    if (ones + 1 + k <= 56) {
      gap = (static_cast<uint64_t>(ones) << k) | ((v >> (ones + 1)) & kmask);
      used = ones + 1 + k;
      at += used;
    } else {
      uint64_t q = 0;
      for (uint32_t t = read_bits(p, at, 32); t == 0xFFFFFFFFu; t = read_bits(p, at, 32)) {
        q += 32;
        at += 32;
        if ((q << k) >= W) return;  // only in a row validate() refuses
      }
      const uint32_t o = ctz32(~read_bits(p, at, 32));
      q += o;
      at += o + 1;
      gap = (q << k) | read_bits(p, at, k);
      at += k;
    }
    const uint64_t w = next + gap;
    if (w >= W) return;  // only in a row validate() refuses
    // The value takes at most kSparseEscape + 32 bits: what is left of v's
    // 57 valid bits when the gap code was short, else a new load.
    v = used + kSparseEscape + 32 <= 57 ? v >> used : load_bits64(p, at);
    uint32_t word;
    if (h) {
      const uint32_t z = ctz32(~static_cast<uint32_t>(v) | (1u << kSparseEscape));
      uint32_t top;
      if (z < kSparseEscape) {
        top = (s.base + ((z >> 1) ^ (0u - (z & 1u)))) & static_cast<uint32_t>(hmask);
        v >>= z + 1;
        at += z + 1;
      } else {
        top = static_cast<uint32_t>(v >> kSparseEscape) & static_cast<uint32_t>(hmask);
        v >>= kSparseEscape + h;
        at += kSparseEscape + h;
      }
      word = top << lo_bits | static_cast<uint32_t>(v & lomask);
    } else {
      word = static_cast<uint32_t>(v);
    }
    at += lo_bits;
    words[w] = word;
    next = w + 1;
  }
}
#endif

}  // namespace ibp
