"""The encoder's choice of row encoding (csrc/ibp/encode.cpp) against the
exhaustive trial of tests/reference.py: every mode under every group, fewest
bits, ties to raw, kIbp, kSparse, kCoded and then the lowest group.

The C++ encoder takes shortcuts the reference does not: kCoded bits of all
groups from per-unit cost tables (units whose groups share the coded field;
the others are looked up per group), and a kIbp group skipped when its floor
(every word fitting) cannot beat the best so far or the best kCoded row. The
tables and rows here are built to hit both paths and the ties at the bounds."""
import numpy as np
import pytest

from ibp_gnn import _C

import reference as ref

CODE_SLOTS = 16
FIELD = {1: (23, 8), 2: (10, 5)}  # units per word -> (lo, nc) of fp32 / fp16 exponents


def code_rows(units, W, upw):
    """[8 * upw, W] code rows from units[u] = (s, lo, nc, symbols) (format.h)."""
    out = np.zeros((8 * upw, W), np.uint32)
    for u, (s, lo, nc, syms) in enumerate(units):
        w, h = divmod(u, upw)
        slots = [s | lo << 4 | nc << 9] + list(syms) + [0] * (CODE_SLOTS - 1 - s)
        for k in range(CODE_SLOTS // 2):
            out[8 * h + k, w] = slots[2 * k] | slots[2 * k + 1] << 16
    return out


def random_unit(rng, upw, kind, like=None):
    """(s, lo, nc, symbols) of one unit. kind "shared": the dtype's exponent;
    "wide": nc > 8 (wider than a cost table); "mixed": any field (nc = 0
    included), or with `like` (another group's unit) its field, its nc at
    another lo, or any field."""
    U = 32 // upw
    if kind == "shared":
        lo, nc = FIELD[upw]
    elif kind == "wide":
        nc = int(rng.integers(9, 17))
        lo = int(rng.integers(0, U - nc + 1))
    else:
        pick = rng.random() if like else 1.0
        if pick < 0.4:
            lo, nc = like[1], like[2]
        elif pick < 0.7 and like[2] < U:
            nc = like[2]
            lo = (like[1] + 1 + int(rng.integers(0, U - nc))) % (U - nc + 1)
        else:
            nc = int(rng.integers(0, min(16, U) + 1))
            lo = int(rng.integers(0, U - nc + 1))
    s = int(rng.integers(0, 16))
    # few distinct symbols, so some repeat (the first match ranks)
    pool = rng.integers(0, 1 << nc, 4) if nc else np.zeros(1, np.int64)
    return s, lo, nc, [int(v) for v in rng.choice(pool, s)]


def case(seed, upw, groups, kind, W=7, rows=90):
    """(words [rows, W], tables [groups, 2 + 8 upw, W]) with rows that fit a
    group's masks, equal its values, or carry its ranked symbols."""
    rng = np.random.default_rng(seed)
    U = 32 // upw
    tables = np.zeros((groups, 2 + 8 * upw, W), np.uint32)
    units = []
    for g in range(groups):
        k = rng.integers(0, 33, W)  # invariant high bits per word
        tables[g, 0] = [((1 << int(b)) - 1) << (32 - int(b)) if b else 0 for b in k]
        tables[g, 1] = rng.integers(0, 1 << 32, W, dtype=np.uint64).astype(np.uint32) & tables[g, 0]
        units.append([random_unit(rng, upw, kind, units[0][u] if g else None)
                      for u in range(W * upw)])
        tables[g, 2:] = code_rows(units[g], W, upw)
    words = rng.integers(0, 1 << 32, (rows, W), dtype=np.uint64).astype(np.uint32)
    for r in range(rows):
        g = int(rng.integers(0, groups))
        how = r % 4
        if how == 0:  # fits group g (its variable bits random)
            words[r] = tables[g, 1] + (words[r] & ~tables[g, 0])
        elif how == 1:  # group g's values, a few words changed
            words[r] = tables[g, 1]
            words[r, rng.integers(0, W, int(rng.integers(0, 3)))] ^= np.uint32(1 << 7)
        elif how == 2:  # units holding ranked symbols of group g
            for u, (s, lo, nc, syms) in enumerate(units[g]):
                if s and rng.random() < 0.8:
                    w, h = divmod(u, upw)
                    f = syms[int(rng.integers(0, s))]
                    keep = ~np.uint32(((1 << nc) - 1) << (lo + h * U))
                    words[r, w] = (words[r, w] & keep) | np.uint32(f << (lo + h * U))
    return np.ascontiguousarray(words), np.ascontiguousarray(tables)


def encode_c(words, tables, threads, allow_sparse=True):
    W = words.shape[1]
    e = _C.Encoder(4 * W, W, tables, allow_sparse=allow_sparse)
    w1, rel, b1 = e.encode(ref.to_bytes(words), 4 * W, threads)
    w2, b2 = e.finish()
    rel = rel.view(np.uint16 if e.rel_bytes == 2 else np.uint32)
    return np.concatenate([w1, w2]), np.concatenate([b1, b2]), rel, e.mode_rows


def assert_same_as_reference(words, tables, threads=1, allow_sparse=True):
    got = encode_c(words, tables, threads, allow_sparse)
    want = ref.encode_ref(words, tables, allow_sparse=allow_sparse)
    assert got[3] == want[3], (got[3], want[3])  # rows per mode
    for a, b in zip(got[:3], want[:3]):
        assert np.array_equal(a, b)
    W = words.shape[1]
    bits = _C.Encoder(4 * W, W, tables, allow_sparse=allow_sparse).row_bits(
        ref.to_bytes(words), 4 * W, threads)
    assert np.array_equal(bits, ref.row_bits_ref(words, tables, allow_sparse=allow_sparse))
    return want[3]


@pytest.mark.parametrize("upw", [1, 2], ids=["fp32", "fp16"])
@pytest.mark.parametrize("groups", [1, 3, 16, 17])
@pytest.mark.parametrize("kind", ["shared", "mixed", "wide"])
def test_choice_matches_exhaustive_trial(upw, groups, kind):
    words, tables = case(groups * 10 + upw, upw, groups, kind)
    modes = assert_same_as_reference(words, tables, threads=1 + groups % 2)
    assert modes[3] > 0  # some rows are coded: the kCoded trial was in play


def test_slow_and_tabled_units_in_one_row():
    # Units whose groups disagree on the field, nc = 0 and nc > 8 sit beside
    # tabled units; allow_sparse off leaves kIbp and kCoded alone.
    words, tables = case(5, 2, 4, "mixed", W=9, rows=120)
    assert_same_as_reference(words, tables, allow_sparse=False)
    assert_same_as_reference(words, tables, threads=2)


def one_word_case(invariant_bits, row_exponent_rank=0):
    """One fp32 word, 2 groups. Group 0: the top `invariant_bits` bits
    invariant and the row fits (kIbp: 2 + 1 + 1 + (32 - invariant_bits));
    its code ranks the row's exponent at `row_exponent_rank` (kCoded:
    2 + 1 + 24 + rank + 1). Group 1 fits nothing and codes nothing."""
    x = np.uint32(0x3F9A_BCDE)
    m = np.uint32(((1 << invariant_bits) - 1) << (32 - invariant_bits))
    e = int(x >> 23) & 0xFF
    syms = [(e + 1 + i) & 0xFF for i in range(row_exponent_rank)] + [e]
    tables = np.zeros((2, 10, 1), np.uint32)
    tables[0, 0, 0], tables[0, 1, 0] = m, x & m
    tables[0, 2:] = code_rows([(len(syms), 23, 8, syms)], 1, 1)
    tables[1, 0, 0], tables[1, 1, 0] = 0xFFFFFFFF, ~x
    tables[1, 2:] = code_rows([(0, 23, 8, [])], 1, 1)
    return np.array([[x]], np.uint32), tables


@pytest.mark.parametrize("invariant,mode", [(7, ref.CODED), (8, ref.IBP), (9, ref.IBP)])
def test_ibp_floor_at_the_kcoded_bound(invariant, mode):
    # kIbp 28 + (8 - invariant) bits against kCoded 28: a tie goes to kIbp, so
    # the floor may skip a group only when it exceeds the best kCoded row.
    words, tables = one_word_case(invariant)
    gb = 1
    assert ref.row_coded_bits_ref(words[0], tables, 0, gb) == 28
    assert ref.row_ibp_bits(words[0], tables[0, 0], tables[0, 1], gb) == 36 - invariant
    assert ref.choose_mode(words[0], tables, allow_sparse=True)[:2] == (mode, 0)
    assert_same_as_reference(words, tables)


def test_sparse_against_coded_at_a_tie():
    # A row equal to group 0's values is kSparse with c = 0 (6 bits); fp16
    # units coding whole half-words cost 1 bit per ranked symbol. The kCoded
    # row costs 5 (both ranked first) or 6 (one ranked second): a tie goes to
    # kSparse, one bit less to kCoded.
    for second, mode in ((False, ref.CODED), (True, ref.SPARSE)):
        x = 0x1234_5678
        tables = np.zeros((2, 18, 1), np.uint32)
        tables[0, 0, 0], tables[0, 1, 0] = 0, x  # nothing invariant: kIbp 36 bits
        lo_syms = [0x9999, 0x5678] if second else [0x5678]
        tables[0, 2:] = code_rows([(len(lo_syms), 0, 16, lo_syms), (1, 0, 16, [0x1234])], 1, 2)
        tables[1, 0, 0], tables[1, 1, 0] = 0, ~x & 0xFFFFFFFF
        tables[1, 2:] = code_rows([(0, 0, 16, []), (0, 0, 16, [])], 1, 2)
        words = np.array([[x]], np.uint32)
        best = ref.choose_mode(words[0], tables, allow_sparse=True)
        assert best[:3] == (mode, 0, 6 if second else 5)
        assert ref.sparse_plan_ref(words[0], tables[0, 1], 1).bits == 6
        assert_same_as_reference(words, tables)


@pytest.mark.parametrize("kind", ["embed", "sparse"])
def test_select_masks_many_rows_matches_reference(kind):
    # Past 255 rows the bit counts are emptied from byte lanes (at 255 and
    # 510 rows here); from 512 rows on, first differing ranks come from byte
    # tables instead of a walk over the bits.
    rng = np.random.default_rng(3)
    n, W = 700, 6
    if kind == "embed":
        x = (rng.standard_normal((n, W)) * 0.2).astype(np.float32)
        x[rng.random((n, W)) < 0.05] = np.float32(np.nan)
        words = x.view(np.uint32)
    else:
        words = np.where(rng.random((n, W)) < 0.9, 0,
                         rng.integers(0, 1 << 32, (n, W), dtype=np.uint64)).astype(np.uint32)
    xb = ref.to_bytes(words)
    for sample in (np.arange(n), np.arange(510), np.arange(511), np.arange(512),
                   rng.integers(0, n, 600)):
        sample = sample.astype(np.uint64)
        rows = words[sample.astype(np.int64)]
        for selector, frames in ((ref.SELECTOR_AUTO, True), (ref.SELECTOR_AUTO, False),
                                 (ref.SELECTOR_PAPER, True)):
            mask, value = _C.select_masks(xb, 4 * W, W, sample, selector, frames)
            rmask, rvalue = ref.select_masks_ref(rows, selector, frames=frames)
            assert np.array_equal(mask, rmask) and np.array_equal(value, rvalue)
