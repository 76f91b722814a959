"""A plain numpy/python reference of the ibp_gnn format, version 1.

Written from the contract in csrc/ibp/format.h and the mask-selection rules of
csrc/ibp/encode.h, deliberately simple and slow: bits are handled one at a
time, masks are evaluated by brute force. Nothing here imports ibp_gnn._C, so
the tests can hold the C++ encoder and decoders against it.

Conventions:
  words   uint32 array [rows, W]: each row's bytes zero-padded to a multiple of
          4 and read as little-endian 32-bit words.
  tables  uint32 array [G, 2, W]: per group the mask, then the value.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

MODE_BITS = 2
PAYLOAD_PAD_WORDS = 2
RAW, IBP = 0, 1
SELECTOR_AUTO, SELECTOR_PAPER = 0, 1
FULL = 0xFFFFFFFF

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


def select_masks_ref(words: np.ndarray, selector: int):
    """(mask, value) uint32 [W] chosen from the sample rows `words` [n, W]."""
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
        best_t, best_saved, best_keep = None, -1, None
        for t in range(70, 101):
            ks = []
            for w in range(w_count):
                share = stats[w][0]
                ks.append(sum(1 for b in range(32) if share[b] * 100 >= t * n))
            saved = sum(k * matches[w][k] for w, k in enumerate(ks))
            if saved > best_saved:  # ties -> smallest t
                best_t, best_saved, best_keep = t, saved, ks
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
    """LSB-first bit stream, one list entry per bit."""

    def __init__(self):
        self.bits = []

    def __len__(self):
        return len(self.bits)

    def write(self, v: int, k: int) -> None:
        v = int(v)
        assert 0 <= k <= 32 and 0 <= v < (1 << k), (v, k)
        for i in range(k):
            self.bits.append((v >> i) & 1)

    def words(self, pad_words: int = PAYLOAD_PAD_WORDS) -> np.ndarray:
        """The stream as uint32 words (bit i at bit i % 32 of word i // 32),
        the last partial word zero-filled, then `pad_words` zero words."""
        n = len(self.bits)
        nwords = (n + 31) // 32
        out = [0] * (nwords + pad_words)
        for i, bit in enumerate(self.bits):
            if bit:
                out[i >> 5] |= 1 << (i & 31)
        return np.array(out, np.uint32)


def row_ibp_bits(row: np.ndarray, mask: np.ndarray, value: np.ndarray, group_bits: int) -> int:
    """Length of `row` stored kIbp under one group."""
    bits = MODE_BITS + group_bits + len(row)
    for w in range(len(row)):
        m, v = int(mask[w]), int(value[w])
        bits += (32 - popcount(m)) if (int(row[w]) & m) == v else 32
    return bits


def choose_mode(row: np.ndarray, tables: np.ndarray):
    """(mode, group, bits): the group with the fewest kIbp bits (lowest index
    on ties), raw when that is not strictly fewer than the raw bits."""
    num_groups, _, w_count = tables.shape
    gb = group_bits_for(num_groups)
    best_mode, best_g, best = RAW, 0, raw_row_bits(w_count, gb)
    for g in range(num_groups):
        bits = row_ibp_bits(row, tables[g, 0], tables[g, 1], gb)
        if bits < best:
            best_mode, best_g, best = IBP, g, bits
    return best_mode, best_g, best


def write_row(bw: BitWriter, row: np.ndarray, tables: np.ndarray, mode: int, g: int) -> None:
    num_groups, _, w_count = tables.shape
    gb = group_bits_for(num_groups)
    bw.write(mode, MODE_BITS)
    bw.write(g, gb)
    if mode == RAW:
        for w in range(w_count):
            bw.write(int(row[w]), 32)
        return
    mask, value = tables[g, 0], tables[g, 1]
    part = [(int(row[w]) & int(mask[w])) == int(value[w]) for w in range(w_count)]
    for p in part:
        bw.write(1 if p else 0, 1)
    for w in range(w_count):
        if part[w]:
            var = ~int(mask[w]) & FULL
            bw.write(extract_ref(int(row[w]), var), popcount(var))
        else:
            bw.write(int(row[w]), 32)


def encode_ref(words: np.ndarray, tables: np.ndarray):
    """(payload uint32 incl. the 2 pad words, bases uint64, rel uint16/uint32,
    mode_rows tuple of 4) for the rows `words` [rows, W] under `tables`."""
    words = np.asarray(words, np.uint32)
    tables = np.asarray(tables, np.uint32)
    rows, w_count = words.shape
    num_groups = tables.shape[0]
    assert tables.shape == (num_groups, 2, w_count) and num_groups >= 1
    assert not (tables[:, 1] & ~tables[:, 0]).any(), "value bits outside the mask"
    gb = group_bits_for(num_groups)
    block_rows, rel_bytes = index_geometry(w_count, gb)
    bw = BitWriter()
    bases, rel = [], []
    mode_rows = [0, 0, 0, 0]
    for r in range(rows):
        if r % block_rows == 0:
            bases.append(len(bw))
        rel.append(len(bw) - bases[-1])
        mode, g, bits = choose_mode(words[r], tables)
        before = len(bw)
        write_row(bw, words[r], tables, mode, g)
        assert len(bw) - before == bits
        mode_rows[mode] += 1
    bases.append(len(bw))
    rel_dtype = np.uint16 if rel_bytes == 2 else np.uint32
    assert all(v <= np.iinfo(rel_dtype).max for v in rel)
    return (bw.words(), np.array(bases, np.uint64), np.array(rel, rel_dtype),
            tuple(mode_rows))


def payload_bits_of(bases: np.ndarray) -> int:
    return int(bases[-1])


# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------
class BitReader:
    def __init__(self, payload: np.ndarray):
        self.words = [int(v) for v in np.asarray(payload, np.uint32)]

    def bit(self, i: int) -> int:
        return (self.words[i >> 5] >> (i & 31)) & 1

    def read(self, pos: int, k: int) -> int:
        v = 0
        for i in range(k):
            v |= self.bit(pos + i) << i
        return v


def _field(fields, name):
    return int(fields[name])


def decode_ref(fields: Mapping, tables: np.ndarray, bases: np.ndarray, rel: np.ndarray,
               payload: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """Words [len(ids), W] of rows `ids`, read bit by bit from the stream.

    `fields`: header fields (e.g. _C.unpack_header output or a dict with rows,
    row_words, num_groups, group_bits, block_rows, rel_bytes, payload_bits).
    Checks, for every row read, what the spec fixes: the mode is 0 or 1, the
    group is in range, and the row's bits end exactly where the index says.
    """
    rows = _field(fields, "rows")
    w_count = _field(fields, "row_words")
    num_groups = _field(fields, "num_groups")
    gb = _field(fields, "group_bits")
    block_rows = _field(fields, "block_rows")
    tables = np.asarray(tables, np.uint32).reshape(num_groups, 2, w_count)
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
        if mode == RAW:  # the group field is not used by raw rows
            for w in range(w_count):
                out[j, w] = br.read(pos, 32)
                pos += 32
        elif mode == IBP:
            if g >= num_groups:
                raise ValueError(f"row {r}: group {g} out of range")
            part = [br.read(pos + w, 1) for w in range(w_count)]
            pos += w_count
            for w in range(w_count):
                m, v = int(tables[g, 0, w]), int(tables[g, 1, w])
                if part[w]:
                    var = ~m & FULL
                    f = br.read(pos, popcount(var))
                    pos += popcount(var)
                    out[j, w] = v | deposit_ref(f, var)
                else:
                    out[j, w] = br.read(pos, 32)
                    pos += 32
        else:
            raise ValueError(f"row {r}: reserved mode {mode}")
        if pos != end(r):
            raise ValueError(f"row {r}: bits end at {pos}, the index says {end(r)}")
    return out


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
# crc_payload, crc_header, reserved[8].
_HEADER_FORMAT = "<8s4I2Q6IQ4Q4I8s"
_HEADER_NAMES = ("magic", "version", "header_bytes", "dtype", "word_view", "rows", "cols",
                 "row_words", "num_groups", "group_bits", "block_rows", "rel_bytes",
                 "selector", "payload_bits", "mode_rows0", "mode_rows1", "mode_rows2",
                 "mode_rows3", "crc_tables", "crc_index", "crc_payload", "crc_header",
                 "reserved")


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
    assert f["word_view"] == 0 and f["reserved"] == b"\0" * 8
    esize = DTYPE_BYTES[f["dtype"]]
    assert f["row_words"] == (f["cols"] * esize + 3) // 4
    assert f["group_bits"] == group_bits_for(f["num_groups"])
    assert (f["block_rows"], f["rel_bytes"]) == index_geometry(f["row_words"], f["group_bits"])
    head = bytearray(data[:HEADER_BYTES])
    head[116:120] = b"\0\0\0\0"  # crc_header, the 4 bytes before reserved
    assert zlib.crc32(bytes(head)) == f["crc_header"]
    g, w, rows = f["num_groups"], f["row_words"], f["rows"]
    blocks = (rows + f["block_rows"] - 1) // f["block_rows"]
    rel_dtype = np.dtype("<u2") if f["rel_bytes"] == 2 else np.dtype("<u4")
    pos = HEADER_BYTES
    sections = {}
    for name, nbytes in (("tables", 8 * g * w), ("bases", 8 * (blocks + 1)),
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
    tables = np.frombuffer(sections["tables"], "<u4").astype(np.uint32).reshape(g, 2, w)
    bases = np.frombuffer(sections["bases"], "<u8").astype(np.uint64)
    rel = np.frombuffer(sections["rel"], rel_dtype).astype(rel_dtype.newbyteorder("="))
    payload = np.frombuffer(sections["payload"], "<u4").astype(np.uint32)
    assert sum(f["mode_rows"]) == rows and f["mode_rows"][2:] == (0, 0)
    return f, tables, bases, rel, payload
