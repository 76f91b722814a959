// Table selection (select.h): each group's masks and values, frames of
// reference, and code rows, from sample rows.
#include "select.h"

#include <algorithm>
#include <array>
#include <vector>

#include "coded.h"
#include "host_rows.h"

namespace ibp {
namespace {

// Sorts v (n values) with an LSD radix sort on 11-bit digits; tmp holds n.
void radix_sort(uint32_t* v, uint32_t* tmp, uint64_t n) {
  constexpr uint32_t kDigit = 11, kBuckets = 1u << kDigit;
  uint64_t count[kBuckets];
  for (uint32_t shift = 0; shift < 32; shift += kDigit) {
    std::fill(count, count + kBuckets, 0);
    for (uint64_t i = 0; i < n; ++i) ++count[(v[i] >> shift) & (kBuckets - 1)];
    uint64_t sum = 0;
    for (uint32_t b = 0; b < kBuckets; ++b) {
      const uint64_t c = count[b];
      count[b] = sum;
      sum += c;
    }
    for (uint64_t i = 0; i < n; ++i) tmp[count[(v[i] >> shift) & (kBuckets - 1)]++] = v[i];
    std::swap_ranges(v, v + n, tmp);
  }
}

// For k = k0 .. k0 + K - 1, the most of the sorted values c2[0 .. 2n) (the
// n sample values, then again plus 2^32) that a window [c2[s], c2[s] + 2^k)
// holds, at most n, into most[k], and the first such s into start[k]. The
// windows are grown one value at a time: the best window so far, of b values,
// grows when the b + 1 values ending at hi fit; the first end that reaches
// the final b gives the first start, which is the first copy of its value.
// The K windows are independent chains of dependent loads, run together.
template <uint32_t K>
void frame_windows(const uint64_t* c2, uint64_t n, uint32_t k0, uint64_t* most, uint64_t* start) {
  uint64_t b[K], end[K], width[K];
  for (uint32_t i = 0; i < K; ++i) {
    b[i] = 1;
    end[i] = 0;
    width[i] = 1ull << (k0 + i);
  }
  for (uint64_t hi = 1; hi < 2 * n; ++hi) {
    const uint64_t top = c2[hi];
    for (uint32_t i = 0; i < K; ++i) {
      const bool grow = (b[i] < n) & (top - c2[hi - b[i]] < width[i]);
      b[i] += grow;
      end[i] = grow ? hi : end[i];
    }
  }
  for (uint32_t i = 0; i < K; ++i) {
    most[k0 + i] = b[i];
    start[k0 + i] = end[i] + 1 - b[i];
  }
}

// The same for a column of few distinct values: a window holding the most
// values starts at the first copy of a value, so the windows run over the d
// distinct values v[0 .. 2d) (doubled as c2) with ends[r] = values before run r.
void frame_runs(const uint64_t* v, const uint64_t* ends, uint64_t d, uint32_t kmax,
                uint64_t* most, uint64_t* start) {
  for (uint32_t k = 1; k <= kmax; ++k) {
    uint64_t hi = 0, m = 0, s = 0;
    for (uint64_t lo = 0; lo < d; ++lo) {
      if (hi < lo) hi = lo;
      while (hi < 2 * d && hi - lo < d && v[hi] - v[lo] < (1ull << k)) ++hi;
      if (ends[hi] - ends[lo] > m) {
        m = ends[hi] - ends[lo];
        s = lo;
      }
    }
    most[k] = m;
    start[k] = s;
  }
}

// Frame of reference for the words where it beats the invariance mask: the
// window [v, v + 2^k) (mod 2^32) holding the most sample values saves 32 - k
// bits for each of them. `saved[w]` holds what the mask already saves.
void choose_frame_of_reference(const uint8_t* x, uint64_t row_bytes, uint32_t row_words,
                               const uint64_t* sample, uint64_t n,
                               const std::vector<uint64_t>& saved, uint32_t* mask,
                               uint32_t* value) {
  constexpr uint32_t kBlock = 256;  // columns per pass over the sample
  constexpr uint32_t kChains = 8;
  std::vector<uint32_t> row(row_words), tmp(n);
  std::vector<std::vector<uint32_t>> cols;
  std::vector<uint64_t> c2(2 * n), run_value(2 * n), run_end(2 * n + 1);
  uint64_t most[32 + kChains], start[32 + kChains];
  for (uint32_t w0 = 0; w0 < row_words; w0 += kBlock) {
    const uint32_t nb = std::min(kBlock, row_words - w0);
    cols.assign(nb, std::vector<uint32_t>(n));
    for (uint64_t s = 0; s < n; ++s) {
      load_row(x + sample[s] * row_bytes, row_bytes, row_words, row.data());
      for (uint32_t j = 0; j < nb; ++j) cols[j][s] = row[w0 + j];
    }
    for (uint32_t j = 0; j < nb; ++j) {
      // A window of 2^k values saves at most (32 - k) bits per sample row;
      // k = 0 (one value) is an invariance mask already considered.
      uint64_t best = saved[w0 + j];
      uint32_t kmax = 0;  // the largest k that could beat the mask
      while (kmax + 1 < 32 && (32 - (kmax + 1)) * n > best) ++kmax;
      if (kmax == 0) continue;
      auto& c = cols[j];
      radix_sort(c.data(), tmp.data(), n);
      // The values again, shifted by 2^32, so windows may wrap past zero.
      for (uint64_t i = 0; i < n; ++i) {
        c2[i] = c[i];
        c2[n + i] = c[i] + (1ull << 32);
      }
      uint64_t d = 0;
      run_end[0] = 0;
      for (uint64_t i = 0; i < n; ++i) {
        if (i == 0 || c[i] != c[i - 1]) run_value[d++] = c[i];
        run_end[d] = i + 1;
      }
      const uint64_t* at = c2.data();  // where start[k] indexes
      if (4 * d <= n) {  // few distinct values: windows over them
        for (uint64_t r = 0; r < d; ++r) {
          run_value[d + r] = run_value[r] + (1ull << 32);
          run_end[d + r + 1] = n + run_end[r + 1];
        }
        frame_runs(run_value.data(), run_end.data(), d, kmax, most, start);
        at = run_value.data();
      } else {
        for (uint32_t k0 = 1; k0 <= kmax; k0 += kChains) {
          frame_windows<kChains>(c2.data(), n, k0, most, start);
        }
      }
      for (uint32_t k = 1; k < 32 && (32 - k) * n > best; ++k) {
        if ((32 - k) * most[k] > best) {
          best = (32 - k) * most[k];
          mask[w0 + j] = ~low_mask(k);
          value[w0 + j] = static_cast<uint32_t>(at[start[k]]);
        }
      }
    }
  }
}

}  // namespace

void select_masks(const uint8_t* x, uint64_t row_bytes, uint32_t row_words,
                  const uint64_t* sample, uint64_t n, Selector selector, uint32_t* mask,
                  uint32_t* value, bool frames) {
  std::fill(mask, mask + row_words, 0u);
  std::fill(value, value + row_words, 0u);
  if (n == 0 || row_words == 0) return;
  std::vector<uint32_t> row(row_words);

  // Pass 1: how often each bit of each word is set, counted in byte lanes
  // (lanes[4 w + j] byte i: bit 8 j + i of word w; spread[v] byte i: bit i of
  // v), emptied into `ones` every 255 rows.
  static const std::array<uint64_t, 256> spread = [] {
    std::array<uint64_t, 256> t{};
    for (uint32_t v = 0; v < 256; ++v) {
      for (uint32_t i = 0; i < 8; ++i) t[v] |= static_cast<uint64_t>((v >> i) & 1u) << (8 * i);
    }
    return t;
  }();
  std::vector<uint64_t> ones(static_cast<size_t>(row_words) * 32, 0);
  std::vector<uint64_t> lanes(static_cast<size_t>(row_words) * 4, 0);
  for (uint64_t s = 0; s < n; ++s) {
    load_row(x + sample[s] * row_bytes, row_bytes, row_words, row.data());
    for (uint32_t w = 0; w < row_words; ++w) {
      const uint32_t v = row[w];
      if (!v) continue;
      uint64_t* l = lanes.data() + 4 * static_cast<size_t>(w);
      l[0] += spread[v & 255u];
      l[1] += spread[(v >> 8) & 255u];
      l[2] += spread[(v >> 16) & 255u];
      l[3] += spread[v >> 24];
    }
    if (s % 255 == 254 || s + 1 == n) {
      for (size_t j = 0; j < lanes.size(); ++j) {
        if (!lanes[j]) continue;
        for (uint32_t i = 0; i < 8; ++i) ones[8 * j + i] += (lanes[j] >> (8 * i)) & 255u;
        lanes[j] = 0;
      }
    }
  }

  // Rank the bits of each word by their majority share, most invariant first.
  std::vector<uint32_t> majority(row_words, 0);
  std::vector<std::array<uint8_t, 32>> rank(row_words), order(row_words);
  std::vector<std::array<uint64_t, 32>> share(row_words);
  for (uint32_t w = 0; w < row_words; ++w) {
    for (uint32_t b = 0; b < 32; ++b) {
      const uint64_t c = ones[w * 32 + b];
      if (2 * c > n) majority[w] |= 1u << b;
      share[w][b] = std::max(c, n - c);
      order[w][b] = static_cast<uint8_t>(b);
    }
    std::stable_sort(order[w].begin(), order[w].end(),
                     [&](uint8_t a, uint8_t b) { return share[w][a] > share[w][b]; });
    for (uint32_t k = 0; k < 32; ++k) rank[w][order[w][k]] = static_cast<uint8_t>(k);
  }

  // Pass 2: for each row, the rank of its first bit that differs from the
  // majority; the row matches every prefix mask shorter than that.
  std::vector<std::array<uint64_t, 33>> first_diff(row_words);
  for (auto& h : first_diff) h.fill(0);
  // With many rows, per word and byte the least rank of the bits set in each
  // byte value (least[w][j][v], 32 for none; built for a word when one of
  // its rows first differs) replaces the walk over the bits.
  constexpr uint64_t kLeastRows = 512, kLeastBytes = 16ull << 20;
  const bool by_byte = n >= kLeastRows && 1024ull * row_words <= kLeastBytes;
  std::vector<uint8_t> least(by_byte ? 1024ull * row_words : 0);
  std::vector<uint8_t> built(by_byte ? row_words : 0, 0);
  for (uint64_t s = 0; s < n; ++s) {
    load_row(x + sample[s] * row_bytes, row_bytes, row_words, row.data());
    for (uint32_t w = 0; w < row_words; ++w) {
      const uint32_t d = row[w] ^ majority[w];
      uint32_t r = 32;
      if (by_byte) {
        if (d) {
          uint8_t* t = least.data() + 1024ull * w;
          if (!built[w]) {
            built[w] = 1;
            for (uint32_t j = 0; j < 4; ++j) {
              uint8_t* tj = t + 256 * j;
              tj[0] = 32;
              for (uint32_t v = 1; v < 256; ++v) {
                tj[v] = std::min<uint8_t>(tj[v & (v - 1)], rank[w][8 * j + __builtin_ctz(v)]);
              }
            }
          }
          r = std::min(std::min(t[d & 255u], t[256 + ((d >> 8) & 255u)]),
                       std::min(t[512 + ((d >> 16) & 255u)], t[768 + (d >> 24)]));
        }
      } else {
        for (uint32_t e = d; e; e &= e - 1) r = std::min<uint32_t>(r, rank[w][__builtin_ctz(e)]);
      }
      ++first_diff[w][r];
    }
  }
  // matches[w][k]: rows matching the top-k prefix of word w.
  std::vector<std::array<uint64_t, 33>> matches(row_words);
  for (uint32_t w = 0; w < row_words; ++w) {
    uint64_t acc = 0;
    for (int k = 32; k >= 0; --k) {
      acc += first_diff[w][k];
      matches[w][k] = acc;
    }
  }

  // Bits saved by the top-k prefix: k per matching row (a row that does not
  // match costs 32 bits either way).
  std::vector<uint32_t> keep(row_words, 0);
  std::vector<uint64_t> ibp_saved(row_words, 0);
  if (selector == Selector::kPaper) {
    uint64_t best_saved = 0;
    std::vector<uint32_t> ks(row_words);
    bool first = true;
    for (uint32_t t = 70; t <= 100; ++t) {
      uint64_t saved = 0;
      for (uint32_t w = 0; w < row_words; ++w) {
        uint32_t k = 0;
        while (k < 32 && share[w][order[w][k]] * 100 >= static_cast<uint64_t>(t) * n) ++k;
        ks[w] = k;
        saved += k * matches[w][k];
      }
      if (first || saved > best_saved) {
        best_saved = saved;
        keep = ks;
        first = false;
      }
    }
  } else {
    for (uint32_t w = 0; w < row_words; ++w) {
      uint64_t best = 0;
      for (uint32_t k = 1; k <= 32; ++k) {
        if (k * matches[w][k] >= best) {
          best = k * matches[w][k];
          keep[w] = k;
        }
      }
      if (best == 0) keep[w] = 0;
    }
  }
  for (uint32_t w = 0; w < row_words; ++w) {
    uint32_t m = 0;
    for (uint32_t k = 0; k < keep[w]; ++k) m |= 1u << order[w][k];
    mask[w] = m;
    value[w] = majority[w] & m;
  }
  if (selector == Selector::kAuto && frames) {
    for (uint32_t w = 0; w < row_words; ++w) ibp_saved[w] = keep[w] * matches[w][keep[w]];
    choose_frame_of_reference(x, row_bytes, row_words, sample, n, ibp_saved, mask, value);
  }
}

bool select_codes(const uint8_t* x, uint64_t row_bytes, uint32_t row_words, uint32_t dtype,
                  const uint64_t* sample, uint64_t n, uint32_t* codes, const uint64_t* prior,
                  uint64_t np) {
  uint32_t lo, nc;
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32: lo = 23; nc = 8; break;
    case DType::kFloat16: lo = 10; nc = 5; break;
    case DType::kBFloat16: lo = 7; nc = 8; break;
    default: return false;
  }
  const uint32_t upw = units_per_word(dtype), U = unit_bits(upw), units = row_words * upw;
  const uint32_t code_rows = code_rows_for(dtype);
  std::fill(codes, codes + static_cast<uint64_t>(code_rows) * row_words, 0u);
  const uint32_t symbols = 1u << nc;
  // hist: the group's counts times np plus the prior's times n (equal total
  // weights), so `total` = 2 n np weighs the sample; n alone without a prior.
  if (!prior || !np || !n) np = 0;
  std::vector<uint64_t> hist(static_cast<size_t>(units) * symbols, 0);
  std::vector<uint32_t> row(row_words);
  auto count = [&](const uint64_t* ids, uint64_t k, uint64_t weight) {
    for (uint64_t i = 0; i < k; ++i) {
      load_row(x + ids[i] * row_bytes, row_bytes, row_words, row.data());
      for (uint32_t w = 0; w < row_words; ++w) {
        for (uint32_t h = 0; h < upw; ++h) {
          hist[static_cast<size_t>(w * upw + h) * symbols + field_of(row[w] >> (h * U), lo, nc)] +=
              weight;
        }
      }
    }
  };
  count(sample, n, np ? np : 1);
  count(prior, np, n);
  const uint64_t total = np ? 2 * n * np : n;
  auto put_slot = [&](uint32_t u, uint32_t k, uint32_t v) {
    const uint32_t w = u / upw, h = u % upw;
    uint32_t& cell = codes[(8ull * h + k / 2) * row_words + w];
    cell |= (k & 1u) ? v << 16 : v;
  };
  std::vector<uint32_t> order(symbols);
  for (uint32_t u = 0; u < units; ++u) {
    if (static_cast<uint64_t>(u) * (U / 8) >= row_bytes) {
      // The zero padding of a 2-byte dtype's odd row: the whole unit is one
      // coded field whose only symbol is 0, one bit a row.
      put_slot(u, 0, code_slot0(1, 0, U));
      continue;
    }
    const uint64_t* c = hist.data() + static_cast<size_t>(u) * symbols;
    for (uint32_t k = 0; k < symbols; ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return c[a] > c[b]; });
    // Code bits of the sample with s ranked symbols: rank r costs r + 1, the
    // rest s + nc each.
    uint64_t best = nc * total, covered = 0, ranked = 0;
    uint32_t best_s = 0;
    for (uint32_t s = 1; s <= kMaxCodeSymbols && s <= symbols; ++s) {
      covered += c[order[s - 1]];
      ranked += c[order[s - 1]] * s;
      if (c[order[s - 1]] == 0) break;
      const uint64_t bits = ranked + (total - covered) * (s + nc);
      if (bits < best) {
        best = bits;
        best_s = s;
      }
    }
    put_slot(u, 0, code_slot0(best_s, lo, nc));
    for (uint32_t r = 0; r < best_s; ++r) put_slot(u, 1 + r, order[r]);
  }
  return true;
}

}  // namespace ibp
