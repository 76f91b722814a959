"""kCoded rows of 16-bit units (fp16, bf16, and int16 under hand-made code
tables) through every CPU kernel, against the raw bits: the AVX-512 decode
of csrc/ibp/cpu/coded16_cpu.h (blocks of 512 units, 64 ranks at a time from
the zero positions of the code stream, escapes read one at a time, uniform
and mixed (lo, nc) words) and the scalar loops. Widths around its 16-word
and 256-word steps, escapes everywhere, code streams with runs of more than
256 one bits, and rows at the payload's end before an unreadable page."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _C
from ibp_gnn._tensor import CompressedTensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as R  # noqa: E402
from test_format_v3 import embeddings  # noqa: E402
from test_gather_cpu import KERNELS, _escape_mix, _gather  # noqa: E402

HALF = (torch.float16, torch.bfloat16)
# (lo, nc) of the exponent
FIELD = {torch.float16: (10, 5), torch.bfloat16: (7, 8)}


def _check_every_kernel(ct, x, ids):
    want = x.contiguous().view(torch.uint8).numpy()[ids]
    assert ct.stats()["rows_per_mode"].get("coded", 0) > 0
    for kernel in KERNELS:
        for dt in (np.int64, np.int32):
            got = _gather(ct, ids.astype(dt), kernel, 1).view(torch.uint8).numpy()
            assert np.array_equal(got, want), (kernel, dt)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("cols", [1, 2, 3, 31, 32, 33, 66, 67, 513, 770, 1025])
def test_half_coded_rows_every_kernel(dtype, cols):
    """Embedding rows with NaN payloads, -0.0, Inf and denormals; odd widths
    end in a padding unit (another (lo, nc): the mixed path)."""
    x = embeddings(dtype, 400, cols, seed=cols)
    ct = ibp_gnn.compress(x, progress=False)
    ids = np.random.default_rng(cols).integers(0, 400, 300)
    _check_every_kernel(ct, x, np.concatenate([ids, [399, 398, 0]]))


@pytest.mark.parametrize("dtype,cols", [(torch.float16, 18), (torch.float16, 65),
                                        (torch.float16, 300), (torch.float16, 771),
                                        (torch.bfloat16, 18), (torch.bfloat16, 33),
                                        (torch.bfloat16, 771)])
def test_half_coded_rows_escapes_every_kernel(dtype, cols):
    """Escapes anywhere (runs of them, every unit of a row) and rank-0-only rows."""
    x = _escape_mix(dtype, 2000, cols, seed=cols)
    ct = ibp_gnn.compress(x, progress=False)
    _check_every_kernel(ct, x, np.arange(2000))


def _long_ones(dtype, rows, cols, seed):
    """Gaussian rows where some rows hold a run of `run` units whose exponent
    is all ones (NaN with random payloads, never ranked: each code is s one
    bits and nc one bits), so their code streams have one-bit runs of more
    than 256 bits, at several offsets; the rows stay cheaper coded than raw."""
    lo, nc = FIELD[dtype]
    rng = np.random.default_rng(seed)
    bits = embeddings(dtype, rows, cols, seed=seed, specials=0).view(torch.int16).numpy()
    bits = bits.view(np.uint16).copy()
    for k, r in enumerate(range(0, rows, 8)):
        run = 12 + k % 13
        at = (37 * k) % max(cols - run, 1)
        seg = bits[r, at:at + run]
        seg |= np.uint16(((1 << nc) - 1) << lo)
        seg |= rng.integers(1, 1 << lo, seg.shape).astype(np.uint16)  # NaN, not Inf
    return torch.from_numpy(bits.view(np.int16)).view(dtype).contiguous()


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("cols", [300, 700])
def test_half_coded_rows_long_one_runs(dtype, cols):
    """Runs of one bits of every length around 256 (the zero positions are
    kept modulo 256: a difference of 256 + r must not read as rank r)."""
    lo, nc = FIELD[dtype]
    x = _long_ones(dtype, 800, cols, seed=cols)
    base = ibp_gnn.compress(x, progress=False)
    tables = base._tables.copy()
    for g in range(tables.shape[0]):  # the all-ones exponent never ranked
        for u in range(2 * tables.shape[2]):
            slots = _slots(tables, g, u)
            s, ulo, unc = slots[0] & 15, slots[0] >> 4 & 31, slots[0] >> 9 & 31
            if (ulo, unc) != (lo, nc):
                continue
            ranked = [v for v in slots[1:1 + s] if v != (1 << nc) - 1]
            _set_slots(tables, g, u, [len(ranked) | lo << 4 | nc << 9] + ranked +
                       [0] * (15 - len(ranked)))
    ct = _encode_under(x, tables, base)
    runs = list(range(0, 800, 8))
    _, infos = R.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload, runs)
    coded = sum(i.mode == R.CODED for i in infos)
    assert coded >= len(runs) // 2
    _check_every_kernel(ct, x, np.arange(800))


def _slots(tables, g, u):
    """The 16 slots of unit u of group g (format.h: row 2 + 8h + k / 2, half k % 2)."""
    w, h = divmod(u, 2)
    return [int(tables[g, 2 + 8 * h + k // 2, w]) >> (16 * (k % 2)) & 0xFFFF for k in range(16)]


def _set_slots(tables, g, u, slots):
    w, h = divmod(u, 2)
    for q in range(8):
        tables[g, 2 + 8 * h + q, w] = slots[2 * q] | slots[2 * q + 1] << 16


def _encode_under(x, tables, base):
    """x encoded under `tables`: a tensor of x's dtype with the header fields
    of `base` otherwise (tests/test_coded_cpu.py: 4-byte dtypes)."""
    f = dict(base._fields)
    row_bytes = f["cols"] * x.element_size()
    xb = np.ascontiguousarray(x.view(torch.uint8).numpy().reshape(len(x), row_bytes))
    enc = _C.Encoder(row_bytes, f["row_words"], np.ascontiguousarray(tables))
    words, rel, bases = enc.encode(xb, row_bytes, 1)
    tail, last = enc.finish()
    f.update(dtype=base_code(x.dtype), payload_bits=enc.payload_bits, mode_rows=enc.mode_rows,
             num_groups=tables.shape[0], rows=len(x),
             group_bits=enc.group_bits, block_rows=enc.block_rows, rel_bytes=enc.rel_bytes,
             layout=enc.layout)
    rel = rel.view({2: np.uint16, 4: np.uint32}[enc.rel_bytes])
    return CompressedTensor(_C.pack_header(f), tables, np.concatenate([bases, last]), rel,
                            np.concatenate([words, tail]))


def _other_unit(rng):
    """The 16 slots of a unit of random (lo, nc) (lo < 12) with no ranked
    symbol (s = 0: every code an escape) or one."""
    lo = int(rng.integers(0, 12))
    nc = int(rng.integers(1, 17 - lo))
    s = int(rng.integers(0, 2))
    slots = [s | lo << 4 | nc << 9] + [0] * 15
    if s:
        slots[1] = int(rng.integers(0, 1 << nc))
    return slots


def _custom_code_tables(x, seed):
    """x (2-byte dtype) under the fp16 code tables of its bits with a share of
    the units changed to other (lo, nc) with no ranked symbol (s = 0: every
    code an escape) or one symbol."""
    base = ibp_gnn.compress(x.view(torch.float16), progress=False)
    tables = base._tables.copy()
    W = tables.shape[2]
    rng = np.random.default_rng(seed)
    for g in range(tables.shape[0]):
        for u in rng.choice(2 * W, max(1, W // 3), replace=False):
            _set_slots(tables, g, int(u), _other_unit(rng))
    return _encode_under(x, tables, base)


@pytest.mark.parametrize("cols", [7, 48, 333])
def test_mixed_code_tables_every_kernel(cols):
    """Units with other (lo, nc) than the exponent's, all-escape units, and
    int16 rows under fp16-made code tables (valid for any 2-byte dtype)."""
    x = embeddings(torch.float16, 700, cols, seed=cols, specials=0.01)
    ct = _custom_code_tables(x, seed=cols)
    _check_every_kernel(ct, x, np.arange(700))
    xi = x.view(torch.int16)
    cti = _custom_code_tables(xi, seed=cols + 1)
    assert cti.dtype == torch.int16
    _check_every_kernel(cti, xi, np.arange(700))


@pytest.mark.parametrize("cols", [768, 770])
def test_half_coded_rows_large_output_every_kernel(cols):
    """A gather of more than 16 MB (gather.cpp's kStreamMinBytes: the 16-bit
    kernel's non-temporal stores of whole 64-byte lines; 770 columns: rows
    not 64-byte aligned, regular stores) on one and two threads."""
    x = embeddings(torch.float16, 1000, cols, seed=cols, specials=0.01)
    ct = ibp_gnn.compress(x, progress=False)
    ids = np.random.default_rng(cols).integers(0, 1000, (16 << 20) // (2 * cols) + 100)
    want = x.view(torch.uint8).numpy()[ids]
    assert ct.stats()["rows_per_mode"].get("coded", 0) > 0
    for kernel in KERNELS:
        for threads in (1, 2):
            got = _gather(ct, ids, kernel, threads).view(torch.uint8).numpy()
            assert np.array_equal(got, want), (kernel, threads)


def test_half_coded_rows_few_ids_every_kernel():
    """Calls of fewer than 8 rows per group through _C.gather (gather_cpu
    builds no Coded16Program for them: the AVX-512 kernel's 16-bit rows take
    the scalar loop) next to a call of many."""
    x = embeddings(torch.float16, 500, 300, seed=3, specials=0.01)
    ct = ibp_gnn.compress(x, progress=False)
    for ids in ([7], [499, 0, 3], list(range(8 * ct.num_groups - 1)), list(range(500))):
        _check_every_kernel(ct, x, np.array(ids))


def _ranked_tables(x, base, fields):
    """base's tables with code rows where unit u has (lo, nc) = fields(u) and
    its up to 15 commonest field values in x (2-byte dtype) ranked, and no
    invariant bits (kIbp rows cost more than raw ones)."""
    tables = base._tables.copy()
    tables[:, 0] = 0
    units = np.ascontiguousarray(x.view(torch.int16).numpy()).view(np.uint16)
    for g in range(tables.shape[0]):
        for u in range(2 * tables.shape[2]):
            lo, nc = fields(u)
            col = units[:, u] if u < units.shape[1] else np.zeros(1, np.uint16)
            vals, counts = np.unique((col >> lo) & ((1 << nc) - 1), return_counts=True)
            ranked = [int(v) for v in vals[np.argsort(-counts, kind="stable")][:15]]
            _set_slots(tables, g, u, [len(ranked) | lo << 4 | nc << 9] + ranked +
                       [0] * (15 - len(ranked)))
    return tables


@pytest.mark.parametrize("lo,nc", [(14, 2), (12, 3), (11, 4), (9, 6), (10, 6), (10, 5)])
@pytest.mark.parametrize("cols", [100, 333])
def test_uniform_fields_of_any_width(lo, nc, cols):
    """Every unit with one (lo, nc) around the fp16 exponent (the uniform words'
    path for other widths than fp16's and bf16's: plain bits of 4 units per
    qword, symbols from nc bit planes), escapes included; 333 columns end in
    a padding unit with its own (lo, nc)."""
    x = embeddings(torch.float16, 700, cols, seed=cols + nc, specials=0.01)
    base = ibp_gnn.compress(x, progress=False)
    tables = _ranked_tables(x, base, lambda u: (lo, nc) if u < cols else (0, 16))
    ct = _encode_under(x, tables, base)
    _check_every_kernel(ct, x, np.arange(700))


def test_uniform_one_bit_fields_take_the_general_path():
    """Units whose field is one bit (plain bits of 4 units do not fit a qword:
    the words take the per-unit path) in the first 16 words, unit 0's (lo, nc)
    then uniform over them, the fp16 exponent's elsewhere."""
    x = embeddings(torch.float16, 700, 96, seed=5, specials=0.01)
    base = ibp_gnn.compress(x, progress=False)
    tables = _ranked_tables(x, base, lambda u: (15, 1) if u < 32 else (10, 5))
    ct = _encode_under(x, tables, base)
    _check_every_kernel(ct, x, np.arange(700))


@pytest.mark.parametrize("cols", [40, 600])
def test_per_group_code_programs(cols):
    """The CPU gather's per-group program (Coded16Program: each unit's s and
    the uniform-(lo, nc) flags, derived from the code rows once): coded rows
    of two groups whose code rows differ in s and (lo, nc) at other units
    (one group's program applied to the other's rows decodes wrong), and the
    second group's exponent codes ranked in another order."""
    lo, nc = FIELD[torch.float16]
    x = embeddings(torch.float16, 600, cols, seed=cols, specials=0.01)
    x[300:] *= 2.0 ** -6  # other exponents: the second group's symbols
    a = ibp_gnn.compress(x[:300].contiguous(), progress=False)
    W = a._tables.shape[2]
    tables = np.concatenate([a._tables[:1], a._tables[:1]]).copy()
    for u in range(2 * W):  # group 1: group 0's exponent symbols less 6 (x[300:]'s)
        slots = _slots(tables, 1, u)
        if (slots[0] >> 4 & 31, slots[0] >> 9 & 31) == (lo, nc):
            ranked = [v - 6 for v in slots[1:1 + (slots[0] & 15)] if v >= 6]
            _set_slots(tables, 1, u, [len(ranked) | lo << 4 | nc << 9] + ranked +
                       [0] * (15 - len(ranked)))
    rng = np.random.default_rng(cols)
    # distinct units per group with another (lo, nc), s = 0 or 1: a fifth of
    # group 0's at random, one per 16 words of group 1's (at unit 27 of the
    # first 16 words, 6 of the next, ...: the words' only non-uniform unit)
    changed = [rng.choice(2 * W, max(1, (2 * W) // 5), replace=False),
               [u for j in range(-(-W // 16)) if (u := 32 * j + (11 * j + 27) % 32) < 2 * W]]
    for g in range(2):
        for u in changed[g]:
            _set_slots(tables, g, int(u), _other_unit(rng))
    for u in range(2 * W):  # group 1: its exponent units' s differ from group 0's
        slots = _slots(tables, 1, u)
        if (slots[0] >> 4 & 31, slots[0] >> 9 & 31) == (lo, nc) and (slots[0] & 15) > 2:
            s = (slots[0] & 15) - 1 - u % 2
            _set_slots(tables, 1, u, [s | lo << 4 | nc << 9] + slots[1:1 + s] + [0] * (15 - s))
    ct = _encode_under(x, tables, a)
    _, infos = R.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload,
                                 range(600))
    groups = {i.group for i in infos if i.mode == R.CODED}
    assert groups == {0, 1}
    _check_every_kernel(ct, x, np.arange(600))


def base_code(dtype):
    return ibp_gnn.compress(torch.zeros(1, 1, dtype=dtype), progress=False)._fields["dtype"]


_GUARD = r"""
import sys
import numpy as np, torch, ibp_gnn
from ibp_gnn import _C, testing
cols, dtype = int(sys.argv[1]), getattr(torch, sys.argv[2])
g = torch.Generator().manual_seed(cols)
x = (torch.randn(1000, cols, generator=g) * 0.2).to(dtype).contiguous()
ct = ibp_gnn.compress(x, progress=False)
assert ct.stats()["rows_per_mode"].get("coded", 0) > 0
tight = testing.before_guard_page(ct._payload)  # the page after it faults
ids = np.arange(1000)[::-1].copy()
want = x.view(torch.uint8).numpy().reshape(1000, -1)[ids]
for k in _C.cpu_kernels():
    out = np.empty_like(want)
    _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, tight, ids, out.reshape(-1), 1, k)
    assert np.array_equal(out, want), k
print("ok", _C.cpu_kernels())
"""


@pytest.mark.parametrize("cols,dtype", [(3, "float16"), (2, "bfloat16"), (67, "bfloat16"),
                                        (770, "float16")])
def test_half_coded_rows_read_nothing_past_the_payload(cols, dtype):
    r = subprocess.run([sys.executable, "-c", _GUARD, str(cols), dtype], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])
