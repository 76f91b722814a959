"""A plain numpy/python reference of the ibp_gnn format, version 4 (and the
version-1, -2 and -3 streams it still reads).

Written from the contract in csrc/ibp/format.h and the mask-selection and
row-choice rules of csrc/ibp/encode.h, deliberately simple and slow: streams
are built and read a field at a time, masks and frame-of-reference windows are
evaluated by brute force. Nothing here imports ibp_gnn._C, so the tests can
hold the C++ encoder and decoders against it.

Conventions:
  words   uint32 array [rows, W]: each row's bytes zero-padded to a multiple of
          4 and read as little-endian 32-bit words.
  tables  uint32 array [G, 2 + C, W]: per group the mask, the value, then C
          code rows (C = 0, or 8 per unit of a word for kCoded rows).
"""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

FORMAT_VERSION = 4
MODE_BITS = 2
PAYLOAD_PAD_WORDS = 2
RAW, IBP, SPARSE, CODED = 0, 1, 2, 3
CODE_SLOTS, MAX_CODE_SYMBOLS = 16, 15
SELECTOR_AUTO, SELECTOR_PAPER = 0, 1
FULL = 0xFFFFFFFF
SPARSE_RICE_BITS, SPARSE_HI_BITS, SPARSE_ESCAPE = 5, 5, 8
SPARSE_HI_CHOICES = (0, 9, 12, 16, 20, 24, 28)

# Header dtype codes (format.h DType) -> bytes per element.
DTYPE_BYTES = {0: 4, 1: 2, 2: 2, 3: 1, 4: 1, 5: 2, 6: 4, 7: 8}


# ---------------------------------------------------------------------------
# Words <-> array bytes
# ---------------------------------------------------------------------------
def row_bytes_of(x: np.ndarray) -> int:
    return int(x.shape[1]) * int(x.dtype.itemsize)


def to_bytes(x: np.ndarray) -> np.ndarray:
    """uint8 [rows, row_bytes] view of a 2-D array's memory (native = little endian)."""
    x = np.ascontiguousarray(x)
    assert x.ndim == 2
    assert x.dtype.byteorder in ("=", "<", "|"), "reference assumes little-endian data"
    rows = x.shape[0]
    return x.reshape(-1).view(np.uint8).reshape(rows, row_bytes_of(x))


def to_words(x: np.ndarray) -> np.ndarray:
    """[rows, W] uint32: each row's bytes zero-padded to a multiple of 4, as
    little-endian words (W = ceil(row_bytes / 4))."""
    b = to_bytes(x)
    rows, rb = b.shape
    w = (rb + 3) // 4
    padded = np.zeros((rows, 4 * w), np.uint8)
    padded[:, :rb] = b
    out = np.zeros((rows, w), np.uint32)
    for k in range(4):  # explicit little-endian assembly, no reliance on views
        out |= padded[:, k::4].astype(np.uint32) << np.uint32(8 * k)
    return out


def from_words(words: np.ndarray, dtype, cols: int) -> np.ndarray:
    """Inverse of to_words: the [rows, cols] array of `dtype` held in `words`.
    (For bfloat16 pass np.int16 / np.uint16 and view the result in torch.)"""
    dtype = np.dtype(dtype)
    words = np.asarray(words, np.uint32)
    rows, w = words.shape
    rb = cols * dtype.itemsize
    assert w == (rb + 3) // 4, (w, rb)
    b = np.zeros((rows, 4 * w), np.uint8)
    for k in range(4):
        b[:, k::4] = ((words >> np.uint32(8 * k)) & np.uint32(0xFF)).astype(np.uint8)
    # Padding bytes must be zero: the format only pads with zeros.
    assert not b[:, rb:].any(), "nonzero padding bytes"
    return np.ascontiguousarray(b[:, :rb]).reshape(-1).view(dtype).reshape(rows, cols)


# ---------------------------------------------------------------------------
# Bit helpers
# ---------------------------------------------------------------------------
def popcount(x: int) -> int:
    return bin(int(x) & FULL).count("1")


def deposit_ref(x: int, m: int) -> int:
    """PDEP: the low popcount(m) bits of x, in order, at the set bits of m."""
    x, m = int(x) & FULL, int(m) & FULL
    out, k = 0, 0
    for q in range(32):
        if (m >> q) & 1:
            out |= ((x >> k) & 1) << q
            k += 1
    return out


def extract_ref(x: int, m: int) -> int:
    """PEXT: the bits of x at the set bits of m, packed into the low bits."""
    x, m = int(x) & FULL, int(m) & FULL
    out, k = 0, 0
    for q in range(32):
        if (m >> q) & 1:
            out |= ((x >> q) & 1) << k
            k += 1
    return out


def count_bits(n: int) -> int:
    """Bits needed to write any integer in [0, n] (0 for n = 0)."""
    return int(n).bit_length()


def fits_ref(x: int, m: int, v: int) -> bool:
    """Word x fits a table entry (mask m, value v): x - v (mod 2^32) has no bit
    inside m."""
    return ((int(x) - int(v)) & FULL & int(m)) == 0


def encode_word_ref(x: int, m: int, v: int) -> int:
    """The field of a fitting word: extract(x - v, ~m)."""
    return extract_ref((int(x) - int(v)) & FULL, ~int(m) & FULL)


def decode_word_ref(f: int, m: int, v: int) -> int:
    """value + deposit(field, ~mask), mod 2^32."""
    return (int(v) + deposit_ref(f, ~int(m) & FULL)) & FULL


def group_bits_for(num_groups: int) -> int:
    b = 0
    while (1 << b) < num_groups:
        b += 1
    return b


def raw_row_bits(row_words: int, group_bits: int) -> int:
    return MODE_BITS + group_bits + 32 * row_words


def index_geometry(row_words: int, group_bits: int):
    """(block_rows, rel_bytes) as format.h's index_geometry; None if impossible."""
    raw = raw_row_bits(row_words, group_bits)
    limit = 0xFFFF if raw * 16 <= 0xFFFF else 0xFFFFFFFF
    if raw > limit:
        return None
    b = 64
    while b > 1 and raw * b > limit:
        b //= 2
    return b, (2 if limit == 0xFFFF else 4)


# ---------------------------------------------------------------------------
# Mask selection
# ---------------------------------------------------------------------------
def _word_stats(col: np.ndarray):
    """For one word column (n values): ones per bit, majority word, ranking."""
    n = col.shape[0]
    ones = [int(((col >> np.uint32(b)) & np.uint32(1)).sum()) for b in range(32)]
    share = [max(c, n - c) for c in ones]
    majority = 0
    for b in range(32):
        if 2 * ones[b] > n:
            majority |= 1 << b
    # Most invariant first; Python's sort is stable, so ties keep bit order.
    order = sorted(range(32), key=lambda b: -share[b])
    return share, majority, order


def _prefix_mask(order: Sequence[int], k: int) -> int:
    m = 0
    for b in order[:k]:
        m |= 1 << b
    return m


def _matches(col: np.ndarray, majority: int, m: int) -> int:
    """Rows whose bits under mask m all equal the majority."""
    return int((((col ^ np.uint32(majority)) & np.uint32(m)) == 0).sum())


def window_counts_ref(col: np.ndarray):
    """(starts, counts): the distinct values of `col` in increasing order and
    counts[i, k] = how many entries x of col lie in the window
    [starts[i], starts[i] + 2^k) taken mod 2^32 (so a window may wrap past
    2^32), for k = 0..32. Brute force: every start against every value."""
    col = np.asarray(col, np.uint32).astype(np.int64)
    starts = np.unique(col)
    # (x - start) mod 2^32 < 2^k  <=>  its bit length is <= k.
    dist = (col[None, :] - starts[:, None]) % (1 << 32)
    length = np.frexp(dist.astype(np.float64))[1]  # bit length (exact: < 2^53)
    cell = np.arange(len(starts))[:, None] * 33 + length  # (start, bit length) pairs
    hist = np.bincount(cell.ravel(), minlength=33 * len(starts)).reshape(len(starts), 33)
    return starts.astype(np.uint32), hist.cumsum(axis=1)


def frame_of_reference_ref(col: np.ndarray, saved: int):
    """(mask, value) of the frame of reference of one word column, or None
    when none saves strictly more than `saved` (the invariance mask's saving).

    For k = 1..31 in order, the window of 2^k values holding the most sample
    entries (the first such start in increasing order) saves (32 - k) bits per
    entry; a k replaces the best so far only when it saves strictly more."""
    if len(col) == 0:
        return None
    starts, counts = window_counts_ref(col)
    best, out = saved, None
    for k in range(1, 32):
        most = int(counts[:, k].max())
        first = int(np.flatnonzero(counts[:, k] == most)[0])
        if (32 - k) * most > best:
            best = (32 - k) * most
            out = (~((1 << k) - 1) & FULL, int(starts[first]))
    return out


def select_masks_ref(words: np.ndarray, selector: int, frames: bool = True):
    """(mask, value) uint32 [W] chosen from the sample rows `words` [n, W].

    The invariance mask of each word (value = majority & mask); with the auto
    selector and `frames` (version 2; select_masks(..., frames)) a frame of
    reference replaces it where that saves strictly more. Version-1 files
    were written with frames = False."""
    words = np.asarray(words, np.uint32)
    n, w_count = words.shape
    mask = np.zeros(w_count, np.uint32)
    value = np.zeros(w_count, np.uint32)
    if n == 0 or w_count == 0:
        return mask, value
    stats = [_word_stats(words[:, w]) for w in range(w_count)]
    # matches[w][k] for every prefix length k = 0..32, by brute force.
    matches = [[_matches(words[:, w], maj, _prefix_mask(order, k)) for k in range(33)]
               for w, (_, maj, order) in enumerate(stats)]
    keep = [0] * w_count
    if selector == SELECTOR_AUTO:
        for w in range(w_count):
            best_k, best = 0, 0
            for k in range(1, 33):
                p = k * matches[w][k]
                if p > 0 and p >= best:  # ties -> larger k; all zero -> k = 0
                    best_k, best = k, p
            keep[w] = best_k
    elif selector == SELECTOR_PAPER:
        best_saved, best_keep = -1, None
        for t in range(70, 101):
            ks = []
            for w in range(w_count):
                share = stats[w][0]
                ks.append(sum(1 for b in range(32) if share[b] * 100 >= t * n))
            saved = sum(k * matches[w][k] for w, k in enumerate(ks))
            if saved > best_saved:  # ties -> smallest t
                best_saved, best_keep = saved, ks
        keep = best_keep
    else:
        raise ValueError(f"unknown selector {selector}")
    for w, (_, maj, order) in enumerate(stats):
        m = _prefix_mask(order, keep[w])
        if selector == SELECTOR_PAPER:
            # The thresholded bits are exactly the set {share >= t}; the prefix
            # of the ranking of that length must be the same set.
            assert popcount(m) == keep[w]
        mask[w] = m
        value[w] = maj & m
        if selector == SELECTOR_AUTO and frames:
            fr = frame_of_reference_ref(words[:, w], keep[w] * matches[w][keep[w]])
            if fr is not None:
                mask[w], value[w] = fr
    return mask, value


def make_tables(*groups) -> np.ndarray:
    """[G, 2, W] uint32 from (mask, value) pairs."""
    return np.ascontiguousarray(
        np.stack([np.stack([np.asarray(m, np.uint32), np.asarray(v, np.uint32)])
                  for m, v in groups]).astype(np.uint32))


# ---------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------
class BitWriter:
    """LSB-first bit stream, kept as a string of '0'/'1', one per bit."""

    def __init__(self):
        self.bits = []
        self.n = 0

    def __len__(self):
        return self.n

    def write(self, v: int, k: int) -> None:
        v = int(v)
        assert 0 <= k <= 32 and 0 <= v < (1 << k), (v, k)
        if k:
            self.bits.append(format(v, f"0{k}b")[::-1])  # LSB first
            self.n += k

    def words(self, pad_words: int = PAYLOAD_PAD_WORDS) -> np.ndarray:
        """The stream as uint32 words (bit i at bit i % 32 of word i // 32),
        the last partial word zero-filled, then `pad_words` zero words."""
        s = "".join(self.bits)
        nwords = (len(s) + 31) // 32
        s = s.ljust(32 * (nwords + pad_words), "0")
        return np.array([int(s[32 * i:32 * i + 32][::-1], 2) for i in range(len(s) // 32)],
                        np.uint32).reshape(-1)


class SparsePlan(NamedTuple):
    count: int     # c: listed words (those differing from the group's value)
    dict: int      # d written in the row: dictionary entries, 0 for inline values
    bitmap: bool   # positions as a bitmap of W bits
    bits: int      # length of the row


def row_ibp_bits(row: np.ndarray, mask: np.ndarray, value: np.ndarray, group_bits: int) -> int:
    """Length of `row` stored kIbp under one group."""
    row, mask, value = (np.asarray(a, np.uint32).astype(np.int64) for a in (row, mask, value))
    fit = (((row - value) % (1 << 32)) & mask) == 0
    nvar = np.array([32 - popcount(m) for m in mask], np.int64)
    return MODE_BITS + group_bits + len(row) + int(np.where(fit, nvar, 32).sum())


def sparse_plan_ref(row: np.ndarray, value: np.ndarray, group_bits: int) -> SparsePlan:
    """The encoder's kSparse layout of `row` under a group with values `value`."""
    w_count = len(row)
    listed = [int(row[w]) for w in range(w_count) if int(row[w]) != int(value[w])]
    c = len(listed)
    d = len(set(listed))
    cb = count_bits(w_count)
    pos_bits = count_bits(w_count - 1) if w_count else 0
    inline_bits = 32 * c
    dict_bits = 32 * d + c * (count_bits(d - 1) if d else 0)
    use_dict = dict_bits < inline_bits
    bitmap = c * pos_bits > w_count
    bits = (MODE_BITS + group_bits + 2 * cb + 1 + (w_count if bitmap else c * pos_bits)
            + (dict_bits if use_dict else inline_bits))
    return SparsePlan(c, d if use_dict else 0, bitmap, bits)


# ---------------------------------------------------------------------------
# Coded-form kSparse rows (version 4): Rice-coded gaps, zigzag-unary high bits
# ---------------------------------------------------------------------------
class SparseCodePlan(NamedTuple):
    count: int   # c
    rice: int    # k: Rice parameter of the gaps
    hi: int      # h: coded high bits of a listed word
    base: int    # the centre of the high bits' zigzag code
    bits: int    # length of the row


def zigzag_ref(t: int, base: int) -> int:
    e = t - base
    return 2 * e if e >= 0 else -2 * e - 1


def sparse_code_plan_ref(row: np.ndarray, value: np.ndarray, group_bits: int, limit: int):
    """The encoder's coded-form layout of `row` under a group with values
    `value`, or None when it is not tried (32 c >= limit, or c + 1 does not
    fit the count field) or takes `limit` bits or more. The smallest Rice
    parameter in [0, min(31, count_bits(W))] of fewest gap bits; the first of
    SPARSE_HI_CHOICES of fewest value bits, base the lower median of the top
    h bits."""
    w_count = len(row)
    cb = count_bits(w_count)
    where = [w for w in range(w_count) if int(row[w]) != int(value[w])]
    c = len(where)
    if 32 * c >= limit or c + 1 > (1 << cb) - 1:
        return None
    head = MODE_BITS + group_bits + 2 * cb + 1 + SPARSE_RICE_BITS + SPARSE_HI_BITS
    if head >= limit:
        return None
    gaps = [w - p - 1 for w, p in zip(where, [-1] + where[:-1])]
    vals = [int(row[w]) for w in where]
    gap_bits, rice = min((c * (k + 1) + sum(g >> k for g in gaps), k)
                         for k in range(min(2 ** SPARSE_RICE_BITS - 1, cb) + 1))
    best = None
    for h in SPARSE_HI_CHOICES:
        med = sorted(v >> (32 - h) for v in vals)[(c - 1) // 2] if h and c else 0
        bits = h + c * (32 - h)
        if h:
            for v in vals:
                z = zigzag_ref(v >> (32 - h), med)
                bits += z + 1 if z < SPARSE_ESCAPE else SPARSE_ESCAPE + h
        if best is None or bits < best[0]:
            best = (bits, h, med)
    bits = head + gap_bits + best[0]
    if bits >= limit:
        return None
    return SparseCodePlan(c, rice, best[1], best[2], bits)


def write_sparse_code_ref(bw, row: np.ndarray, value: np.ndarray, plan: SparseCodePlan) -> None:
    w_count = len(row)
    cb = count_bits(w_count)
    bw.write(plan.count, cb)
    bw.write(plan.count + 1, cb)  # d = c + 1 marks the coded form
    bw.write(0, 1)
    bw.write(plan.rice, SPARSE_RICE_BITS)
    bw.write(plan.hi, SPARSE_HI_BITS)
    bw.write(plan.base, plan.hi)
    k, h = plan.rice, plan.hi
    prev = -1
    for w in range(w_count):
        x = int(row[w])
        if x == int(value[w]):
            continue
        gap = w - prev - 1
        prev = w
        for _ in range(gap >> k):
            bw.write(1, 1)
        bw.write(0, 1)
        bw.write(gap & ((1 << k) - 1), k)
        if h:
            t = x >> (32 - h)
            z = zigzag_ref(t, plan.base)
            if z < SPARSE_ESCAPE:
                for _ in range(z):
                    bw.write(1, 1)
                bw.write(0, 1)
            else:
                for _ in range(SPARSE_ESCAPE):
                    bw.write(1, 1)
                bw.write(t, h)
        bw.write(x & ((1 << (32 - h)) - 1), 32 - h)


def read_sparse_code_ref(br, pos: int, w_count: int, r: int):
    """({position: word}, bit after the row) of a coded-form row whose bits
    after the group id start at `pos`; ValueError when malformed."""
    cb = count_bits(w_count)
    c, d, form = br.read(pos, cb), br.read(pos + cb, cb), br.read(pos + 2 * cb, 1)
    pos += 2 * cb + 1
    if d != c + 1 or form != 0 or c > w_count:
        raise ValueError(f"row {r}: coded sparse row with c={c} d={d} form={form}")
    k = br.read(pos, SPARSE_RICE_BITS)
    h = br.read(pos + SPARSE_RICE_BITS, SPARSE_HI_BITS)
    pos += SPARSE_RICE_BITS + SPARSE_HI_BITS
    base = br.read(pos, h)
    pos += h
    listed, nxt = {}, 0
    for _ in range(c):
        q = 0
        while br.read(pos, 1):
            q += 1
            pos += 1
            if q << k >= w_count:
                raise ValueError(f"row {r}: gap quotient {q} past the row")
        pos += 1
        w = nxt + ((q << k) | br.read(pos, k))
        pos += k
        if w >= w_count:
            raise ValueError(f"row {r}: position {w} >= {w_count}")
        t = 0
        if h:
            z = 0
            while z < SPARSE_ESCAPE and br.read(pos + z, 1):
                z += 1
            if z < SPARSE_ESCAPE:
                pos += z + 1
                t = base + (-(z + 1) // 2 if z & 1 else z // 2)
                if not 0 <= t < (1 << h):
                    raise ValueError(f"row {r}: high bits {t} outside {h} bits")
            else:
                pos += SPARSE_ESCAPE
                t = br.read(pos, h)
                pos += h
        lo = br.read(pos, 32 - h)
        pos += 32 - h
        listed[w] = (t << (32 - h)) | lo if h else lo
        nxt = w + 1
    return listed, pos


# ---------------------------------------------------------------------------
# kCoded rows (version 3): units, code rows, plain bits and unary-ranked codes
# ---------------------------------------------------------------------------
def code_units_of(tables: np.ndarray) -> int:
    """Units per word of the tables' code rows (0: no code rows)."""
    return (tables.shape[1] - 2) // 8


def code_unit_ref(tables: np.ndarray, g: int, u: int):
    """(s, lo, nc, ranked symbols) of unit u of group g."""
    upw = code_units_of(tables)
    w, h = divmod(u, upw)
    slots = []
    for k in range(CODE_SLOTS):
        v = int(tables[g, 2 + 8 * h + k // 2, w])
        slots.append(v >> 16 if k & 1 else v & 0xFFFF)
    d = slots[0]
    return d & 15, (d >> 4) & 31, (d >> 9) & 31, slots[1:1 + (d & 15)]


def units_ref(row: np.ndarray, upw: int) -> list:
    """The row's units: each word, or (upw = 2) its low half, then its high half."""
    if upw == 1:
        return [int(x) for x in row]
    return [v for x in row for v in (int(x) & 0xFFFF, int(x) >> 16)]


def coded_parts_ref(x: int, lo: int, nc: int):
    """(plain bits, coded field) of a unit value x."""
    plain = (x & ((1 << lo) - 1)) | ((x >> (lo + nc)) << lo)
    return plain, (x >> lo) & ((1 << nc) - 1)


def row_coded_bits_ref(row: np.ndarray, tables: np.ndarray, g: int, group_bits: int) -> int:
    upw = code_units_of(tables)
    bits = MODE_BITS + group_bits
    for u, x in enumerate(units_ref(row, upw)):
        s, lo, nc, syms = code_unit_ref(tables, g, u)
        f = coded_parts_ref(x, lo, nc)[1]
        bits += 32 // upw - nc + (syms.index(f) + 1 if f in syms else s + nc)
    return bits


def write_coded_ref(bw, row: np.ndarray, tables: np.ndarray, g: int) -> None:
    upw = code_units_of(tables)
    units = units_ref(row, upw)
    codes = []
    for u, x in enumerate(units):
        s, lo, nc, syms = code_unit_ref(tables, g, u)
        plain, f = coded_parts_ref(x, lo, nc)
        bw.write(plain, 32 // upw - nc)
        codes.append((f, s, nc, syms))
    for f, s, nc, syms in codes:
        if f in syms:
            r = syms.index(f)
            bw.write((1 << r) - 1, r + 1)  # r ones, then a zero
        else:
            bw.write((1 << s) - 1, s)
            bw.write(f, nc)


def read_coded_ref(br, pos: int, tables: np.ndarray, g: int, w_count: int):
    """(words of a kCoded row whose bits after the group id start at pos, end bit)."""
    upw = code_units_of(tables)
    U = 32 // upw
    descs = [code_unit_ref(tables, g, u) for u in range(w_count * upw)]
    plains = []
    for s, lo, nc, syms in descs:
        plains.append(br.read(pos, U - nc))
        pos += U - nc
    units = []
    for (s, lo, nc, syms), plain in zip(descs, plains):
        r = 0
        while r < s and br.read(pos + r, 1) == 1:
            r += 1
        if r < s:
            f = syms[r]
            pos += r + 1
        else:
            f = br.read(pos + s, nc)
            pos += s + nc
        units.append((plain & ((1 << lo) - 1)) | (f << lo) | ((plain >> lo) << (lo + nc)))
    words = [units[w * upw] | (units[w * upw + 1] << 16 if upw == 2 else 0)
             for w in range(w_count)]
    return words, pos


# (lo, nc) of the coded field per dtype code: the exponent of fp32, fp16, bf16.
CODED_FIELDS = {0: (23, 8), 1: (10, 5), 2: (7, 8)}


def select_codes_ref(words: np.ndarray, dtype: int, row_bytes: int, prior=None):
    """One group's code rows [C, W] from sample rows `words` of row_bytes
    bytes (select.h select_codes), or None for a dtype without kCoded rows.
    prior: the rows of a wider sample, whose symbol counts are added at the
    sample's total weight (the group's counts times len(prior), the prior's
    times len(words))."""
    if dtype not in CODED_FIELDS:
        return None
    lo, nc = CODED_FIELDS[dtype]
    upw = 2 if DTYPE_BYTES[dtype] == 2 else 1
    n, w_count = words.shape
    out = np.zeros((8 * upw, w_count), np.uint32)
    unit_bytes = 4 // upw
    for u in range(w_count * upw):
        w, h = divmod(u, upw)
        if u * unit_bytes >= row_bytes:  # zero padding of an odd 2-byte row: coded whole
            out[8 * h, w] = 1 | 0 << 4 | 16 << 9
            continue
        def fields(rows):
            return [coded_parts_ref(units_ref(rows[i, w:w + 1], upw)[h], lo, nc)[1]
                    for i in range(rows.shape[0])]

        col = fields(words)
        counts = [col.count(v) for v in range(1 << nc)]
        total = n
        if prior is not None and len(prior) and n:
            pcol = fields(prior)
            counts = [c * len(prior) + pcol.count(v) * n for v, c in enumerate(counts)]
            total = 2 * n * len(prior)
        order = sorted(range(1 << nc), key=lambda v: -counts[v])  # stable: ties by value
        best, best_s = nc * total, 0
        for s in range(1, MAX_CODE_SYMBOLS + 1):
            if counts[order[s - 1]] == 0:
                break
            covered = sum(counts[v] for v in order[:s])
            bits = (sum(counts[v] * (r + 1) for r, v in enumerate(order[:s]))
                    + (total - covered) * (s + nc))
            if bits < best:
                best, best_s = bits, s
        slots = [best_s | lo << 4 | nc << 9] + order[:best_s]
        slots += [0] * (CODE_SLOTS - len(slots))
        for k in range(CODE_SLOTS // 2):
            out[8 * h + k, w] = slots[2 * k] | slots[2 * k + 1] << 16
    return out


def choose_mode(row: np.ndarray, tables: np.ndarray, *, allow_sparse: bool,
                sparse_code: bool = True):
    """(mode, group, bits, plan). Raw first; then for each group in order kIbp
    when strictly fewer bits than the best so far; then (allow_sparse) for
    each group in order kSparse when strictly fewer bits; then (code rows)
    for each group in order kCoded when strictly fewer bits; then (allow_sparse
    and sparse_code) for each group in order the coded form of kSparse when
    strictly fewer bits. `plan` is the SparsePlan or SparseCodePlan of a
    kSparse row, else None."""
    num_groups, _, w_count = tables.shape
    gb = group_bits_for(num_groups)
    best = (RAW, 0, raw_row_bits(w_count, gb), None)
    for g in range(num_groups):
        bits = row_ibp_bits(row, tables[g, 0], tables[g, 1], gb)
        if bits < best[2]:
            best = (IBP, g, bits, None)
    for g in range(num_groups if allow_sparse else 0):
        plan = sparse_plan_ref(row, tables[g, 1], gb)
        if plan.bits < best[2]:
            best = (SPARSE, g, plan.bits, plan)
    for g in range(num_groups if code_units_of(tables) else 0):
        bits = row_coded_bits_ref(row, tables, g, gb)
        if bits < best[2]:
            best = (CODED, g, bits, None)
    for g in range(num_groups if allow_sparse and sparse_code else 0):
        plan = sparse_code_plan_ref(row, tables[g, 1], gb, best[2])
        if plan is not None:
            best = (SPARSE, g, plan.bits, plan)
    return best


def row_bits_ref(words: np.ndarray, tables: np.ndarray, *, allow_sparse: bool = True,
                 sparse_code: bool = True):
    """[rows, G]: bits of each row under each group alone, its cheapest of
    raw, kIbp and (allow_sparse) kSparse (Encoder.row_bits)."""
    words = np.asarray(words, np.uint32)
    tables = np.asarray(tables, np.uint32)
    num_groups, _, w_count = tables.shape
    gb = group_bits_for(num_groups)
    out = np.zeros((words.shape[0], num_groups), np.uint64)
    for r in range(words.shape[0]):
        for g in range(num_groups):
            bits = min(raw_row_bits(w_count, gb),
                       row_ibp_bits(words[r], tables[g, 0], tables[g, 1], gb))
            if allow_sparse:
                bits = min(bits, sparse_plan_ref(words[r], tables[g, 1], gb).bits)
            if code_units_of(tables):
                bits = min(bits, row_coded_bits_ref(words[r], tables, g, gb))
            if allow_sparse and sparse_code:
                plan = sparse_code_plan_ref(words[r], tables[g, 1], gb, bits)
                bits = plan.bits if plan is not None else bits
            out[r, g] = bits
    return out


def write_row(bw: BitWriter, row: np.ndarray, tables: np.ndarray, mode: int, g: int,
              plan=None) -> None:
    num_groups, _, w_count = tables.shape
    gb = group_bits_for(num_groups)
    bw.write(mode, MODE_BITS)
    bw.write(g, gb)
    if mode == RAW:
        for w in range(w_count):
            bw.write(int(row[w]), 32)
        return
    if mode == CODED:
        write_coded_ref(bw, row, tables, g)
        return
    mask, value = tables[g, 0], tables[g, 1]
    if mode == IBP:
        part = [fits_ref(row[w], mask[w], value[w]) for w in range(w_count)]
        for p in part:
            bw.write(1 if p else 0, 1)
        for w in range(w_count):
            if part[w]:
                bw.write(encode_word_ref(row[w], mask[w], value[w]), 32 - popcount(mask[w]))
            else:
                bw.write(int(row[w]), 32)
        return
    assert mode == SPARSE
    if isinstance(plan, SparseCodePlan):
        write_sparse_code_ref(bw, row, value, plan)
        return
    plan = sparse_plan_ref(row, value, gb)
    where = [w for w in range(w_count) if int(row[w]) != int(value[w])]
    listed = [int(row[w]) for w in where]
    cb = count_bits(w_count)
    bw.write(plan.count, cb)
    bw.write(plan.dict, cb)
    bw.write(1 if plan.bitmap else 0, 1)
    if plan.dict:
        entries = sorted(set(listed))
        for e in entries:
            bw.write(e, 32)
        for x in listed:
            bw.write(entries.index(x), count_bits(plan.dict - 1))
    else:
        for x in listed:
            bw.write(x, 32)
    if plan.bitmap:
        for w in range(w_count):
            bw.write(1 if w in where else 0, 1)
    else:
        for w in where:
            bw.write(w, count_bits(w_count - 1))


def sector_start_ref(pos: int, bits: int, r: int, block_rows: int, block_base: int,
                     rel_bytes: int, raw_bits: int) -> int:
    """Where layout kSectors starts a row of `bits` bits that packed rows
    would start at `pos`: the next 256-bit boundary when the row would touch
    more sectors than ceil(bits / 256) and (unless it starts a block) its
    rel plus the raw bits of the block's rows from it on fit rel_bytes."""
    o = pos % 256
    if o == 0 or bits == 0 or -(-(o + bits) // 256) == -(-bits // 256):
        return pos
    moved = pos + 256 - o
    if r % block_rows and moved - block_base + (block_rows - r % block_rows) * raw_bits \
            > (1 << (8 * rel_bytes)) - 1:
        return pos
    return moved


def encode_ref(words: np.ndarray, tables: np.ndarray, *, allow_sparse: bool,
               sparse_code: bool = True, layout: int = 0):
    """(payload uint32 incl. the 2 pad words, bases uint64, rel uint16/uint32,
    mode_rows tuple of 4) for the rows `words` [rows, W] under `tables`;
    layout 1 (kSectors, version >= 4) moves rows as sector_start_ref says."""
    words = np.asarray(words, np.uint32)
    tables = np.asarray(tables, np.uint32)
    rows, w_count = words.shape
    num_groups = tables.shape[0]
    assert tables.shape in [(num_groups, 2 + c, w_count) for c in (0, 8, 16)] and num_groups >= 1
    gb = group_bits_for(num_groups)
    block_rows, rel_bytes = index_geometry(w_count, gb)
    bw = BitWriter()
    bases, rel = [], []
    mode_rows = [0, 0, 0, 0]
    pos = 0
    raw_bits = MODE_BITS + gb + 32 * w_count
    for r in range(rows):
        mode, g, bits, plan = choose_mode(words[r], tables, allow_sparse=allow_sparse,
                                          sparse_code=sparse_code)
        if layout == 1:
            moved = sector_start_ref(pos, bits, r, block_rows, bases[-1] if bases else 0,
                                     rel_bytes, raw_bits)
            for _ in range(moved - pos):
                bw.write(0, 1)
            pos = moved
        if r % block_rows == 0:
            bases.append(pos)
        rel.append(pos - bases[-1])
        before = len(bw)
        write_row(bw, words[r], tables, mode, g, plan)
        assert len(bw) - before == bits
        pos += bits
        mode_rows[mode] += 1
    bases.append(pos)
    rel_dtype = np.uint16 if rel_bytes == 2 else np.uint32
    assert all(v <= np.iinfo(rel_dtype).max for v in rel)
    return (bw.words(), np.array(bases, np.uint64), np.array(rel, rel_dtype),
            tuple(mode_rows))


def payload_bits_of(bases: np.ndarray) -> int:
    return int(bases[-1])


# ---------------------------------------------------------------------------
# compress()'s choice of groups: a heuristic of ibp_gnn/_encode.py
# (_choose_tables), not part of the format; mirrored here so a test can pin it.
# ---------------------------------------------------------------------------
GROUP_CHOICES = (2, 4, 8, 16)
CLUSTER_ROWS = 2048
CLUSTER_ROUNDS = 4


def choose_tables_ref(sample_words: np.ndarray, total_rows: int, selector: int) -> np.ndarray:
    """Tables [G, 2, W] from the sample rows. One group (select_masks of the
    whole sample) for the paper selector, fewer than 256 sample rows or
    W = 0. Otherwise G in 2, 4, 8, 16 (while 64 G <= the subsample): a fixed
    random subsample of <= 2048 rows is cut into G equal parts by each row's
    size under the one-group tables (stable order); then CLUSTER_ROUNDS fits
    of each part, re-assigning each row to its cheapest group (lowest on
    ties) after every fit but the last; frames of reference only in the last
    fit. A G is kept when its estimated size (mean bits of a held-out row --
    up to 4096 sample rows outside the subsample, or the whole sample when
    there are none -- times total_rows, plus 32 bits per table word) is
    strictly smaller than the best so far. Row sizes are those of the
    version-3 encodings (no coded-form sparse rows), as in _encode.py."""
    words = np.asarray(sample_words, np.uint32)
    n, w_count = words.shape
    one = make_tables(select_masks_ref(words, selector))
    if selector == SELECTOR_PAPER or n < 256 or w_count == 0:
        return one
    sub = np.sort(np.random.default_rng(0x6B9).choice(n, size=min(n, CLUSTER_ROWS),
                                                      replace=False))
    sub_words = words[sub]
    rest = np.setdiff1d(np.arange(n), sub)
    held = words[rest[:2 * CLUSTER_ROWS]] if len(rest) else words

    def estimate(tables):
        bits = row_bits_ref(held, tables, sparse_code=False).min(axis=1).sum()
        return bits / len(held) * total_rows + tables.size * 32

    best, best_size = one, estimate(one)
    start = row_bits_ref(sub_words, one, sparse_code=False)[:, 0]
    for groups in GROUP_CHOICES:
        if groups * 64 > len(sub):
            break
        assign = np.empty(len(sub), np.int64)
        assign[np.argsort(start, kind="stable")] = np.arange(len(sub)) * groups // len(sub)
        for round_ in range(CLUSTER_ROUNDS):
            last = round_ == CLUSTER_ROUNDS - 1
            tables = make_tables(*[select_masks_ref(sub_words[assign == g], selector,
                                                    frames=last) for g in range(groups)])
            if not last:
                assign = row_bits_ref(sub_words, tables, sparse_code=False).argmin(axis=1)
        size = estimate(tables)
        if size < best_size:
            best, best_size = tables, size
    return best


# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------
class BitReader:
    def __init__(self, payload: np.ndarray):
        self.words = [int(v) for v in np.asarray(payload, np.uint32)]

    def bit(self, i: int) -> int:
        return (self.words[i >> 5] >> (i & 31)) & 1

    def read(self, pos: int, k: int) -> int:
        """k <= 32 bits from bit `pos`, LSB first."""
        assert 0 <= k <= 32
        i = pos >> 5
        window = self.words[i] | (self.words[i + 1] << 32) if i + 1 < len(self.words) \
            else self.words[i]
        return (window >> (pos & 31)) & ((1 << k) - 1)


def _field(fields, name):
    return int(fields[name])


class RowInfo(NamedTuple):
    mode: int
    group: int
    count: int = 0      # kSparse: listed words
    dict: int = 0       # kSparse: dictionary entries (0: inline values)
    bitmap: bool = False
    end: int = 0        # the bit after the row's own bits (a kSectors gap may follow)


def decode_rows_ref(fields: Mapping, tables: np.ndarray, bases: np.ndarray, rel: np.ndarray,
                    payload: np.ndarray, ids: Iterable[int]):
    """(words [len(ids), W], [RowInfo per id]) of rows `ids`, read a field at
    a time from the stream.

    `fields`: header fields (e.g. _C.unpack_header output or a dict with rows,
    row_words, num_groups, group_bits, block_rows, rel_bytes, payload_bits and
    optionally version, default the current one). Checks, for every row read,
    what the spec fixes: the mode is 0, 1, (version >= 2) 2 or (version >= 3,
    code rows) 3, the group is in
    range, a sparse row's counts, indices and positions are valid, and the
    row's bits end exactly where the index says.
    """
    rows = _field(fields, "rows")
    w_count = _field(fields, "row_words")
    num_groups = _field(fields, "num_groups")
    gb = _field(fields, "group_bits")
    block_rows = _field(fields, "block_rows")
    version = int(fields.get("version", FORMAT_VERSION))
    assert 1 <= version <= FORMAT_VERSION
    code_rows = int(fields.get("code_rows", 0))
    assert code_rows == 0 or version >= 3
    sectors = int(fields.get("layout", 0)) == 1  # row layout kSectors (version >= 4)
    assert not sectors or version >= 4
    tables = np.asarray(tables, np.uint32).reshape(num_groups, 2 + code_rows, w_count)
    if version == 1:
        assert not (tables[:, 1] & ~tables[:, 0]).any(), "v1: value bits outside the mask"
    assert gb == group_bits_for(num_groups)
    assert (block_rows, _field(fields, "rel_bytes")) == index_geometry(w_count, gb)
    bases = np.asarray(bases, np.uint64)
    rel = np.asarray(rel)
    payload = np.asarray(payload, np.uint32)
    blocks = (rows + block_rows - 1) // block_rows
    assert len(bases) == blocks + 1 and len(rel) == rows
    if "payload_bits" in fields:
        assert int(bases[-1]) == _field(fields, "payload_bits")
    assert len(payload) == (int(bases[-1]) + 31) // 32 + PAYLOAD_PAD_WORDS
    br = BitReader(payload)

    def start(r):
        return int(bases[r // block_rows]) + int(rel[r])

    def end(r):
        nxt = r + 1
        if nxt == rows or nxt // block_rows != r // block_rows:
            return int(bases[r // block_rows + 1])
        return start(nxt)

    ids = [int(i) for i in ids]
    out = np.zeros((len(ids), w_count), np.uint32)
    infos = []
    for j, r in enumerate(ids):
        if not 0 <= r < rows:
            raise IndexError(r)
        if r % block_rows == 0 and int(rel[r]) != 0:
            raise ValueError(f"row {r}: first row of a block has rel {int(rel[r])}")
        pos = start(r)
        mode = br.read(pos, MODE_BITS)
        pos += MODE_BITS
        g = br.read(pos, gb)
        pos += gb
        info = RowInfo(mode, g)
        if mode != RAW and g >= num_groups:
            raise ValueError(f"row {r}: group {g} out of range")
        if mode == RAW:  # the group field is not used by raw rows
            for w in range(w_count):
                out[j, w] = br.read(pos, 32)
                pos += 32
        elif mode == IBP:
            part = [br.read(pos + w, 1) for w in range(w_count)]
            pos += w_count
            for w in range(w_count):
                m, v = int(tables[g, 0, w]), int(tables[g, 1, w])
                if part[w]:
                    nvar = 32 - popcount(m)
                    out[j, w] = decode_word_ref(br.read(pos, nvar), m, v)
                    pos += nvar
                else:
                    out[j, w] = br.read(pos, 32)
                    pos += 32
        elif mode == CODED and code_rows:
            words, pos = read_coded_ref(br, pos, tables, g, w_count)
            out[j] = words
        elif mode == SPARSE and version >= 2:
            cb = count_bits(w_count)
            c = br.read(pos, cb)
            d = br.read(pos + cb, cb)
            bitmap = br.read(pos + 2 * cb, 1) == 1
            if version >= 4 and d > c:
                listed, pos = read_sparse_code_ref(br, pos, w_count, r)
                out[j] = tables[g, 1]
                for w, v in listed.items():
                    out[j, w] = v
                infos.append(RowInfo(mode, g, c, d, False))
                if pos != end(r):
                    raise ValueError(f"row {r}: bits end at {pos}, the index says {end(r)}")
                continue
            pos += 2 * cb + 1
            if c > w_count or d > c:
                raise ValueError(f"row {r}: sparse counts c={c} d={d} for {w_count} words")
            dictionary = []
            for _ in range(d):
                dictionary.append(br.read(pos, 32))
                pos += 32
            vals = []
            for _ in range(c):
                if d:
                    ib = count_bits(d - 1)
                    i = br.read(pos, ib)
                    pos += ib
                    if i >= d:
                        raise ValueError(f"row {r}: dictionary index {i} >= {d}")
                    vals.append(dictionary[i])
                else:
                    vals.append(br.read(pos, 32))
                    pos += 32
            if bitmap:
                where = [w for w in range(w_count) if br.read(pos + w, 1)]
                pos += w_count
                if len(where) != c:
                    raise ValueError(f"row {r}: bitmap has {len(where)} bits set, c={c}")
            else:
                pb = count_bits(w_count - 1) if w_count else 0
                where = []
                for _ in range(c):
                    where.append(br.read(pos, pb))
                    pos += pb
                if any(w >= w_count for w in where) or any(
                        a >= b for a, b in zip(where, where[1:])):
                    raise ValueError(f"row {r}: positions {where} not increasing in range")
            out[j] = tables[g, 1]
            for w, v in zip(where, vals):
                out[j, w] = v
            info = RowInfo(mode, g, c, d, bitmap)
        else:
            raise ValueError(f"row {r}: mode {mode} is invalid in version {version}")
        gap = end(r) - pos
        if gap != 0 and not (sectors and 0 < gap < 256):
            raise ValueError(f"row {r}: bits end at {pos}, the index says {end(r)}")
        if any(br.bit(pos + i) for i in range(gap)):
            raise ValueError(f"row {r}: the gap after its bits is not zero")
        infos.append(info._replace(end=pos))
    return out, infos


def decode_ref(fields: Mapping, tables: np.ndarray, bases: np.ndarray, rel: np.ndarray,
               payload: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """Words [len(ids), W] of rows `ids` (see decode_rows_ref)."""
    return decode_rows_ref(fields, tables, bases, rel, payload, ids)[0]


def check_payload_tail(payload: np.ndarray, payload_bits: int) -> None:
    """Bits past payload_bits (last partial word and pad words) must be zero."""
    br = BitReader(payload)
    for i in range(payload_bits, 32 * len(payload)):
        assert br.bit(i) == 0, f"nonzero bit {i} past payload_bits {payload_bits}"


# ---------------------------------------------------------------------------
# Files (format.h FileHeader and FileLayout)
# ---------------------------------------------------------------------------
MAGIC = b"IBPGNN\r\n"
HEADER_BYTES = 128
SECTION_ALIGN = 64
# FileHeader, little-endian, no padding: magic, version, header_bytes, dtype,
# word_view, rows, cols, row_words, num_groups, group_bits, block_rows,
# rel_bytes, selector, payload_bits, mode_rows[4], crc_tables, crc_index,
# crc_payload, crc_header, code_rows (version >= 3; reserved, zero, before),
# layout (1 byte, version >= 4; reserved, zero, before), reserved[3].
_HEADER_FORMAT = "<8s4I2Q6IQ4Q4IIB3s"
_HEADER_NAMES = ("magic", "version", "header_bytes", "dtype", "word_view", "rows", "cols",
                 "row_words", "num_groups", "group_bits", "block_rows", "rel_bytes",
                 "selector", "payload_bits", "mode_rows0", "mode_rows1", "mode_rows2",
                 "mode_rows3", "crc_tables", "crc_index", "crc_payload", "crc_header",
                 "code_rows", "layout", "reserved")


def parse_header_ref(b: bytes) -> dict:
    import struct

    assert struct.calcsize(_HEADER_FORMAT) == HEADER_BYTES
    vals = struct.unpack(_HEADER_FORMAT, bytes(b[:HEADER_BYTES]))
    f = dict(zip(_HEADER_NAMES, vals))
    f["mode_rows"] = tuple(f.pop(f"mode_rows{i}") for i in range(4))
    return f


def _align(x: int, a: int = SECTION_ALIGN) -> int:
    return (x + a - 1) // a * a


def read_file_ref(path) -> tuple:
    """(fields, tables, bases, rel, payload) of an .ibp file, parsed from the
    spec: sections in order, each at a multiple of 64 bytes, CRC-32 checked."""
    import zlib

    data = open(path, "rb").read()
    f = parse_header_ref(data)
    assert f["magic"] == MAGIC and f["header_bytes"] == HEADER_BYTES
    assert 1 <= f["version"] <= FORMAT_VERSION
    assert f["word_view"] == 0 and f["reserved"] == b"\0" * 3
    assert f["layout"] in ((0, 1) if f["version"] >= 4 else (0,))
    upw = 2 if DTYPE_BYTES[f["dtype"]] == 2 else 1
    assert f["code_rows"] in ((0, 8 * upw) if f["version"] >= 3 else (0,))
    esize = DTYPE_BYTES[f["dtype"]]
    assert f["row_words"] == (f["cols"] * esize + 3) // 4
    assert f["group_bits"] == group_bits_for(f["num_groups"])
    assert (f["block_rows"], f["rel_bytes"]) == index_geometry(f["row_words"], f["group_bits"])
    head = bytearray(data[:HEADER_BYTES])
    head[116:120] = b"\0\0\0\0"  # crc_header, the 4 bytes before code_rows
    assert zlib.crc32(bytes(head)) == f["crc_header"]
    g, w, rows = f["num_groups"], f["row_words"], f["rows"]
    blocks = (rows + f["block_rows"] - 1) // f["block_rows"]
    rel_dtype = np.dtype("<u2") if f["rel_bytes"] == 2 else np.dtype("<u4")
    pos = HEADER_BYTES
    sections = {}
    c = f["code_rows"]
    for name, nbytes in (("tables", 4 * g * (2 + c) * w), ("bases", 8 * (blocks + 1)),
                         ("rel", f["rel_bytes"] * rows),
                         ("payload", 4 * ((f["payload_bits"] + 31) // 32 + PAYLOAD_PAD_WORDS))):
        pos = _align(pos)
        sections[name] = data[pos:pos + nbytes]
        assert len(sections[name]) == nbytes, f"truncated {name}"
        pos += nbytes
    assert pos == len(data), "trailing bytes"
    assert zlib.crc32(sections["tables"]) == f["crc_tables"]
    assert zlib.crc32(sections["rel"], zlib.crc32(sections["bases"])) == f["crc_index"]
    assert zlib.crc32(sections["payload"]) == f["crc_payload"]
    tables = np.frombuffer(sections["tables"], "<u4").astype(np.uint32).reshape(g, 2 + c, w)
    bases = np.frombuffer(sections["bases"], "<u8").astype(np.uint64)
    rel = np.frombuffer(sections["rel"], rel_dtype).astype(rel_dtype.newbyteorder("="))
    payload = np.frombuffer(sections["payload"], "<u4").astype(np.uint32)
    # Mode 2 (kSparse) exists from version 2, mode 3 (kCoded) with code rows.
    assert sum(f["mode_rows"]) == rows and (c or f["mode_rows"][3] == 0)
    assert f["version"] >= 2 or f["mode_rows"][2] == 0
    return f, tables, bases, rel, payload
