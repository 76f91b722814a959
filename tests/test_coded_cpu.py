"""kCoded rows of 32-bit units (float32, and int32 under hand-made code
tables) through every CPU kernel, against the raw bits: the AVX-512 decode
of csrc/ibp/cpu/coded_cpu.h with its per-group Coded32Program (symbols as
bytes when every ranked symbol of the group is below 256, otherwise from
the 8 code rows; words of 16 units that share (lo, nc) and plain bits one
after another rebuilt under fixed shifts, others unit by unit) and the
scalar loops. Float embeddings take the byte-symbol, fixed-shift path
(tests/test_gather_cpu.py covers them); the tables here reach the others."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as R  # noqa: E402
from test_coded16_cpu import _check_every_kernel, _encode_under, _set_slots, _slots  # noqa: E402
from test_format_v3 import embeddings  # noqa: E402

EXP = (23, 8)  # (lo, nc) of float32's exponent


def _unit(tables, g, w, lo, nc, symbols):
    """Word w of group g coded as (lo, nc) with these ranked symbols (32-bit
    units: unit w is slot row 2 + k / 2 of word w, test_coded16_cpu's h = 0)."""
    _set_slots(tables, g, 2 * w, [len(symbols) | lo << 4 | nc << 9] + list(symbols)
               + [0] * (15 - len(symbols)))


def _other_field(rng, wide):
    """A (lo, nc) other than the exponent's and up to 3 distinct symbols:
    with wide, nc of 9-16 and a symbol of 256 or more (the group's symbols
    no longer fit a byte), else nc of at most 8."""
    if wide:
        nc = int(rng.integers(9, 17))
        lo = int(rng.integers(0, 33 - nc))
        syms = [int(v) for v in rng.choice(np.arange(256, 1 << nc), int(rng.integers(1, 4)),
                                           replace=False)]
    else:
        nc = int(rng.integers(1, 9))
        lo = int(rng.integers(0, 33 - nc))
        syms = [int(v) for v in rng.choice(1 << nc, int(rng.integers(0, min(3, 1 << nc) + 1)),
                                           replace=False)]
    return lo, nc, syms


def _mixed_tables(x, seed, wide, share=6):
    """x (4-byte dtype) under float32 code tables of its bits with every
    `share`-th word (at random) changed to another (lo, nc) (_other_field)."""
    base = ibp_gnn.compress(x.view(torch.float32), progress=False)
    assert base._fields["code_rows"] == 8
    tables = base._tables.copy()
    W = tables.shape[2]
    rng = np.random.default_rng(seed)
    for g in range(tables.shape[0]):
        for w in rng.choice(W, max(1, W // share), replace=False):
            _unit(tables, g, int(w), *_other_field(rng, wide))
    return _encode_under(x, tables, base)


@pytest.mark.parametrize("wide", [False, True], ids=["byte_symbols", "wide_symbols"])
@pytest.mark.parametrize("cols", [2, 7, 16, 17, 48, 130, 333])
def test_mixed_code_tables_every_kernel(cols, wide):
    """Words of other (lo, nc) than the exponent's in most 16-word steps
    (fixed shifts do not apply there), units without ranked symbols, and
    symbols that fit a byte or not; float32 and int32 rows."""
    x = embeddings(torch.float32, 600, cols, seed=cols, specials=0.01)
    ct = _mixed_tables(x, seed=cols, wide=wide)
    _check_every_kernel(ct, x, np.arange(600))
    xi = x.view(torch.int32)
    cti = _mixed_tables(xi, seed=cols + 1, wide=wide)
    assert cti.dtype == torch.int32
    _check_every_kernel(cti, xi, np.arange(600))


@pytest.mark.parametrize("cols", [40, 128])
def test_per_group_code_programs(cols):
    """Coded rows of two groups whose programs differ: group 0 keeps the
    exponent tables (byte symbols, fixed shifts everywhere), group 1 ranks
    other exponents, has a symbol of 256 or more and one word of another
    (lo, nc) per 16 words; either group's program applied to the other's
    rows decodes wrong."""
    lo, nc = EXP
    x = embeddings(torch.float32, 600, cols, seed=cols, specials=0.01)
    x[300:] *= 2.0 ** -6  # other exponents: the second group's symbols
    a = ibp_gnn.compress(x[:300].contiguous(), progress=False)
    W = a._tables.shape[2]
    tables = np.concatenate([a._tables[:1], a._tables[:1]]).copy()
    for w in range(W):  # group 1: group 0's exponent symbols less 6 (x[300:]'s)
        slots = _slots(tables, 1, 2 * w)
        if (slots[0] >> 4 & 31, slots[0] >> 9 & 31) == (lo, nc):
            _unit(tables, 1, w, lo, nc, [v - 6 for v in slots[1:1 + (slots[0] & 15)] if v >= 6])
    rng = np.random.default_rng(cols)
    odd = [w for j in range(-(-W // 16)) if (w := 16 * j + (5 * j + 3) % 16) < W]
    for i, w in enumerate(odd):  # one word per 16 of another (lo, nc); the first one wide
        _unit(tables, 1, w, *_other_field(rng, wide=i == 0))
    ct = _encode_under(x, tables, a)
    _, infos = R.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload,
                                 range(600))
    assert {i.group for i in infos if i.mode == R.CODED} == {0, 1}
    _check_every_kernel(ct, x, np.arange(600))
