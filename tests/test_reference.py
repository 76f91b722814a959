"""The C++ codec held against the plain numpy reference in tests/reference.py:
mask selection (invariance masks and frames of reference), the group choice of
compress(), the encoded arrays bit for bit (raw, kIbp and kSparse rows), and
decoding (reference and C++ gather) back to the original bytes, for format
version 2 streams and the frozen version-1 files."""
from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ibp_gnn
import ibp_gnn.testing
from ibp_gnn import _C

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as R  # noqa: E402

# name -> (header code, numpy storage dtype of the bit patterns, unsigned view)
DTYPES = {
    "float32": (0, np.float32, np.uint32),
    "float16": (1, np.float16, np.uint16),
    "bfloat16": (2, np.int16, np.uint16),  # numpy has no bf16: int16 bit patterns
    "int8": (3, np.int8, np.uint8),
    "uint8": (4, np.uint8, np.uint8),
    "int16": (5, np.int16, np.uint16),
    "int32": (6, np.int32, np.uint32),
    "int64": (7, np.int64, np.uint64),
}
FLOATS = ("float32", "float16", "bfloat16")

# Special bit patterns: NaNs with various payloads and signs, -0.0, +/-inf,
# denormals (smallest, largest, negative).
SPECIAL = {
    "float32": [0x7FC00000, 0x7F800001, 0xFFC00001, 0x7FFFFFFF, 0xFF800123, 0x7FA5A5A5,
                0x80000000, 0x7F800000, 0xFF800000, 0x00000001, 0x807FFFFF, 0x00400000],
    "float16": [0x7E00, 0x7C01, 0xFE01, 0x7FFF, 0xFD55, 0x8000, 0x7C00, 0xFC00, 0x0001,
                0x83FF, 0x0200],
    "bfloat16": [0x7FC0, 0x7F81, 0xFFC1, 0x7FFF, 0xFFA5, 0x8000, 0x7F80, 0xFF80, 0x0001,
                 0x807F, 0x0040],
}
SMALL_FLOATS = [0.0, 1.0, -1.0, 0.5, 2.0, 0.125, 3.0, 100.0]
SMALL_INTS = [0, 1, 2, 3, 5, 7, -1, -2, 100]

# CPU gather kernels of _C.gather this CPU runs: 1 portable, 2 BMI2, 3 AVX2, 4 AVX-512.
CPU_KERNELS = tuple(_C.cpu_kernels())

# Row shapes: empty, one row, one column, odd byte widths, a few hundred rows.
SHAPES = [(0, 3), (1, 1), (1, 5), (5, 1), (7, 3), (64, 2), (65, 5), (300, 7)]


class Case(NamedTuple):
    x: object            # what compress() gets: numpy array, or torch tensor for bf16
    xb: np.ndarray       # uint8 [rows, row_bytes]: the original bytes
    storage: type        # numpy dtype of the elements' bit patterns
    code: int            # header dtype code


def _pool_bits(name: str, values) -> np.ndarray:
    _, storage, unsigned = DTYPES[name]
    if name == "float32":
        return np.array(values, np.float32).view(np.uint32)
    if name == "float16":
        return np.array(values, np.float16).view(np.uint16)
    if name == "bfloat16":
        return (np.array(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return np.array(values, np.int64).astype(storage).view(unsigned)


def _special_bits(name: str) -> np.ndarray:
    _, storage, unsigned = DTYPES[name]
    if name in SPECIAL:
        return np.array(SPECIAL[name], unsigned)
    info = np.iinfo(storage)
    bits = 8 * np.dtype(storage).itemsize
    vals = [info.min, info.max, -1 if info.min < 0 else 0, 0]
    out = np.array(vals, np.int64).astype(storage).view(unsigned)
    alt = int("55" * (bits // 8), 16)
    return np.concatenate([out, np.array([alt, alt << 1, 1 << (bits - 1)], np.uint64)
                           .astype(unsigned)])


def _random_bits(rng, unsigned, shape) -> np.ndarray:
    nbytes = int(np.prod(shape)) * np.dtype(unsigned).itemsize
    return rng.integers(0, 256, nbytes, dtype=np.uint8).view(unsigned).reshape(shape)


def make_case(name: str, rows: int, cols: int, seed: int, kind: str = "mixed") -> Case:
    """Bit patterns of a [rows, cols] matrix of dtype `name`.

    kind "mixed": rows drawn from zero / sparse / dense small values / random
    bits / a repeated template / sparse with special values, so that both raw
    and ibp rows occur. "nan": NaN rows with random payloads and signs plus
    +/-inf (floats; ints get random bits under a fixed high part).
    "random": uniformly random bits.
    """
    code, storage, unsigned = DTYPES[name]
    rng = np.random.default_rng(seed)
    pool = _pool_bits(name, SMALL_FLOATS if name in FLOATS else SMALL_INTS)
    special = _special_bits(name)
    bits = np.zeros((rows, cols), unsigned)
    if kind == "random":
        bits = _random_bits(rng, unsigned, (rows, cols))
    elif kind == "nan":
        nbits = 8 * np.dtype(unsigned).itemsize
        if name in FLOATS:
            exp_mask = {"float32": 0x7F800000, "float16": 0x7C00, "bfloat16": 0x7F80}[name]
            frac_mask = {"float32": 0x007FFFFF, "float16": 0x03FF, "bfloat16": 0x007F}[name]
            sign = 1 << (nbits - 1)
            r = _random_bits(rng, unsigned, (rows, cols)).astype(np.uint64)
            b = (exp_mask | (r & frac_mask) | (r & sign)).astype(np.uint64)
            b[(r & frac_mask) == 0] |= 1  # keep NaNs NaN
            inf = rng.random((rows, cols)) < 0.1
            b[inf] = exp_mask | (r[inf] & sign)
            bits = b.astype(unsigned)
        else:
            high = np.uint64(0xA5) << np.uint64(nbits - 8)
            r = _random_bits(rng, unsigned, (rows, cols)).astype(np.uint64)
            bits = ((r & np.uint64((1 << (nbits - 8)) - 1)) | high).astype(unsigned)
    else:
        template = pool[rng.integers(0, len(pool), cols)]
        kinds = rng.choice(6, size=rows, p=[0.15, 0.35, 0.15, 0.12, 0.1, 0.13])
        for r in range(rows):
            k = kinds[r]
            if k == 1:    # sparse
                nz = rng.random(cols) < 0.15
                bits[r, nz] = pool[rng.integers(0, len(pool), nz.sum())]
            elif k == 2:  # dense small values
                bits[r] = pool[rng.integers(0, len(pool), cols)]
            elif k == 3:  # random bits
                bits[r] = _random_bits(rng, unsigned, (cols,))
            elif k == 4:  # repeated row
                bits[r] = template
            elif k == 5:  # sparse with special values
                nz = rng.random(cols) < 0.3
                bits[r, nz] = special[rng.integers(0, len(special), nz.sum())]
    bits = np.ascontiguousarray(bits)
    arr = bits.view(storage)
    if name == "bfloat16":
        x = torch.from_numpy(arr.copy()).view(torch.bfloat16)
    else:
        x = arr
    return Case(x, R.to_bytes(arr), storage, code)


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def _unsorted_ids(rng, rows: int) -> np.ndarray:
    if rows == 0:
        return np.zeros(0, np.int64)
    ids = rng.integers(0, rows, size=2 * rows + 3)
    ids[: min(rows, 3)] = np.arange(min(rows, 3))[::-1]  # descending, and duplicates
    return ids.astype(np.int64)


def _torch_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8).reshape(t.shape[0], t.shape[1] * t.element_size())


def _check_gather(ct, case: Case, ids: np.ndarray, threads: int = 1) -> None:
    """gather(ids) equals decode_ref and the original rows, byte for byte."""
    out = ct.gather(torch.from_numpy(ids), threads=threads)
    got = _torch_bytes(out)
    want = torch.from_numpy(np.ascontiguousarray(case.xb[ids]))
    assert got.shape == want.shape
    assert torch.equal(got, want)
    ref_words = R.decode_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload, ids)
    ref_bytes = R.to_bytes(R.from_words(ref_words, case.storage, case.xb.shape[1]
                                        // np.dtype(case.storage).itemsize))
    assert np.array_equal(ref_bytes, case.xb[ids])
    assert torch.equal(got, torch.from_numpy(ref_bytes))
    if len(ids):  # int32 ids decode the same rows
        out32 = ct.gather(torch.from_numpy(ids.astype(np.int32)), threads=threads)
        assert torch.equal(_torch_bytes(out32), want)
        # Each CPU deposit kernel explicitly: the portable five-stage deposit
        # (the code the CUDA kernel runs) and, where the CPU has it, BMI2 PDEP.
        for kernel in CPU_KERNELS:
            raw = np.zeros(case.xb[ids].size, np.uint8)
            _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload, ids, raw,
                      threads, kernel)
            assert np.array_equal(raw.reshape(want.shape), case.xb[ids]), kernel


def _check_against_encode_ref(ct, words: np.ndarray, tables: np.ndarray,
                              allow_sparse: bool, sparse_code: bool = True) -> tuple:
    payload, bases, rel, mode_rows = R.encode_ref(words, tables, allow_sparse=allow_sparse,
                                                  sparse_code=sparse_code,
                                                  layout=ct._fields.get("layout", 0))
    assert ct._payload.dtype == np.uint32 and np.array_equal(ct._payload, payload)
    assert ct._bases.dtype == np.uint64 and np.array_equal(ct._bases, bases)
    assert ct._rel.dtype == rel.dtype and np.array_equal(ct._rel, rel)
    f = ct._fields
    assert f["payload_bits"] == int(bases[-1])
    assert tuple(f["mode_rows"]) == mode_rows
    R.check_payload_tail(ct._payload, f["payload_bits"])
    return mode_rows


def _check_header(ct, case: Case, num_groups: int, selector: int) -> None:
    f = ct._fields
    rows, row_bytes = case.xb.shape
    w = (row_bytes + 3) // 4
    gb = R.group_bits_for(num_groups)
    assert (f["dtype"], f["rows"], f["row_words"]) == (case.code, rows, w)
    assert f["cols"] * np.dtype(case.storage).itemsize == row_bytes
    assert (f["num_groups"], f["group_bits"], f["selector"]) == (num_groups, gb, selector)
    assert (f["block_rows"], f["rel_bytes"]) == R.index_geometry(w, gb)


# ---------------------------------------------------------------------------
# The reference itself
# ---------------------------------------------------------------------------
def test_reference_bit_helpers_known_values():
    # PDEP / PEXT examples worked by hand.
    assert R.deposit_ref(0b1011, 0xF0) == 0xB0
    assert R.deposit_ref(0b01, 0b1010) == 0b0010
    assert R.deposit_ref(0b10, 0b1010) == 0b1000
    assert R.deposit_ref(0xFFFFFFFF, 0x80000001) == 0x80000001
    assert R.deposit_ref(0b10, 0x80000001) == 0x80000000
    assert R.deposit_ref(0x12345678, 0) == 0
    assert R.deposit_ref(0x12345678, 0xFFFFFFFF) == 0x12345678
    assert R.deposit_ref(0xFFFF, 0xAAAAAAAA) == 0xAAAAAAAA
    assert R.deposit_ref(0x5, 0x55555555) == 0x11
    assert R.extract_ref(0xB0, 0xF0) == 0b1011
    assert R.extract_ref(0xAAAAAAAA, 0xAAAAAAAA) == 0xFFFF
    assert R.extract_ref(0xAAAAAAAA, 0x55555555) == 0
    assert R.extract_ref(0x80000000, 0x80000001) == 0b10
    rng = np.random.default_rng(7)
    for _ in range(200):
        m, x = (int(v) for v in rng.integers(0, 1 << 32, 2))
        k = R.popcount(m)
        assert R.extract_ref(R.deposit_ref(x, m), m) == x & ((1 << k) - 1)
        assert R.deposit_ref(R.extract_ref(x, m), m) == x & m
    # to_words / from_words on known bytes: little-endian words, zero padding.
    x = np.array([[1, 2, 3], [0xFF, 0, 0x80]], np.uint8)
    assert R.to_words(x).tolist() == [[0x030201], [0x8000FF]]
    y = np.array([[0x0123456789ABCDEF]], np.int64)
    assert R.to_words(y).tolist() == [[0x89ABCDEF, 0x01234567]]
    assert np.array_equal(R.from_words(R.to_words(x), np.uint8, 3), x)
    # index geometry boundaries (format.h): 16-bit offsets while 16 raw rows fit.
    assert R.index_geometry(1, 0) == (64, 2)
    assert R.index_geometry(127, 0) == (16, 2)
    assert R.index_geometry(128, 0) == (64, 4)
    for w, gb in [(1, 0), (3, 1), (30, 2), (127, 0), (128, 0), (126, 3), (5000, 16)]:
        assert R.index_geometry(w, gb) == tuple(_C.index_geometry(w, gb))


# ---------------------------------------------------------------------------
# 1. mask selection
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(DTYPES))
def test_select_masks_matches_reference(name, shape):
    case = make_case(name, *shape, seed=_seed(name, shape))
    rows, row_bytes = case.xb.shape
    w = (row_bytes + 3) // 4
    words = R.to_words(case.xb)
    rng = np.random.default_rng(rows)
    samples = [np.arange(rows, dtype=np.uint64)]
    if rows:  # a shuffled subset with duplicates
        samples.append(rng.integers(0, rows, size=max(1, rows // 2)).astype(np.uint64))
    for sample in samples:
        for selector in (R.SELECTOR_AUTO, R.SELECTOR_PAPER):
            mask, value = _C.select_masks(case.xb, row_bytes, w, sample, selector)
            rmask, rvalue = R.select_masks_ref(words[sample.astype(np.int64)], selector)
            assert np.array_equal(mask, rmask), (selector, mask, rmask)
            assert np.array_equal(value, rvalue), (selector, value, rvalue)
        # Without frames of reference (compress()'s clustering rounds).
        mask, value = _C.select_masks(case.xb, row_bytes, w, sample, R.SELECTOR_AUTO, False)
        rmask, rvalue = R.select_masks_ref(words[sample.astype(np.int64)], R.SELECTOR_AUTO,
                                           frames=False)
        assert np.array_equal(mask, rmask) and np.array_equal(value, rvalue)
        assert not (value & ~mask).any()


@pytest.mark.parametrize("name", ["float32", "float16", "int64", "uint8"])
@pytest.mark.parametrize("kind", ["nan", "random"])
def test_select_masks_special_data(name, kind):
    case = make_case(name, 150, 6, seed=11, kind=kind)
    rows, row_bytes = case.xb.shape
    w = (row_bytes + 3) // 4
    words = R.to_words(case.xb)
    for selector in (R.SELECTOR_AUTO, R.SELECTOR_PAPER):
        mask, value = _C.select_masks(case.xb, row_bytes, w, np.arange(rows, dtype=np.uint64),
                                      selector)
        rmask, rvalue = R.select_masks_ref(words, selector)
        assert np.array_equal(mask, rmask) and np.array_equal(value, rvalue)


def test_select_masks_crafted_rankings():
    """Bit counts chosen so that auto and paper pick different, hand-computed
    prefixes, and the stable tie-break by bit index decides auto's mask.

    Word 0 over n = 100 rows, bit b set in rows [0, cnt[b]) (bit 13 in rows
    95..99). Shares: 100 for bits 0, 12, 14..31 (20 bits); then 10 (99), 11
    (98), 1, 2, 13 (95, tie: index order), 3 (90), 4 (80), 5 (72), 6 (70), 7
    (69), 8 (55), 9 (50). k * matches(k): 20*100, 21*99, 22*98, 23*95, 24*95 =
    2280 (best), 25*90 = 2250, 26*85, ... so auto keeps all bits but 3..9, 13.
    Paper: t in 91..95 keeps 25 bits (2250), the best of all t, smallest t
    wins; t = 96 keeps 22 (2156), t = 81..90 keeps 26 (2210): all but 3..9.
    Word 1 is word 0 reversed and XORed with 0xF0F00000 (same masks, the
    majority value becomes 0xF0F00000)."""
    n = 100
    col = np.zeros(n, np.uint32)
    cnt = [0, 5, 5, 10, 20, 28, 30, 31, 45, 50, 1, 2]
    for b, c in enumerate(cnt):
        col[:c] |= np.uint32(1 << b)
    col[95:] |= np.uint32(1 << 13)
    col2 = col[::-1].copy() ^ np.uint32(0xF0F00000)
    x = np.ascontiguousarray(np.stack([col, col2, np.arange(n, dtype=np.uint32)], 1))
    words = R.to_words(x)
    want = {R.SELECTOR_AUTO: 0xFFFFDC07, R.SELECTOR_PAPER: 0xFFFFFC07}
    for selector in (R.SELECTOR_AUTO, R.SELECTOR_PAPER):
        mask, value = _C.select_masks(R.to_bytes(x), 12, 3, np.arange(n, dtype=np.uint64),
                                      selector)
        rmask, rvalue = R.select_masks_ref(words, selector)
        assert np.array_equal(mask, rmask) and np.array_equal(value, rvalue)
        assert int(mask[0]) == int(mask[1]) == want[selector], hex(int(mask[0]))
        assert int(value[0]) == 0 and int(value[1]) == 0xF0F00000


def test_select_masks_ties_and_half_shares():
    """Hand-computed masks where only the tie rules decide.

    n = 100 rows. Word 0: bits 0..19 never set (share 100), bits 20..24 set in
    rows 0..19 (share 80), bits 25..31 set in rows 20..59 (share 60). Then
    20 * 100 = 25 * 80 = 2000: auto takes the larger k (bits 0..24), and paper
    finds the same total for t <= 80 (k = 25) and t > 80 (k = 20), taking the
    smallest t, so bits 0..24 too. Word 1 is zero (k = 32 for every t).
    """
    n = 100
    w0 = np.zeros(n, np.uint32)
    w0[:20] |= np.uint32(0x1F << 20)
    w0[20:60] |= np.uint32(0x7F << 25)
    x = np.ascontiguousarray(np.stack([w0, np.zeros(n, np.uint32)], 1))
    sample = np.arange(n, dtype=np.uint64)
    for selector in (R.SELECTOR_AUTO, R.SELECTOR_PAPER):
        mask, value = _C.select_masks(R.to_bytes(x), 8, 2, sample, selector)
        rmask, rvalue = R.select_masks_ref(R.to_words(x), selector)
        assert np.array_equal(mask, rmask) and np.array_equal(value, rvalue)
        assert mask.tolist() == [0x01FFFFFF, 0xFFFFFFFF] and value.tolist() == [0, 0]


def test_select_masks_exact_half_is_not_majority():
    """A bit set in exactly half the rows has majority 0 (2 * ones > n is
    required). Word 0, rows 0 and ~0: every bit has share 1 = n / 2, majority
    0, row 0 matches every prefix: the invariance mask keeps all 32 bits
    (32 * 1), value 0. Word 1, rows 0x0000FFFF and 0x7FFF0000: bit 31 (share
    2) ranks first, then bits 0..30 in index order; row 1 matches the
    prefixes up to bit 15, so 17 bits (17 * 1 > 1 * 2). Paper keeps only
    share >= 70%: nothing in word 0, bit 31 in word 1.

    Version 2 auto then tries frames of reference: word 0's window of 2
    starting at 0xFFFFFFFF wraps past 2^32 to hold 0 too (31 * 2 = 62 > 32;
    the window at 0 holds one row); word 1's best is a one-row window
    (31 * 1 > 17), the first start in increasing order, 0x0000FFFF."""
    x = np.array([[0, 0x0000FFFF], [-1, 0x7FFF0000]], np.int32)
    sample = np.arange(2, dtype=np.uint64)
    want = {R.SELECTOR_AUTO: ([0xFFFFFFFE, 0xFFFFFFFE], [0xFFFFFFFF, 0x0000FFFF]),
            R.SELECTOR_PAPER: ([0, 0x80000000], [0, 0])}
    for selector in (R.SELECTOR_AUTO, R.SELECTOR_PAPER):
        mask, value = _C.select_masks(R.to_bytes(x), 8, 2, sample, selector)
        rmask, rvalue = R.select_masks_ref(R.to_words(x), selector)
        assert np.array_equal(mask, rmask) and np.array_equal(value, rvalue)
        assert (mask.tolist(), value.tolist()) == want[selector]
    # Without frames (select_masks(..., frames=False); version 1's selector).
    want = ([0xFFFFFFFF, 0x8000FFFF], [0, 0])
    mask, value = _C.select_masks(R.to_bytes(x), 8, 2, sample, R.SELECTOR_AUTO, False)
    rmask, rvalue = R.select_masks_ref(R.to_words(x), R.SELECTOR_AUTO, frames=False)
    assert (mask.tolist(), value.tolist()) == (rmask.tolist(), rvalue.tolist()) == want


# ---------------------------------------------------------------------------
# 2 + 3. compress() against encode_ref; decode_ref and gather
# ---------------------------------------------------------------------------
def _compress_checked(case: Case, mode: str, **kw):
    """compress(): one group of tables is select_masks_ref of the sample
    (several groups are checked by test_group_choice_matches_reference); its
    arrays are encode_ref's with its tables."""
    selector = {"auto": R.SELECTOR_AUTO, "paper": R.SELECTOR_PAPER}[mode]
    ct = ibp_gnn.compress(case.x, mode=mode, threads=1, **kw)
    _check_header(ct, case, ct._tables.shape[0], selector)
    if mode == "paper":
        assert ct._tables.shape[0] == 1 and ct._fields["mode_rows"][R.SPARSE] == 0
    words = R.to_words(case.xb)
    sample_rows = kw.get("sample_rows", ibp_gnn._encode.DEFAULT_SAMPLE_ROWS)
    rows = words.shape[0]
    if rows <= sample_rows:
        sample = np.arange(rows)
    else:  # the documented fixed random subset
        sample = np.sort(np.random.default_rng(0x1B9).choice(rows, size=sample_rows,
                                                              replace=False))
    tables = ct._tables
    groups = tables.shape[0]
    assert groups == 1 or (mode == "auto" and len(sample) >= 256 and groups in R.GROUP_CHOICES)
    if groups == 1:
        one = R.make_tables(R.select_masks_ref(words[sample], selector))
        assert np.array_equal(tables[:, :2], one)
        if tables.shape[1] > 2:  # kCoded rows kept (auto, when they pay): fitted to the
            # sample, evenly strided to CODE_ROWS_SAMPLE rows (one group: all of them)
            assert mode == "auto"
            step = max(1, -(-len(sample) // ibp_gnn._encode.CODE_ROWS_SAMPLE))
            codes = R.select_codes_ref(words[sample][::step], case.code, case.xb.shape[1])
            assert np.array_equal(tables[0, 2:], codes)
    mode_rows = _check_against_encode_ref(ct, words, tables, allow_sparse=mode == "auto")
    return ct, words, mode_rows


@pytest.mark.parametrize("mode", ["auto", "paper"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(DTYPES))
def test_compress_matches_encode_ref(name, shape, mode):
    case = make_case(name, *shape, seed=_seed(name, shape) + 1)
    ct, words, mode_rows = _compress_checked(case, mode)
    if shape[0] >= 300 and case.xb.shape[1] >= 8:
        # Paper: one group, raw and kIbp rows. Auto fits groups to the random
        # rows too, so raw rows may vanish.
        assert mode_rows[R.IBP] > 0 and (mode == "auto" or mode_rows[R.RAW] > 0), mode_rows


@pytest.mark.parametrize("mode", ["auto", "paper"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(DTYPES))
def test_decode_ref_and_gather(name, shape, mode):
    case = make_case(name, *shape, seed=_seed(name, shape) + 2)
    ct = ibp_gnn.compress(case.x, mode=mode, threads=1)
    rows = shape[0]
    # decode_ref of every row, in order, is the original.
    words = R.decode_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload, range(rows))
    assert np.array_equal(R.to_bytes(R.from_words(words, case.storage, shape[1])), case.xb)
    _check_gather(ct, case, _unsorted_ids(np.random.default_rng(rows + 5), rows))
    full = ct.decompress(threads=1)
    assert torch.equal(_torch_bytes(full), torch.from_numpy(case.xb))


@pytest.mark.parametrize("kind", ["nan", "random"])
@pytest.mark.parametrize("name", list(DTYPES))
def test_special_values_roundtrip(name, kind):
    """NaN payloads / +-inf (masked exponents, deposited payload bits) and
    incompressible data (all rows raw)."""
    case = make_case(name, 130, 5, seed=3, kind=kind)
    for mode in ("auto", "paper"):
        ct, _, mode_rows = _compress_checked(case, mode)
        if kind == "nan" and mode == "auto":
            assert mode_rows[R.IBP] > 0, mode_rows
        _check_gather(ct, case, _unsorted_ids(np.random.default_rng(4), 130))


@pytest.mark.parametrize("wide_bytes", [508, 512, 520])  # W = 127, 128, 130
@pytest.mark.parametrize("name", ["float32", "int8", "float16", "int64"])
def test_wide_rows_index_geometry(name, wide_bytes):
    """Rows around the 16-bit/32-bit rel switch (block_rows 16 vs 64)."""
    item = np.dtype(DTYPES[name][1]).itemsize
    case = make_case(name, 70, wide_bytes // item, seed=wide_bytes)  # int64: 504 bytes
    ct, _, _ = _compress_checked(case, "auto")
    assert ct._fields["rel_bytes"] == (2 if wide_bytes < 512 else 4)
    assert ct._fields["block_rows"] == (16 if wide_bytes < 512 else 64)
    _check_gather(ct, case, _unsorted_ids(np.random.default_rng(1), 70))


def test_sample_rows_subset():
    """Masks chosen from a subset of rows (sample_rows < rows)."""
    case = make_case("float32", 300, 7, seed=21)
    ct, _, _ = _compress_checked(case, "auto", sample_rows=37)
    _check_gather(ct, case, _unsorted_ids(np.random.default_rng(2), 300))
    ct, _, _ = _compress_checked(case, "paper", sample_rows=299)


def test_torch_and_numpy_inputs_agree():
    case = make_case("int16", 100, 5, seed=5)
    a = ibp_gnn.compress(case.x, threads=1)
    b = ibp_gnn.compress(torch.from_numpy(case.x), threads=1)
    for k in ("_tables", "_bases", "_rel", "_payload"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    assert a._header == b._header


def test_compress_in_small_chunks(monkeypatch):
    """compress() feeding the encoder many chunks (64 rows each) writes the
    same arrays as the reference."""
    import ibp_gnn._encode as T

    monkeypatch.setattr(T, "DEFAULT_CHUNK_BYTES", 1)
    for name, cols in (("float16", 5), ("uint8", 3), ("int64", 2)):
        case = make_case(name, 300, cols, seed=_seed("chunks", name))
        ct, _, _ = _compress_checked(case, "auto")
        _check_gather(ct, case, _unsorted_ids(np.random.default_rng(8), 300))


@pytest.mark.parametrize("name,cols", [("bfloat16", 5), ("int8", 3), ("float32", 130)])
def test_compress_file_matches_reference(tmp_path, name, cols):
    """compress_file (small chunks) -> load: the stored sections are the
    reference's arrays; the file equals compress(x).save()."""
    case = make_case(name, 200, cols, seed=_seed("file", name))
    arr = case.xb.view(case.storage).reshape(200, cols)
    if name == "bfloat16":  # no numpy bf16, so no .npy source
        ct_mem = ibp_gnn.compress(case.x, threads=1)
        src = None
    else:
        ct_mem = ibp_gnn.compress(arr, threads=1)
        src = tmp_path / "x.npy"
        np.save(src, arr)
    words = R.to_words(case.xb)
    tables = R.make_tables(R.select_masks_ref(words, R.SELECTOR_AUTO))  # < 256 rows: 1 group
    _check_against_encode_ref(ct_mem, words, tables, allow_sparse=True)
    saved = ct_mem.save(tmp_path / "mem.ibp")
    ct = ibp_gnn.load(saved)
    _check_against_encode_ref(ct, words, tables, allow_sparse=True)
    assert np.array_equal(ct._tables, tables)
    _check_gather(ct, case, _unsorted_ids(np.random.default_rng(1), 200))
    if src is not None:
        out = ibp_gnn.compress_file(src, tmp_path / "file.ibp", chunk_bytes=64 * cols,
                                    threads=1, progress=False)
        assert out.read_bytes() == saved.read_bytes()


def test_gather_threads_odd_width():
    """Multi-threaded gather into unaligned rows (3-byte rows, > 2 ms of work)."""
    case = make_case("uint8", 300, 3, seed=12)
    ct, _, _ = _compress_checked(case, "auto")
    ids = np.random.default_rng(0).integers(0, 300, 1_500_000).astype(np.int64)
    assert _C.gather_threads(len(ids), 3, 2, -(-ct._payload.nbytes // 300)) == 2
    for threads in (1, 2):
        got = _torch_bytes(ct.gather(torch.from_numpy(ids), threads=threads))
        assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(case.xb[ids])))
    case = make_case("float16", 300, 5, seed=13)
    ct, _, _ = _compress_checked(case, "paper")
    ids = np.random.default_rng(1).integers(0, 300, 30_000).astype(np.int32)
    got = _torch_bytes(ct.gather(torch.from_numpy(ids), threads=2))
    assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(case.xb[ids])))


def test_compress_one_group_with_code_rows_matches_reference():
    """A tiny fp16 table where the auto encoder keeps kCoded rows with a single
    group (found by the property test below): the mask tables and the code rows
    are both the reference's."""
    case = make_case("float16", 122, 1, 0, "mixed")
    ct, words, _ = _compress_checked(case, "auto")
    assert ct._tables.shape[:2] == (1, 2 + 16)
    dec = R.decode_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload, range(122))
    assert np.array_equal(dec, words)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(name=st.sampled_from(list(DTYPES)), rows=st.integers(0, 200), cols=st.integers(1, 9),
       seed=st.integers(0, 2**16), kind=st.sampled_from(["mixed", "mixed", "nan", "random"]),
       mode=st.sampled_from(["auto", "paper"]))
def test_property_compress_matches_reference(name, rows, cols, seed, kind, mode):
    case = make_case(name, rows, cols, seed, kind)
    ct, words, _ = _compress_checked(case, mode)
    dec = R.decode_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload, range(rows))
    assert np.array_equal(dec, words)
    _check_gather(ct, case, _unsorted_ids(np.random.default_rng(seed), rows))


# ---------------------------------------------------------------------------
# 4. several groups, the streaming encoder and threads
# ---------------------------------------------------------------------------
def _encode_chunks(xb: np.ndarray, tables: np.ndarray, chunk_blocks, threads: int = 1,
                   allow_sparse: bool = True, sparse_code: bool = True):
    """Encodes with _C.Encoder in chunks of chunk_blocks[i] * block_rows rows
    (the rest in a last chunk). Returns (encoder, words, rel bytes, bases)."""
    rows, row_bytes = xb.shape
    w = tables.shape[2]
    enc = _C.Encoder(row_bytes, w, np.ascontiguousarray(tables, np.uint32),
                     allow_sparse=allow_sparse, sparse_code=sparse_code)
    words, rel, bases = [], [], []
    a = 0
    for nb in list(chunk_blocks) + [None]:
        b = rows if nb is None else min(rows, a + nb * enc.block_rows)
        wd, r, s = enc.encode(np.ascontiguousarray(xb[a:b]), row_bytes, threads)
        words.append(wd), rel.append(r), bases.append(s)
        a = b
    wd, s = enc.finish()
    words.append(wd), bases.append(s)
    assert enc.rows == rows
    return enc, np.concatenate(words), np.concatenate(rel), np.concatenate(bases)


def _assemble(case: Case, tables: np.ndarray, enc, words, rel, bases):
    rows, row_bytes = case.xb.shape
    header = _C.pack_header(dict(
        dtype=case.code, rows=rows, cols=row_bytes // np.dtype(case.storage).itemsize,
        row_words=tables.shape[2], num_groups=tables.shape[0], group_bits=enc.group_bits,
        block_rows=enc.block_rows, rel_bytes=enc.rel_bytes, selector=0,
        payload_bits=enc.payload_bits, mode_rows=enc.mode_rows))
    rel = rel.view(np.uint16 if enc.rel_bytes == 2 else np.uint32)
    return ibp_gnn.CompressedTensor(header, tables, bases, rel, words)  # validates


def _cluster_case(name: str, rows: int, cols: int, seed: int):
    """Rows from two structured clusters (A: small non-negative values in the
    first half of the columns; B: values with the high bits of one fixed
    pattern), all-zero rows and random rows."""
    code, storage, unsigned = DTYPES[name]
    rng = np.random.default_rng(seed)
    nbits = 8 * np.dtype(unsigned).itemsize
    kinds = rng.choice(4, size=rows, p=[0.35, 0.35, 0.15, 0.15])
    bits = np.zeros((rows, cols), np.uint64)
    half = max(1, cols // 2)
    for r, k in enumerate(kinds):
        if k == 0:
            bits[r, :half] = rng.integers(0, 16, half)
        elif k == 1:
            hi = 0b1011 << (nbits - 4)
            low = nbits - 4
            if nbits > 8:
                hi |= 0b0110 << (nbits - 8)
                low = nbits - 8
            bits[r] = np.uint64(hi) | rng.integers(0, 1 << low, cols).astype(np.uint64)
        elif k == 3:
            bits[r] = _random_bits(rng, np.uint64, (cols,))
    arr = np.ascontiguousarray(bits.astype(unsigned).view(storage))
    x = torch.from_numpy(arr.copy()).view(torch.bfloat16) if name == "bfloat16" else arr
    return Case(x, R.to_bytes(arr), storage, code), kinds


def _group_tables(words: np.ndarray, kinds: np.ndarray, num_groups: int) -> np.ndarray:
    """Hand-made groups: masks fitted to cluster A, to cluster B, an all-zero
    mask, an all-ones mask with value 0 (matches only zero words, nvar = 0)
    and a duplicate of group 0 (ties must go to the lowest index)."""
    w = words.shape[1]
    a = R.select_masks_ref(words[kinds == 0], R.SELECTOR_AUTO)
    b = R.select_masks_ref(words[kinds == 1], R.SELECTOR_AUTO)
    zero = (np.zeros(w, np.uint32), np.zeros(w, np.uint32))
    ones = (np.full(w, 0xFFFFFFFF, np.uint32), np.zeros(w, np.uint32))
    groups = {2: [a, b], 3: [zero, b, a], 5: [a, b, zero, ones, a]}[num_groups]
    return R.make_tables(*groups)


@pytest.mark.parametrize("allow_sparse", [False, True], ids=["nosparse", "sparse"])
@pytest.mark.parametrize("num_groups", [2, 3, 5])
@pytest.mark.parametrize("name,cols", [("float32", 6), ("int64", 3), ("float16", 5),
                                       ("uint8", 9), ("int32", 40)])
def test_multi_group_encoder(name, cols, num_groups, allow_sparse):
    case, kinds = _cluster_case(name, 333, cols, seed=num_groups * 100 + cols)
    words = R.to_words(case.xb)
    tables = _group_tables(words, kinds, num_groups)
    enc, pw, rel, bases = _encode_chunks(case.xb, tables, chunk_blocks=[1, 0, 2, 1],
                                         allow_sparse=allow_sparse)
    assert enc.group_bits == R.group_bits_for(num_groups)
    ct = _assemble(case, tables, enc, pw, rel, bases)
    mode_rows = _check_against_encode_ref(ct, words, tables, allow_sparse=allow_sparse)
    assert mode_rows[R.IBP] > 0
    if not allow_sparse:
        assert mode_rows[R.SPARSE] == 0
    # The reference's group choice really uses several groups, never the
    # all-zero mask group for kIbp rows, and never the duplicate (index 4) of
    # group 0.
    chosen = [R.choose_mode(words[r], tables, allow_sparse=allow_sparse)[:2]
              for r in range(len(words))]
    used = {g for m, g in chosen if m == R.IBP}
    assert len(used) >= 2, used
    if num_groups >= 3:
        assert (2 if num_groups == 5 else 0) not in used
    if num_groups == 5:
        assert 4 not in {g for m, g in chosen if m != R.RAW}
        assert allow_sparse or 3 in used
    # The mode and group fields in the C++ stream are the reference's choice.
    _, infos = R.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload,
                                 range(len(words)))
    for (m, g), info in zip(chosen, infos):
        assert info.mode == m and (m == R.RAW or info.group == g)
    # Encoder.row_bits (the cost compress() clusters with) is the reference's.
    assert np.array_equal(_C.Encoder(case.xb.shape[1], tables.shape[2], tables).row_bits(
        case.xb, case.xb.shape[1], 1), R.row_bits_ref(words, tables))
    _check_gather(ct, case, _unsorted_ids(np.random.default_rng(9), 333))


def test_multi_group_single_chunk_equals_chunked():
    case, kinds = _cluster_case("float32", 200, 7, seed=1)
    tables = _group_tables(R.to_words(case.xb), kinds, 3)
    one = _encode_chunks(case.xb, tables, chunk_blocks=[])
    many = _encode_chunks(case.xb, tables, chunk_blocks=[1, 1, 1])
    for x, y in zip(one[1:], many[1:]):
        assert np.array_equal(x, y)


def test_threads_identical_output():
    """> 256 KiB of input so both threads work; also at the word-sharing
    boundaries between the threads' spans."""
    case, kinds = _cluster_case("float32", 2600, 26, seed=77)  # 270,400 bytes
    assert case.xb.nbytes > (1 << 18)
    words = R.to_words(case.xb)
    tables = _group_tables(words, kinds, 3)
    single = _encode_chunks(case.xb, tables, chunk_blocks=[], threads=1)
    double = _encode_chunks(case.xb, tables, chunk_blocks=[], threads=2)
    for x, y in zip(single[1:], double[1:]):
        assert np.array_equal(x, y)
    ct = _assemble(case, tables, *double)
    assert _check_against_encode_ref(ct, words, tables, allow_sparse=True)[R.SPARSE] > 0
    ids = _unsorted_ids(np.random.default_rng(3), 2600)
    _check_gather(ct, case, ids[:600], threads=2)
    full = ct.decompress(threads=2)
    assert torch.equal(_torch_bytes(full), torch.from_numpy(case.xb))
    # compress() itself with 2 threads vs 1.
    c1 = ibp_gnn.compress(case.x, threads=1)
    c2 = ibp_gnn.compress(case.x, threads=2)
    for k in ("_tables", "_bases", "_rel", "_payload"):
        assert np.array_equal(getattr(c1, k), getattr(c2, k))


# ---------------------------------------------------------------------------
# 5. deposit / extract through the codec
# ---------------------------------------------------------------------------
def _crafted_masks(rng) -> list:
    masks = [~(1 << b) & 0xFFFFFFFF for b in range(32)]        # one variable bit
    masks += [1 << b for b in range(32)]                        # one invariant bit
    masks += [0x55555555, 0xAAAAAAAA, 0xFFFFFFFF, 0x00000000, 0x0000FFFF, 0xFFFF0000,
              0x80000001, 0x7FFFFFFE, 0x0F0F0F0F, 0xF0F0F0F0, 0x33333333, 0x00FF00FF,
              0xFFFFFFFE, 0x7FFFFFFF, 0x80000000, 0x00000001]
    masks += [int(v) for v in rng.integers(0, 1 << 32, 16)]
    return masks


@pytest.mark.parametrize("value_bits", ["inside", "anywhere"])
def test_deposit_extract_via_codec(value_bits):
    """One group whose word w has a crafted mask; every row's words fit it
    except a few, so each field is extract(word - value, ~mask) of nvar bits
    and decoding must rebuild value + deposit(field, ~mask). "inside": values
    within their masks (version 1's tables: value | deposit); "anywhere":
    arbitrary values (version 2: the sum carries into the masked bits)."""
    rng = np.random.default_rng(123)
    masks = np.array(_crafted_masks(rng), np.uint32)
    w = len(masks)
    values = rng.integers(0, 1 << 32, w).astype(np.uint32)
    if value_bits == "inside":
        values &= masks
    tables = R.make_tables((masks, values))
    rows = 150
    noise = rng.integers(0, 1 << 32, (rows, w)).astype(np.uint32)
    words = values[None, :] + (noise & ~masks[None, :])  # wraps mod 2^32
    words[:3] = values + ~masks  # all variable bits set
    words[3:6] = values + (noise[3:6] & ~masks) * (np.arange(w) % 2 == 0)
    miss = rng.random((rows, w)) < 0.05
    miss[:7] = False
    words[miss] = noise[miss]     # a few non-participating words
    words[6] = noise[6]           # probably a raw row
    arr = np.ascontiguousarray(words.view(np.int32))
    case = Case(arr, R.to_bytes(arr), np.int32, 6)
    for allow_sparse in (False, True):
        enc, pw, rel, bases = _encode_chunks(case.xb, tables, chunk_blocks=[1],
                                             allow_sparse=allow_sparse)
        ct = _assemble(case, tables, enc, pw, rel, bases)
        _check_against_encode_ref(ct, words, tables, allow_sparse=allow_sparse)
        _check_gather(ct, case, _unsorted_ids(np.random.default_rng(5), rows))
    # The fields of row 0..5 read straight from the (kIbp only) C++ stream.
    ct = _assemble(case, tables, *_encode_chunks(case.xb, tables, chunk_blocks=[1],
                                                 allow_sparse=False))
    br = R.BitReader(ct._payload)
    for r in range(6):
        start = int(ct._bases[0]) + int(ct._rel[r])
        assert br.read(start, 2) == R.IBP
        pos = start + 2 + w
        for j in range(w):
            assert br.read(start + 2 + j, 1) == 1
            var = ~int(masks[j]) & 0xFFFFFFFF
            k = R.popcount(var)
            field = br.read(pos, k)
            diff = (int(words[r, j]) - int(values[j])) & 0xFFFFFFFF
            assert diff & int(masks[j]) == 0
            assert field == R.extract_ref(diff, var)
            assert (int(values[j]) + R.deposit_ref(field, var)) & 0xFFFFFFFF == int(words[r, j])
            if value_bits == "inside":
                assert int(values[j]) | R.deposit_ref(field, var) == int(words[r, j])
            pos += k


@pytest.mark.parametrize("pattern", [0x55555555, 0xAAAAAAAA, 0x0000FFFF, 0x80000001,
                                     0x7FFFFFFE, 0x00000000, 0xFFFFFFFF, 0x12345678])
def test_deposit_via_compress_1col(pattern):
    """compress() of 1-column int32 data whose invariant bits are `pattern`:
    the other bits vary, so the chosen mask is the pattern."""
    rng = np.random.default_rng(pattern)
    fixed = 0x0F0F0F0F & pattern
    var = ~pattern & 0xFFFFFFFF
    col = (rng.integers(0, 1 << 32, 200).astype(np.uint32) & np.uint32(var)) | np.uint32(fixed)
    col[:4] = np.uint32(fixed | var)
    arr = np.ascontiguousarray(col.view(np.int32).reshape(-1, 1))
    case = Case(arr, R.to_bytes(arr), np.int32, 6)
    ct, words, _ = _compress_checked(case, "auto")
    if 0 < R.popcount(pattern) < 32:
        assert int(ct._tables[0, 0, 0]) == pattern
    _check_gather(ct, case, _unsorted_ids(np.random.default_rng(6), 200))


@pytest.mark.skipif(not (torch.cuda.is_available() and _C.cuda_built()),
                    reason="needs a CUDA GPU and a CUDA build")
@pytest.mark.parametrize("name", list(DTYPES))
def test_cuda_gather_matches_reference(name):
    """The GPU decoder against the reference: mixed rows, NaN rows, several
    groups, ids unsorted with duplicates."""
    rng = np.random.default_rng(0)
    cases = [make_case(name, 300, 7, seed=1), make_case(name, 130, 5, seed=2, kind="nan")]
    for case in cases:
        ct = ibp_gnn.compress(case.x, threads=1)
        ids = _unsorted_ids(rng, case.xb.shape[0])
        ref = R.decode_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload, ids)
        want = R.to_bytes(R.from_words(ref, case.storage, case.xb.shape[1]
                                       // np.dtype(case.storage).itemsize))
        assert np.array_equal(want, case.xb[ids])
        got = ct.gather(torch.from_numpy(ids), device="cuda")
        assert torch.equal(_torch_bytes(got.cpu()), torch.from_numpy(want))
    case, kinds = _cluster_case(name, 333, 9, seed=3)
    tables = _group_tables(R.to_words(case.xb), kinds, 5)
    ct = _assemble(case, tables, *_encode_chunks(case.xb, tables, chunk_blocks=[1]))
    ids = _unsorted_ids(rng, 333)
    got = ct.gather(torch.from_numpy(ids).cuda())
    assert torch.equal(_torch_bytes(got.cpu()), torch.from_numpy(np.ascontiguousarray(case.xb[ids])))


# ---------------------------------------------------------------------------
# Files, parsed by the reference from the spec
# ---------------------------------------------------------------------------
DATA = Path(__file__).resolve().parent / "data"
FROZEN = sorted(DATA.glob("v1_*.ibp"))
FROZEN_V2 = sorted(DATA.glob("v2_*.ibp"))


@pytest.mark.parametrize("path", FROZEN, ids=[p.stem for p in FROZEN])
def test_frozen_v1_files_decode_with_reference(path):
    """The frozen v1 files, read and decoded by the reference alone, give the
    raw bytes saved beside them; re-encoding with their tables (no sparse
    rows in version 1) gives their payload and index; their tables are what
    the version-1 selector (no frames of reference) picks."""
    fields, tables, bases, rel, payload = R.read_file_ref(path)
    assert fields["version"] == 1 and fields["num_groups"] == 1
    raw = np.load(path.with_suffix(".raw.npy"))
    rows = fields["rows"]
    words = R.decode_ref(fields, tables, bases, rel, payload, range(rows))
    cols = fields["cols"]
    esize = R.DTYPE_BYTES[fields["dtype"]]
    got = R.to_bytes(R.from_words(words, np.uint8, 4 * fields["row_words"]))[:, :cols * esize]
    if rows:
        assert np.array_equal(got, raw.reshape(rows, cols * esize))
    rpayload, rbases, rrel, mode_rows = R.encode_ref(words, tables, allow_sparse=False)
    assert np.array_equal(rpayload, payload) and np.array_equal(rbases, bases)
    assert np.array_equal(rrel, rel) and mode_rows == fields["mode_rows"]
    assert fields["payload_bits"] == int(bases[-1])
    if rows:  # the tables are the ones the selector picks from all rows
        mask, value = R.select_masks_ref(words, fields["selector"], frames=False)
        assert np.array_equal(tables, R.make_tables((mask, value)))
    # The C++ reader decodes them to the same words.
    ct = ibp_gnn.load(path)
    assert ct.format_version == 1
    if rows:
        _check_gather(ct, Case(None, got, np.uint8, fields["dtype"]),
                      _unsorted_ids(np.random.default_rng(rows), rows))


@pytest.mark.parametrize("path", FROZEN_V2, ids=[p.stem for p in FROZEN_V2])
def test_frozen_v2_files_with_reference(path):
    """The frozen v2 files: the reference decodes them to the saved bytes,
    picks the same tables (groups included) from their rows, and re-encodes
    them to the same payload and index."""
    fields, tables, bases, rel, payload = R.read_file_ref(path)
    assert fields["version"] == 2
    raw = np.load(path.with_suffix(".raw.npy"))
    rows, cols, w = fields["rows"], fields["cols"], fields["row_words"]
    row_bytes = cols * R.DTYPE_BYTES[fields["dtype"]]
    words, infos = R.decode_rows_ref(fields, tables, bases, rel, payload, range(rows))
    got = R.to_bytes(R.from_words(words, np.uint8, 4 * w))[:, :row_bytes]
    if rows:
        assert np.array_equal(got, raw.reshape(rows, row_bytes))
    selector = fields["selector"]
    if rows and fields["num_groups"] == 1:  # tables chosen from all rows
        assert np.array_equal(tables, R.make_tables(R.select_masks_ref(words, selector)))
    rpayload, rbases, rrel, mode_rows = R.encode_ref(words, tables,
                                                     allow_sparse=selector == R.SELECTOR_AUTO,
                                                     sparse_code=fields["version"] >= 4)
    assert np.array_equal(rpayload, payload) and np.array_equal(rbases, bases)
    assert np.array_equal(rrel, rel) and mode_rows == fields["mode_rows"]
    # What make_files.py says the files hold.
    forms = {(i.mode, i.dict > 0, i.bitmap) for i in infos}
    if path.stem == "v2_float32_rownorm":
        assert (R.SPARSE, True, True) in forms  # bitmap + one-entry dictionary
    if path.stem == "v2_float32_tfidf":
        assert (R.SPARSE, False, False) in forms  # positions + inline values
    if path.stem == "v2_int32_for":  # frames of reference: values outside the masks
        assert (tables[0, 1] & ~tables[0, 0]).any()
    if path.stem == "v2_float32_groups":
        assert fields["num_groups"] > 1
    if rows:  # the C++ gather, both CPU kernels, gives the same rows
        ct = ibp_gnn.load(path)
        _check_gather(ct, Case(None, got, np.uint8, fields["dtype"]),
                      _unsorted_ids(np.random.default_rng(rows), rows))


@pytest.mark.parametrize("name,mode", [("float16", "auto"), ("int64", "paper"),
                                       ("uint8", "auto")])
def test_saved_file_matches_reference(tmp_path, name, mode):
    case = make_case(name, 150, 5, seed=_seed("save", name))
    ct, words, _ = _compress_checked(case, mode)
    fields, tables, bases, rel, payload = R.read_file_ref(ct.save(tmp_path / "x.ibp"))
    assert np.array_equal(tables, ct._tables) and np.array_equal(bases, ct._bases)
    assert np.array_equal(rel, ct._rel) and np.array_equal(payload, ct._payload)
    assert fields["selector"] == (0 if mode == "auto" else 1)
    for k in ("dtype", "rows", "cols", "row_words", "num_groups", "group_bits", "block_rows",
              "rel_bytes", "payload_bits", "mode_rows"):
        assert fields[k] == ct._fields[k], k
    dec = R.decode_ref(fields, tables, bases, rel, payload, range(150))
    assert np.array_equal(dec, words)


# ---------------------------------------------------------------------------
# 6. version 2: frames of reference
# ---------------------------------------------------------------------------
def _select_both(x: np.ndarray, sample=None):
    """Both selectors, C++ against the reference, on the rows `sample` of x;
    returns auto's (mask, value). Paper never uses a frame of reference."""
    xb = R.to_bytes(x)
    rows, row_bytes = xb.shape
    w = (row_bytes + 3) // 4
    sample = np.arange(rows, dtype=np.uint64) if sample is None else sample
    words = R.to_words(xb)[sample.astype(np.int64)]
    out = {}
    for selector in (R.SELECTOR_AUTO, R.SELECTOR_PAPER):
        mask, value = _C.select_masks(xb, row_bytes, w, sample, selector)
        rmask, rvalue = R.select_masks_ref(words, selector)
        assert np.array_equal(mask, rmask), (selector, [hex(v) for v in mask],
                                             [hex(v) for v in rmask])
        assert np.array_equal(value, rvalue), (selector, [hex(v) for v in value],
                                               [hex(v) for v in rvalue])
        out[selector] = (mask, value)
    mask, value = out[R.SELECTOR_PAPER]
    assert not (value & ~mask).any()
    return out[R.SELECTOR_AUTO]


def _column(counts) -> np.ndarray:
    """An int32 column holding each (uint32 value, count), in a fixed shuffle."""
    col = np.concatenate([np.full(c, v & 0xFFFFFFFF, np.uint32) for v, c in counts])
    col = col[np.random.default_rng(len(col)).permutation(len(col))]
    return np.ascontiguousarray(col.view(np.int32).reshape(-1, 1))


# name -> (value counts, expected auto (mask, value)); worked out in the docstring below.
FOR_CASES = {
    "pair_1_2": ([(1, 50), (2, 50)], (0xFFFFFFFE, 1)),
    "wrap_small_ints": ([(v, 10) for v in range(-5, 6)], (0xFFFFFFF0, 0xFFFFFFFB)),
    "wrap_pair": ([(-1, 7), (0, 7)], (0xFFFFFFFE, 0xFFFFFFFF)),
    "start_tie_first_in_order": ([(-2, 25), (-1, 25), (100000, 25), (100001, 25)],
                                 (0xFFFFFFFE, 100000)),
    "k_tie_keeps_smaller_k": ([(0x0FFFFFFF, 15), (0x10000000, 15), (0x10000001, 1)],
                              (0xFFFFFFFE, 0x0FFFFFFF)),
    "tie_with_mask_keeps_mask": ([(0x12345679, 15), (0x1234567A, 15), (0x1234567B, 1)],
                                 (0xFFFFFFFC, 0x12345678)),
}


@pytest.mark.parametrize("case", list(FOR_CASES))
def test_select_masks_frame_of_reference_crafted(case):
    """Hand-computed frames of reference (saving (32 - k) * rows in the window).

    pair_1_2 (n = 100): the mask leaves bits 0, 1 variable (30 * 100); the
      window [1, 3) holds all (31 * 100): mask ~1, value 1 (outside the mask).
    wrap_small_ints (-5..5, 10 each): [-5, 11) wraps past 2^32 and holds all
      110 rows at k = 4 (28 * 110 = 3080; k = 3 holds 80: 2320; the mask at
      most 32 * 60): value 0xFFFFFFFB.
    wrap_pair (-1, 0; 7 each): every bit is an exact half, the mask keeps all
      32 bits for the 7 zero rows (224); [0xFFFFFFFF, 2^32 + 1) holds 14
      (434), the window starting at 0 only 7.
    start_tie_first_in_order: [-2, 0) and [100000, 100002) both hold 50 at
      k = 1 (1550); 100000 comes first in increasing order. (k = 17 from -2
      wraps to hold all 100: 1500; the mask at most 32 * 25.)
    k_tie_keeps_smaller_k (n = 31): k = 1 holds 30 (930), k = 2 holds 31
      (930): a k only replaces with strictly more, so k = 1.
    tie_with_mask_keeps_mask (n = 31): the mask of the 30 constant bits
      matches all (930), the window of k = 1 at 0x12345679 holds 30 (930) and
      of k = 2 all 31 (930): the frame must strictly beat the mask."""
    counts, (want_mask, want_value) = FOR_CASES[case]
    x = _column(counts)
    mask, value = _select_both(x)
    assert (hex(int(mask[0])), hex(int(value[0]))) == (hex(want_mask), hex(want_value))
    # Every row in the window fits; the whole column round-trips.
    ct = ibp_gnn.compress(x, threads=1)
    assert np.array_equal(ct._tables[0], np.array([[want_mask], [want_value]], np.uint32))
    _check_against_encode_ref(ct, R.to_words(x), ct._tables, allow_sparse=True)
    _check_gather(ct, Case(x, R.to_bytes(x), np.int32, 6),
                  _unsorted_ids(np.random.default_rng(0), len(x)))


def test_select_masks_frame_of_reference_columns():
    """Several columns where a window wins: int32 around 1,000,512 +- 300
    (crosses a multiple of 1024, so few bits are invariant; the window
    [min, min + 1024) holds all), float32 in [1.99, 2.01] (exponent changes
    at 2.0; [min, min + 2^17) holds all), small signed ints around 0 (wraps),
    a constant column (the mask wins: 32 bits each) and random bits (neither
    saves much); masks and values from sample subsets with duplicates too."""
    rng = np.random.default_rng(17)
    n = 240
    ints = rng.integers(-300, 301, n) + 1_000_512
    floats = rng.uniform(1.99, 2.01, n).astype(np.float32).view(np.int32)
    small = rng.integers(-3, 4, n)
    const = np.full(n, 123456)
    rand = rng.integers(-2**31, 2**31, n)
    x = np.ascontiguousarray(np.stack([ints, floats, small, const, rand], 1).astype(np.int32))
    mask, value = _select_both(x)
    u = x.view(np.uint32)
    assert int(mask[0]) == 0xFFFFFC00 and int(value[0]) == int(u[:, 0].min())
    assert int(mask[1]) == 0xFFFE0000 and int(value[1]) == int(u[:, 1].min())
    assert int(mask[2]) == 0xFFFFFFF8 and int(value[2]) == 0xFFFFFFFD
    assert int(mask[3]) == 0xFFFFFFFF and int(value[3]) == 123456
    for w in range(3):  # all rows fit their window
        assert all(R.fits_ref(v, mask[w], value[w]) for v in u[:, w])
    for sample in (rng.integers(0, n, 100), rng.integers(0, n, 7), np.arange(1)):
        _select_both(x, np.sort(sample).astype(np.uint64))
        _select_both(x, sample.astype(np.uint64))
    case = Case(x, R.to_bytes(x), np.int32, 6)
    for mode in ("auto", "paper"):
        ct, _, _ = _compress_checked(case, mode)
        _check_gather(ct, case, _unsorted_ids(rng, n))
    # Wider than the 256 columns the C++ search takes per pass over the sample.
    centres = rng.integers(-2**31, 2**31, 300)
    spreads = rng.integers(1, 5000, 300)
    wide = centres + (rng.random((60, 300)) * spreads).astype(np.int64)
    wide = np.ascontiguousarray(((wide + 2**31) % 2**32 - 2**31).astype(np.int32))
    mask, value = _select_both(wide)
    assert ((value & ~mask) != 0).sum() > 200  # mostly frames of reference


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(centre=st.integers(0, 2**32 - 1), spread=st.integers(0, 3000),
       n=st.integers(1, 120), cols=st.integers(1, 3), seed=st.integers(0, 2**16),
       dup=st.booleans())
def test_property_select_masks_frame_of_reference(centre, spread, n, cols, seed, dup):
    """Clustered integer columns (windows that may wrap past 2^32, ties
    between starts and between k) against the brute-force reference."""
    rng = np.random.default_rng(seed)
    off = rng.integers(-spread, spread + 1, (n, cols))
    if dup:  # few distinct values, many repeats
        off = off // max(1, spread // 3)
    x = ((centre + off) % (1 << 32)).astype(np.uint32).view(np.int32)
    _select_both(np.ascontiguousarray(x))


# ---------------------------------------------------------------------------
# 7. version 2: sparse rows
# ---------------------------------------------------------------------------
def _sparse_infos(ct, rows) -> list:
    """(mode, c, d, bitmap) of every row, read from the C++ stream by the reference."""
    _, infos = R.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload,
                                 range(rows))
    return [(i.mode, i.count, i.dict, i.bitmap) for i in infos]


def _encode_hand(x: np.ndarray, code: int, tables: np.ndarray, allow_sparse: bool = True,
                 sparse_code: bool = True):
    case = Case(x, R.to_bytes(x), x.dtype.type, code)
    ct = _assemble(case, tables, *_encode_chunks(case.xb, tables, chunk_blocks=[],
                                                 allow_sparse=allow_sparse,
                                                 sparse_code=sparse_code))
    words = R.to_words(case.xb)
    mode_rows = _check_against_encode_ref(ct, words, tables, allow_sparse=allow_sparse,
                                          sparse_code=sparse_code)
    _check_gather(ct, case, _unsorted_ids(np.random.default_rng(len(x)), len(x)))
    return ct, mode_rows


def _changed(template: np.ndarray, rng, spec) -> np.ndarray:
    """Rows of `template` with words changed: spec[i] = list of new values (one
    per changed word, at random distinct positions)."""
    rows = np.repeat(template[None], len(spec), 0)
    for r, vals in enumerate(spec):
        pos = rng.choice(template.shape[0], len(vals), replace=False)
        rows[r, pos] = vals
    return rows


def test_sparse_rows_every_form():
    """One group (mask 0xFFFFFF00: a word equal to its value still costs 8
    bits in kIbp), W = 40 words (count fields of 6 bits, positions of 6):
    each row built for one sparse layout, checked in the C++ stream.
    List vs bitmap: c * 6 > 40 takes the bitmap, so c = 6 lists and c = 7
    maps. Dictionary vs inline: 32 d + c * bits(d - 1) < 32 c; one listed
    word is inline (32 = 32); W = 36 puts c = 6 exactly at 6 * 6 = 36
    (positions listed, not strictly more than W)."""
    rng = np.random.default_rng(40)
    big = lambda k: [int(v) for v in rng.integers(2**24, 2**31, k)]  # noqa: E731
    for w, spec, want in [
        (40, [[]], (0, 0, False)),                                    # c = 0
        (40, [big(1)], (1, 0, False)),                                # list + inline, c = 1
        (40, [big(2)], (2, 0, False)),                                # list + inline
        (40, [big(2) * 2], (4, 2, False)),                            # list + dict (68 < 128)
        (40, [[0x3F800000] * 6], (6, 1, False)),                      # list + dict, d = 1
        (40, [[0x3F800000] * 7], (7, 1, True)),                       # bitmap + dict, d = 1
        (40, [big(10)], (10, 0, True)),                               # bitmap + inline
        (40, [big(3) * 4], (12, 3, True)),                            # bitmap + dict
        (40, [[0x3E4CCCCD] * 40], (40, 1, True)),                     # every word, d = 1
        (36, [[0x3F800000] * 6], (6, 1, False)),                      # 36 = W: list
        (36, [[0x3F800000] * 7], (7, 1, True)),
    ]:
        template = rng.integers(-2**31, 2**31, w).astype(np.int32)
        x = np.ascontiguousarray(_changed(template, rng, spec * 3))
        tables = R.make_tables((np.full(w, 0xFFFFFF00, np.uint32), template.view(np.uint32)))
        ct, mode_rows = _encode_hand(x, 6, tables)
        assert set(_sparse_infos(ct, len(x))) == {(R.SPARSE, *want)}, (w, want)
        # Without sparse rows the same rows are kIbp or raw.
        _, mode_rows = _encode_hand(x, 6, tables, allow_sparse=False)
        assert mode_rows[R.SPARSE] == 0


@pytest.mark.parametrize("name,cols", [("uint8", 7), ("float16", 5)])
def test_sparse_rows_odd_widths(name, cols):
    """Rows of 7 bytes (W = 2, last word padded: 1-bit positions, never a
    bitmap; raw = 66 bits) and 10 bytes (W = 3: c = 2 already takes the 3-bit
    bitmap; raw = 98 bits) under a mask of 0 (no kIbp row beats raw), values
    the template's words. Sparse head: 2 + 2 * 2 + 1 = 7 bits."""
    code, storage, unsigned = DTYPES[name]
    rng = np.random.default_rng(cols)
    template = _random_bits(rng, unsigned, (cols,))
    x = np.repeat(template[None], 60, 0)
    tw = R.to_words(np.ascontiguousarray(template[None]))[0]
    last_bytes = (cols * np.dtype(unsigned).itemsize) % 4 or 4  # the rest is padding
    for r in range(60):
        kind = r % 6
        words = tw.copy()
        other = lambda: int(rng.integers(1, 2**(8 * last_bytes)))  # noqa: E731
        if kind == 1:    # one word changed: 7 + pos + 32
            words[0] = other()
        elif kind == 2:  # two words, the same value: 7 + 2 (list) or 3 (bitmap) + 32
            words[0] = words[1] = other()
        elif kind == 3:  # every word changed, all different: raw
            words[:] = [other() ^ (i << 4) for i in range(len(words))]
        elif kind == 4:  # every word the same value: 7 + 2 or 3 + 32
            words[:] = other()
        elif kind == 5:  # two words, different: 7 + 2 + 64 = 73 > 66 (raw) or 7 + 3 + 64
            words[0], words[1] = other(), other() | 1 << (8 * last_bytes - 1)
        x[r] = R.from_words(words[None], unsigned, cols)[0]
    x = np.ascontiguousarray(x.view(storage))
    tables = R.make_tables((np.zeros(len(tw), np.uint32), tw))
    ct, mode_rows = _encode_hand(x, code, tables, sparse_code=False)  # the version-3 forms
    infos = set(_sparse_infos(ct, len(x)))
    w = len(tw)
    want = {(R.SPARSE, 0, 0, False), (R.SPARSE, 1, 0, False), (R.RAW, 0, 0, False)}
    if w == 2:
        want |= {(R.SPARSE, 2, 1, False)}
    else:
        want |= {(R.SPARSE, 2, 1, True), (R.SPARSE, 3, 1, True), (R.SPARSE, 2, 0, True)}
    assert infos == want, infos
    # Through compress(): rows that equal the chosen values become c = 0 rows.
    rng = np.random.default_rng(3)
    rows = 200
    if name == "uint8":
        noise = rng.integers(0, 16, (rows, cols))
        noise[rng.random(rows) < 0.4] = 0
        data = (16 * rng.integers(0, 12, cols) + noise).astype(np.uint8)
    else:
        data = (np.float16(0.25) * rng.integers(0, 3, (rows, cols))).astype(np.float16)
        data[rng.random(rows) < 0.3] = 0
    case = Case(data, R.to_bytes(data), storage, code)
    ct, _, mode_rows = _compress_checked(case, "auto")
    assert mode_rows[R.SPARSE] > 0, mode_rows
    _check_gather(ct, case, _unsorted_ids(rng, rows))


def _rownorm(rows: int, cols: int, seed: int, density: float = 0.4) -> np.ndarray:
    """Row-normalised 0/1 rows: every nonzero of a row equals 1 / k. Some
    rows are all zero."""
    rng = np.random.default_rng(seed)
    x = (rng.random((rows, cols)) < density).astype(np.float32)
    x[::7] = 0
    return np.ascontiguousarray(x / np.maximum(x.sum(1, keepdims=True), 1)).astype(np.float32)


def test_sparse_rows_through_compress():
    """compress() of row-normalised rows (bitmap + one-entry dictionary, and
    all-zero rows with c = 0), of tf-idf-like rows (few distinct values:
    positions + inline values) and of counts (positions + dictionary)."""
    rng = np.random.default_rng(8)
    tfidf = ((rng.random((150, 200)) < 0.03) * rng.random((150, 200))).astype(np.float32)
    counts = ((rng.random((150, 64)) < 0.2) * rng.integers(1, 3, (150, 64))).astype(np.int32)
    tfidf[::10] = 0
    counts[::10] = 0
    for x, want in [(_rownorm(150, 40, 1), (R.SPARSE, True, True)),
                    (tfidf, (R.SPARSE, False, False)),
                    (counts, (R.SPARSE, True, False))]:
        case = Case(x, R.to_bytes(x), x.dtype.type, 0 if x.dtype == np.float32 else 6)
        ct, _, _ = _compress_checked(case, "auto")
        forms = {(m, d > 0, b) for m, c, d, b in _sparse_infos(ct, len(x))}
        assert want in forms, forms
        assert any(m == R.SPARSE and c == 0 for m, c, _, _ in _sparse_infos(ct, len(x)))
        _check_gather(ct, case, _unsorted_ids(rng, len(x)))
        # Paper mode: the same data, no sparse rows.
        ct, _, mode_rows = _compress_checked(case, "paper")
        assert mode_rows[R.SPARSE] == 0


def test_multi_group_sparse_hand_tables():
    """Four groups with different values (group 3 duplicates group 1) and
    rows near each template: sparse rows under several groups, the lowest
    group on ties (a row half template 0, half template 1), the duplicate
    never."""
    rng = np.random.default_rng(21)
    w = 24
    temps = [rng.integers(-2**31, 2**31, w).astype(np.int32) for _ in range(3)]
    rows, want = [], []
    for r in range(300):
        g = r % 3
        c = int(rng.integers(0, 5))
        rows.append(_changed(temps[g], rng, [[int(v) for v in rng.integers(-9, 9, c)]])[0])
        want.append(g)
    half = np.concatenate([temps[0][:12], temps[1][12:]])
    rows.append(half)
    want.append(0)
    x = np.ascontiguousarray(np.stack(rows))
    masks = [np.full(w, m, np.uint32) for m in (0xFFFF0000, 0xFFFFFF00, 0xFFF00000, 0xFFFFFF00)]
    tables = R.make_tables(*[(m, temps[g].view(np.uint32))
                             for m, g in zip(masks, (0, 1, 2, 1))])
    ct, _ = _encode_hand(x, 6, tables, sparse_code=False)  # the version-3 forms
    _, infos = R.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload,
                                 range(len(x)))
    assert all(i.mode == R.SPARSE for i in infos)
    assert [i.group for i in infos] == want
    assert np.array_equal(_C.Encoder(4 * w, w, tables).row_bits(R.to_bytes(x), 4 * w),
                          R.row_bits_ref(R.to_words(x), tables))


def test_multi_group_sparse_through_compress():
    """compress() of rows near two templates with a few small changes: k-means
    finds several groups and sparse rows (c = 0 and listed) use more than one
    of them."""
    rng = np.random.default_rng(5)
    w = 24
    temps = [rng.integers(0, 2**31, w).astype(np.int32) for _ in range(2)]
    spec = [[int(v) for v in rng.integers(-50, 50, int(rng.integers(0, 6)))] for _ in range(600)]
    x = np.ascontiguousarray(np.concatenate(
        [_changed(temps[r % 2], rng, [spec[r]]) for r in range(600)]))
    case = Case(x, R.to_bytes(x), np.int32, 6)
    ct, _, mode_rows = _compress_checked(case, "auto")
    assert ct._tables.shape[0] > 1 and mode_rows[R.SPARSE] > 0
    _, infos = R.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload,
                                 range(600))
    assert len({i.group for i in infos if i.mode == R.SPARSE}) >= 2
    assert any(i.mode == R.SPARSE and i.count == 0 for i in infos)
    assert any(i.mode == R.SPARSE and i.count > 0 for i in infos)
    _check_gather(ct, case, _unsorted_ids(rng, 600))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(w=st.integers(1, 70), groups=st.integers(1, 5), rows=st.integers(1, 80),
       seed=st.integers(0, 2**16), allow_sparse=st.booleans())
def test_property_encoder_random_tables(w, groups, rows, seed, allow_sparse):
    """The C++ Encoder against encode_ref under random tables (invariance
    masks, frames of reference, masks of 0 and ~0, values anywhere) and rows
    near a group's values with 0..W words changed (repeated or distinct
    values), across widths where the count, position and index fields
    change size."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(groups):
        kind = rng.integers(0, 4, w)
        k = rng.integers(1, 32, w)
        m = np.where(kind == 0, rng.integers(0, 2**32, w),
                     np.where(kind == 1, (2**32 - (1 << k)), np.where(kind == 2, 0, 2**32 - 1)))
        masks.append(m.astype(np.uint32))
    values = [rng.integers(0, 2**32, w).astype(np.uint32) for _ in range(groups)]
    tables = R.make_tables(*zip(masks, values))
    pool = rng.integers(0, 2**32, 4).astype(np.uint32)
    x = np.empty((rows, w), np.uint32)
    for r in range(rows):
        g = int(rng.integers(0, groups))
        noise = rng.integers(0, 2**32, w).astype(np.uint32) & ~masks[g]
        x[r] = values[g] + noise * (rng.random(w) < 0.5)  # fitting words
        c = int(rng.integers(0, w + 1)) if rng.random() < 0.5 else int(rng.integers(0, 4))
        pos = rng.choice(w, min(c, w), replace=False)
        x[r, pos] = pool[rng.integers(0, 1 + int(rng.integers(0, 4)), len(pos))] \
            if rng.random() < 0.5 else rng.integers(0, 2**32, len(pos)).astype(np.uint32)
        if rng.random() < 0.1:
            x[r] = values[g]
    arr = np.ascontiguousarray(x.view(np.int32))
    case = Case(arr, R.to_bytes(arr), np.int32, 6)
    ct = _assemble(case, tables, *_encode_chunks(case.xb, tables, chunk_blocks=[1],
                                                 allow_sparse=allow_sparse))
    _check_against_encode_ref(ct, x, tables, allow_sparse=allow_sparse)
    assert np.array_equal(R.decode_ref(ct._fields, tables, ct._bases, ct._rel, ct._payload,
                                       range(rows)), x)
    if allow_sparse:
        assert np.array_equal(_C.Encoder(4 * w, w, tables).row_bits(case.xb, 4 * w),
                              R.row_bits_ref(x, tables))
    _check_gather(ct, case, _unsorted_ids(rng, rows))


def test_version1_stream_has_no_sparse_rows():
    """A stream with sparse rows is not a version-1 stream: the reference
    refuses mode 2 there, and so does the C++ validator."""
    x = _rownorm(64, 40, 2)
    ct = ibp_gnn.compress(x, threads=1)
    assert ct._fields["mode_rows"][R.SPARSE] > 0
    v1 = dict(ct._fields, version=1)
    with pytest.raises(ValueError, match="invalid in version 1"):
        R.decode_ref(v1, ct._tables, ct._bases, ct._rel, ct._payload, range(64))
    fields = {k: v for k, v in ct._fields.items() if not k.startswith("crc")
              and k != "header_bytes"}
    with pytest.raises(ibp_gnn.FormatError):
        ibp_gnn.CompressedTensor(_C.pack_header(dict(fields, version=1)), ct._tables,
                                 ct._bases, ct._rel, ct._payload)


# ---------------------------------------------------------------------------
# 8. the real feature matrices (../shared/datasets)
# ---------------------------------------------------------------------------
REAL = [("cora", 600), ("inj_amazon", 400), ("tolokers", 600), ("reddit", 600)]


@pytest.mark.skipif(ibp_gnn.testing.shared_dir() is None,
                    reason="../shared/datasets is not present (ibp_gnn.testing.shared_dir())")
@pytest.mark.parametrize("name,rows", REAL, ids=[n for n, _ in REAL])
def test_real_datasets_match_reference(name, rows):
    """The first rows of each real matrix: compress() (auto and, for the
    narrow ones, paper) writes exactly encode_ref's arrays with its tables,
    select_masks matches the reference on all of them, and the reference
    and both CPU kernels decode a random subset back to the input."""
    x = np.ascontiguousarray(ibp_gnn.testing.load_shared(name)[:rows])
    case = Case(x, R.to_bytes(x), x.dtype.type, {np.float32: 0}[x.dtype.type])
    words = R.to_words(case.xb)
    _select_both(x)
    ids = _unsorted_ids(np.random.default_rng(rows), rows)[:64]
    for mode in ("auto", "paper") if words.shape[1] <= 64 else ("auto",):
        if words.shape[1] <= 64:  # the whole choice of groups too
            ct, _, mode_rows = _compress_checked(case, mode)
        else:
            ct = ibp_gnn.compress(x, mode=mode, threads=1)
            mode_rows = _check_against_encode_ref(ct, words, ct._tables,
                                                  allow_sparse=mode == "auto")
        assert mode_rows[R.SPARSE] == 0 or mode == "auto"
        _check_gather(ct, case, ids)


def _groups_data(seed: int) -> np.ndarray:
    """600 float32 rows from two scales (as make_files.py's float32_groups)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.random((300, 16)) * 0.01, rng.random((300, 16)) * 100 + 1000])
    return np.ascontiguousarray(x[rng.permutation(600)].astype(np.float32))


@pytest.mark.parametrize("data", ["scales", "templates", "tolokers"])
def test_group_choice_matches_reference(data):
    """compress(mode="auto")'s tables equal choose_tables_ref's, a mirror of
    the k-means heuristic in ibp_gnn/_encode.py (update both together); the
    inputs make it keep several groups. The 4500-row input has held-out rows
    beyond the 2048-row subsample."""
    if data == "scales":
        x = _groups_data(1)
    elif data == "templates":
        rng = np.random.default_rng(2)
        temps = [rng.integers(0, 2**31, 12).astype(np.int32) for _ in range(3)]
        x = np.ascontiguousarray(np.concatenate(
            [_changed(temps[r % 3], rng, [[int(v) for v in rng.integers(-50, 50, r % 4)]])
             for r in range(4500)]))
    else:
        if ibp_gnn.testing.shared_dir() is None:
            pytest.skip("../shared/datasets is not present (ibp_gnn.testing.shared_dir())")
        x = np.ascontiguousarray(ibp_gnn.testing.load_shared("tolokers")[:600])
    ct = ibp_gnn.compress(x, threads=1)
    words = R.to_words(x)
    tables = R.choose_tables_ref(words, len(x), R.SELECTOR_AUTO)
    assert tables.shape[0] > 1
    assert ct._tables.shape == tables.shape and np.array_equal(ct._tables, tables)
    mode_rows = _check_against_encode_ref(ct, words, tables, allow_sparse=True)
    assert mode_rows[R.IBP] + mode_rows[R.SPARSE] == len(x)
