#include "../gather.h"

#include <cstring>
#include <vector>

#include "../parallel.h"

namespace ibp {
namespace {

// Decodes row r into `words` (row_words words).
void decode_row(const CompressedView& c, uint64_t r, uint32_t* words) {
  const Geometry& geo = c.geo;
  const uint32_t W = geo.row_words;
  const uint32_t* p = c.payload;
  uint64_t pos = row_start(c.bases, c.rel, geo.rel_bytes, geo.block_shift, r);
  const uint32_t mode = read_bits(p, pos, kModeBits);
  const uint32_t g = read_bits(p, pos + kModeBits, geo.group_bits);
  pos += kModeBits + geo.group_bits;
  if (mode == static_cast<uint32_t>(RowMode::kRaw)) {
    for (uint32_t w = 0; w < W; ++w) words[w] = read_bits(p, pos + 32ull * w, 32);
    return;
  }
  const uint32_t* table = c.table + static_cast<uint64_t>(g) * kDecodeRows * W;
  const uint32_t* nvar = table + kNvar * W;
  uint64_t field = pos + W;
  for (uint32_t w0 = 0; w0 < W; w0 += 32) {
    const uint32_t chunk = W - w0 < 32 ? W - w0 : 32;
    const uint32_t bitmap = read_bits(p, pos + w0, chunk);
    for (uint32_t j = 0; j < chunk; ++j) {
      const uint32_t w = w0 + j;
      const bool part = (bitmap >> j) & 1u;
      const uint32_t len = part ? nvar[w] : 32;
      words[w] = decode_word(read_bits(p, field, len), part, table, W, w);
      field += len;
    }
  }
}

template <typename Id>
void gather_rows(const CompressedView& c, const Id* ids, uint64_t n, uint8_t* out,
                 int num_threads) {
  const uint64_t row_bytes = c.geo.row_bytes;
  const bool aligned = row_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;
  parallel_for(n, num_threads, n * row_bytes, [&](uint64_t a, uint64_t b) {
    std::vector<uint32_t> words(c.geo.row_words);
    for (uint64_t i = a; i < b; ++i) {
      uint8_t* dst = out + i * row_bytes;
      if (aligned) {
        decode_row(c, static_cast<uint64_t>(ids[i]), reinterpret_cast<uint32_t*>(dst));
      } else {
        decode_row(c, static_cast<uint64_t>(ids[i]), words.data());
        std::memcpy(dst, words.data(), row_bytes);
      }
    }
  });
}

}  // namespace

void gather_cpu(const CompressedView& c, const void* ids, bool ids64, uint64_t n, uint8_t* out,
                int num_threads) {
  if (ids64) {
    gather_rows(c, static_cast<const int64_t*>(ids), n, out, num_threads);
  } else {
    gather_rows(c, static_cast<const int32_t*>(ids), n, out, num_threads);
  }
}

#if !defined(IBP_WITH_CUDA)
int gather_cuda(const CompressedView&, const void*, bool, uint64_t, const int64_t*, uint8_t*,
                void*) {
  return -1;
}
bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
#endif

}  // namespace ibp
