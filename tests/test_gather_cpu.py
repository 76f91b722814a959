"""The fast paths of the CPU codec against the reference: the branch-free row
decode (every CPU kernel, one and several threads), the thread count chosen
from the work size, and the encoder's sort-free bound on kSparse rows (the
encoded bytes must equal tests/reference.py's encoder, rows near the bound
included)."""
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _C
from ibp_gnn.testing import SHARED_DATASETS, load_shared, shared_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as R  # noqa: E402

KERNELS = tuple(_C.cpu_kernels())  # 1 portable, 2 bmi2, 3 avx2, 4 avx512: those this CPU runs


def _gather(ct, ids, kernel, threads):
    out = torch.empty((len(ids), ct.shape[1]), dtype=ct.dtype)
    _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload, ids,
              out.view(torch.uint8).reshape(-1).numpy(), threads, kernel)
    return out


def _embedding(rows, cols, dtype, seed):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((8, cols)).astype(np.float32)
    x = rng.standard_normal((rows, 8)).astype(np.float32) @ basis * np.float32(0.1)
    x = (x * 100).astype(dtype) if np.dtype(dtype).kind in "iu" else x.astype(dtype)
    # Exceptions: words that cannot fit any mask, at every position.
    bits = x.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[x.itemsize])
    r = rng.integers(0, rows, rows // 4)
    c = rng.integers(0, cols, rows // 4)
    bits[r, c] = rng.integers(0, np.iinfo(bits.dtype).max, rows // 4, dtype=bits.dtype)
    bits[0, :] = np.iinfo(bits.dtype).max  # a row whose words all miss
    return np.ascontiguousarray(x)


@pytest.mark.parametrize("dtype,cols", [(np.float32, 128), (np.float32, 5), (np.float16, 33),
                                        (np.float16, 384), (np.uint8, 7), (np.int64, 3)])
def test_dense_rows_every_kernel_and_thread_count(dtype, cols, monkeypatch):
    """Dense rows with and without exceptions decode bit-exactly with the
    portable deposit (the CUDA kernel's), PDEP, AVX2 and AVX-512, on 1 and 2 threads (the
    batch is big enough for gather_threads to give 2). kCoded rows are off so the kIbp rows
    stay (tests/test_format_v3.py covers kCoded ones)."""
    monkeypatch.setattr(ibp_gnn._encode, "CODED_ROWS", False)
    rows = max(600, (3 << 20) // (cols * np.dtype(dtype).itemsize) // 4)
    x = _embedding(rows, cols, dtype, seed=cols)
    ct = ibp_gnn.compress(x, threads=2, progress=False)
    assert ct.stats()["rows_per_mode"].get("ibp", 0) > 0
    row_bytes = cols * np.dtype(dtype).itemsize
    ids = np.random.default_rng(1).integers(0, rows, max(rows, (8 << 20) // row_bytes))
    assert _C.gather_threads(len(ids), row_bytes, 2, ct._payload.nbytes // rows) == 2
    want = x.view(np.uint8).reshape(rows, -1)[ids]
    for kernel in KERNELS:
        for threads in (1, 2):
            got = _gather(ct, ids, kernel, threads).view(torch.uint8).reshape(len(ids), -1)
            assert np.array_equal(got.numpy(), want), (kernel, threads)


def test_gather_threads_from_work_size():
    """Threads from the estimated single-thread time: 0.1 ns per output byte plus
    0.7 ns per payload byte, at least 1 ms each (gather.h)."""
    def ns(n, rb, pb):
        return n * (rb * 100 + pb * 700) // 1000

    assert _C.gather_threads(0, 512, 8) == 1
    assert _C.gather_threads(1024, 512, 8) == 1                  # dense, ~0.4 ms: one thread
    assert ns(1024, 512, 512) < 2_000_000
    n2 = -(-2_000_000 * 1000 // (512 * 100 + 512 * 700))        # rows of 2 ms, dense
    assert ns(n2, 512, 512) >= 2_000_000 > ns(n2 - 1, 512, 512)
    assert _C.gather_threads(n2, 512, 8) == 2
    assert _C.gather_threads(n2 - 1, 512, 8) == 1
    assert _C.gather_threads(100_000, 512, 8) == 8               # 41 ms: capped by the caller's count
    assert _C.gather_threads(100_000, 512, 3) == 3
    assert _C.gather_threads(100_000, 512, 0) == 1
    assert _C.gather_threads(100_000, 512, 1) == 1
    # Sparse rows (few payload bytes) need more rows per thread than dense ones:
    # a 1024-row batch of 5.7 KB bag-of-words rows (6 MB out) stays on one thread.
    assert _C.gather_threads(1024, 5732, 2, 40) == 1
    assert _C.gather_threads(1024, 5732, 2) == 2                 # the same bytes, dense
    assert _C.gather_threads(100_000, 5732, 2, 40) == 2
    assert _C.gather_threads(1024, 512, 8, 512) == _C.gather_threads(1024, 512, 8)


def _sparse_bound_rows(w, rng):
    """Rows listed against an all-zero value table whose kSparse size lands on
    both sides of their kIbp size: few distinct values repeated (the
    dictionary wins), all distinct (inline values), and hash-colliding
    duplicates mixed in."""
    rows = []
    for c, d, hi in itertools.product(range(w + 1), (1, 2, 3, w // 2, w), (1 << 24, 1 << 32)):
        if 1 <= d <= max(c, 1):
            # Values below 2^24 fit group 0 (24 bits each as kIbp), so only a
            # dictionary can make kSparse win: the distinct-count bound decides.
            row = np.zeros(w, np.uint32)
            pos = rng.choice(w, size=c, replace=False)
            vals = rng.integers(1, hi, size=d, dtype=np.uint64).astype(np.uint32)
            row[pos] = vals[rng.integers(0, d, size=c)] if c else row[pos]
            rows.append(row)
    return np.stack(rows)


@pytest.mark.parametrize("w", [1, 5, 17, 40])
def test_sparse_bound_keeps_the_encoding(w):
    """The encoder with its skip-the-trial bound writes exactly the reference
    encoder's bytes (which always makes the exact kSparse plan)."""
    rng = np.random.default_rng(w)
    words = _sparse_bound_rows(w, rng)
    # Group 0: values 0, variable low 24 bits, so a word fits iff < 2^24; group 1: zeros fit only.
    mask0 = np.full(w, 0xFF000000, np.uint32)
    tables = np.stack([np.stack([mask0, np.zeros(w, np.uint32)]),
                       np.stack([np.full(w, 0xFFFFFFFF, np.uint32), np.zeros(w, np.uint32)])])
    payload, bases, rel, mode_rows = R.encode_ref(words, tables, allow_sparse=True)
    enc = _C.Encoder(4 * w, w, np.ascontiguousarray(tables))
    wds, rl, bs = enc.encode(R.to_bytes(words), 4 * w, 1)
    last, b_last = enc.finish()
    got = np.concatenate([wds, last])
    assert np.array_equal(got, payload)
    assert tuple(enc.mode_rows) == mode_rows
    if w > 1:  # both sides of the bound occur
        assert mode_rows[2] > 0 and mode_rows[1] + mode_rows[0] > 0
    assert np.array_equal(np.concatenate([bs, b_last]), bases)
    assert np.array_equal(enc.row_bits(R.to_bytes(words), 4 * w).min(axis=1),
                          R.row_bits_ref(words, tables).min(axis=1))


_GUARD_SCRIPT = r"""
import sys
import numpy as np, torch, ibp_gnn
from ibp_gnn import _C, testing
cols, dtype = int(sys.argv[1]), getattr(np, sys.argv[2])
rng = np.random.default_rng(cols)
R = 1200 if sys.argv[3:] in (["esc"], ["short"]) else 300  # rows
x = (rng.standard_normal((R, cols)) * 0.1).astype(dtype)
if len(sys.argv) > 3 and sys.argv[3] == "bow":  # bag-of-words rows: one value per row
    x = (rng.random((R, cols)) < 0.3).astype(dtype)  # (row-normalised), ~1/3 of the words
    x /= np.maximum(x.sum(1, keepdims=True), 1)
if len(sys.argv) > 3 and sys.argv[3] == "esc":  # kCoded rows with escapes up to the payload's end
    # per row, a share of units with exponents the gaussian never has, from
    # more values than a unit ranks: escapes anywhere, the last rows too
    rare = rng.integers(130, 150, x.shape).astype(np.uint32) << 23
    esc = rng.random(x.shape) < rng.random((R, 1)) * 0.1
    esc[-1, -2:] = True
    u = x.view(np.uint32)
    u[esc] = (u[esc] & ~np.uint32(0xFF << 23)) | rare[esc]
if len(sys.argv) > 3 and sys.argv[3] == "short":  # a last kCoded row of the shortest codes
    # (every exponent its column's commonest): the row ends < 64 bytes after
    # its last 16 words' plain bits start, so a 64-byte load of those 48 bytes
    # would pass the payload
    x[-1] = (np.sign(x[-1]) * rng.uniform(0.0625, 0.125, cols)).astype(dtype)  # exponent 123
ct = ibp_gnn.compress(x, progress=False)
if len(sys.argv) > 3 and sys.argv[3] in ("esc", "short"):
    assert ct.stats()["rows_per_mode"].get("coded", 0) > 0
if len(sys.argv) > 3 and sys.argv[3] == "short":
    assert ct.fetch_nbytes(np.array([R - 1])) < 3 * cols + 16  # 48 plain bytes per 16 words
tight = testing.before_guard_page(ct._payload)  # the page after it faults
ids = np.arange(R)[::-1].copy()
want = x.view(np.uint8).reshape(R, -1)[ids]
for k in _C.cpu_kernels():
    out = np.empty_like(want)
    _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, tight, ids, out.reshape(-1), 1, k)
    assert np.array_equal(out, want), k
    g = _C.CpuGather(ct._header, ct._decode_table, ct._bases, ct._rel, tight)
    out = np.empty_like(want)
    assert g.gather(ids.ctypes.data, R, True, out.ctypes.data, 1, True, k) == 0
    assert np.array_equal(out, want), k
print("ok", _C.cpu_kernels())
"""


@pytest.mark.parametrize("cols,dtype,bow", [(3, "float32", ""), (64, "float32", ""),
                                            (33, "float16", ""), (16, "float16", ""),
                                            (64, "float16", ""), (17, "float32", "bow"),
                                            (767, "float32", "bow"), (17, "float32", "esc"),
                                            (16, "float32", "esc"), (128, "float32", "esc"),
                                            (300, "float32", "esc"), (16, "float32", "short"),
                                            (32, "float32", "short")])
def test_kernels_read_nothing_past_the_payload(cols, dtype, bow):
    """The last rows decode with every kernel, through _C.gather and CpuGather,
    when the page after the payload is unreadable (the wide SIMD loads stay
    inside the payload and its padding): dense rows, one-value sparse rows,
    kCoded rows whose last codes are escapes, and a last kCoded row shorter
    than one 64-byte load (the fast 32-bit coded rows' bound)."""
    import subprocess
    r = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT, str(cols), dtype] + ([bow] if bow else []),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])


def test_kernel_forced_by_environment():
    """IBP_CPU_KERNEL=portable makes kernel=0 (every ordinary gather) use the
    portable fallback, so a CI run can exercise it end to end."""
    import os
    import subprocess
    code = "from ibp_gnn import _C; print(_C.cpu_kernel(), max(_C.cpu_kernels()))"
    for name, want in (("portable", 1), ("bmi2", 2), ("avx2", 3), ("avx512", 4)):
        env = dict(os.environ, IBP_CPU_KERNEL=name)
        got, best = map(int, subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                            capture_output=True, text=True).stdout.split())
        assert got == (want if want in _C.cpu_kernels() else best), name


FROZEN = sorted((Path(__file__).resolve().parent / "data").glob("v*.ibp"))


@pytest.mark.parametrize("path", FROZEN, ids=[p.stem for p in FROZEN])
def test_frozen_files_every_kernel(path):
    """Every frozen file (v1/v2/v3: dense, coded, sparse, dictionary, bitmap
    rows) decodes to its saved bytes with every CPU kernel through CpuGather,
    int64 and int32 ids."""
    ct = ibp_gnn.load(path)
    rows = len(ct)
    raw = np.load(path.with_suffix(".raw.npy")).view(np.uint8).reshape(rows, ct.shape[1] * ct.dtype.itemsize)
    g = _C.CpuGather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload)
    ids = np.random.default_rng(7).integers(0, max(rows, 1), 3 * rows + 1) if rows else \
        np.zeros(0, np.int64)
    for kernel in KERNELS:
        for dt in (np.int64, np.int32):
            i = ids.astype(dt)
            out = np.full((len(i), raw.shape[1]), 0xA5, np.uint8)
            assert g.gather(i.ctypes.data, len(i), dt == np.int64, out.ctypes.data, 1, True,
                            kernel) == 0
            assert np.array_equal(out, raw[i]), (kernel, dt)


@pytest.mark.parametrize("cols", [1, 15, 16, 17, 31, 33, 767])
def test_one_value_sparse_rows_every_width(cols):
    """Binary and row-normalised bag-of-words rows (a one-entry dictionary and a
    bitmap: the AVX-512 blend path) at widths around its 16-word steps, and
    empty rows, decode bit-exactly with every kernel."""
    rng = np.random.default_rng(cols)
    x = (rng.random((400, cols)) < 0.3).astype(np.float32)
    x[::7] = 0
    x[1::5] /= np.maximum(x[1::5].sum(1, keepdims=True), 1)
    x[3, :] = -0.0
    ct = ibp_gnn.compress(x, progress=False)
    assert ct.stats()["rows_per_mode"].get("sparse", 0) > 0 or cols == 1
    ids = rng.integers(0, 400, 1000)
    want = x.view(np.uint8)[ids]
    for kernel in KERNELS:
        got = _gather(ct, ids, kernel, 1).view(torch.uint8).numpy()
        assert np.array_equal(got, want), kernel


def test_fast_path_checks_like_the_general_path():
    """ct.gather's one-step CPU path (contiguous int64/int32 ids, out None or a
    matching tensor): the same errors as the general path before anything is
    written, ids copied before they are checked and decoded (ids sharing memory
    with out), and the same rows as the general path (non-contiguous ids)."""
    x = torch.from_numpy(_embedding(500, 9, np.float32, seed=3))
    ct = ibp_gnn.compress(x, progress=False)
    out = torch.full((3, 9), 7.0)
    for bad, msg in (([0, -1, 2], "holds negative id -1"), ([0, 500, 2], "id 500, out of range")):
        for dt in (torch.int64, torch.int32):
            with pytest.raises(IndexError, match=msg):
                ct.gather(torch.tensor(bad, dtype=dt), out=out)
            assert torch.equal(out, torch.full((3, 9), 7.0))
    import mmap
    import warnings
    ro_map = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ro = torch.from_numpy(np.frombuffer(ro_map, np.float32, 27).reshape(3, 9))
    with pytest.raises(ValueError, match="read-only memory"):
        ct.gather(torch.tensor([0, 1, 2]), out=ro)
    ids = torch.randint(0, 500, (2000,), generator=torch.Generator().manual_seed(0))
    for dt in (torch.int64, torch.int32):
        got = ct.gather(ids.to(dt))
        assert torch.equal(got.view(torch.int32), x[ids].view(torch.int32))
        o = torch.empty((2000, 9))
        assert ct.gather(ids.to(dt), out=o, threads=2) is o
        assert torch.equal(o.view(torch.int32), x[ids].view(torch.int32))
    strided = ids.repeat_interleave(2)[::2]
    assert not strided.is_contiguous()
    assert torch.equal(ct.gather(strided).view(torch.int32), x[ids].view(torch.int32))
    # ids that are the bytes of out itself (one int32 column): decoded as given.
    y = torch.arange(400, dtype=torch.int32).reshape(400, 1).flip(0).contiguous()
    cy = ibp_gnn.compress(y, progress=False)
    shared = torch.tensor([5, 0, 399, 7], dtype=torch.int32).reshape(4, 1)
    assert cy.gather(shared.view(-1), out=shared) is shared
    assert shared.view(-1).tolist() == [394, 399, 0, 392]
    assert ct.gather(torch.zeros(0, dtype=torch.int64)).shape == (0, 9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cols", [1, 15, 16, 17, 41, 128])
def test_coded_rows_every_kernel_and_width(dtype, cols):
    """kCoded rows (embedding-like, with NaN payloads, -0.0, Inf, denormals)
    decode bit-exactly with every kernel at widths around the AVX-512 kernel's
    16-word steps, int64 and int32 ids."""
    from test_format_v3 import embeddings
    x = embeddings(dtype, 900, cols, seed=cols)
    ct = ibp_gnn.compress(x, progress=False)
    assert ct.stats()["rows_per_mode"].get("coded", 0) > 0 or cols == 1
    ids = np.random.default_rng(cols).integers(0, 900, 700)
    want = x.contiguous().view(torch.uint8).numpy()[ids]
    for kernel in KERNELS:
        for dt in (np.int64, np.int32):
            got = _gather(ct, ids.astype(dt), kernel, 1).view(torch.uint8).numpy()
            assert np.array_equal(got, want), (kernel, dt)


@pytest.mark.parametrize("dtype,cols", [(torch.float32, 128), (torch.float32, 48),
                                        (torch.float16, 64)], ids=str)
def test_coded_rows_large_output_every_kernel_and_alignment(dtype, cols):
    """A gather of more than 16 MB (gather.cpp's kStreamMinBytes: the AVX-512
    and AVX2 kernels write fast coded rows by non-temporal stores where the
    output is 64- / 32-byte aligned) into outputs at offsets 0, 32 and 4
    bytes from a 64-byte boundary, on one and two threads."""
    from test_format_v3 import embeddings
    x = embeddings(dtype, 1000, cols, seed=cols)
    ct = ibp_gnn.compress(x, progress=False)
    assert ct.stats()["rows_per_mode"].get("coded", 0) > 500
    row = cols * x.element_size()
    ids = np.random.default_rng(cols).integers(0, 1000, (16 << 20) // row + 100)
    want = x.contiguous().view(torch.uint8).numpy()[ids]
    buf = torch.empty(len(ids) * row + 128, dtype=torch.uint8)
    base = (-buf.data_ptr()) % 64
    for kernel, threads, offset in itertools.product(KERNELS, (1, 2), (0, 32, 4)):
        out = buf[base + offset:base + offset + len(ids) * row]
        out.fill_(0)
        _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload, ids,
                  out.numpy(), threads, kernel)
        assert np.array_equal(out.numpy().reshape(len(ids), row), want), (kernel, threads, offset)


@pytest.mark.parametrize("cols", [1000, 1001, 2879])
def test_sparse_rows_large_output_every_kernel(cols):
    """A gather of more than 16 MB of kSparse rows (built in a buffer, then
    streamed out: their whole 64-byte lines by non-temporal stores, the rest
    copied) beside dense rows of the same table, rows 64-byte aligned or not
    (1001 and 2879 columns), outputs at offsets 0 and 4, one and two threads."""
    rng = np.random.default_rng(cols)
    x = (rng.random((600, cols)) < 0.01).astype(np.float32)
    x[:40] = rng.standard_normal((40, cols)).astype(np.float32)  # dense rows
    x[40, :] = np.float32("nan")
    x[41, ::7] = -0.0
    x = torch.from_numpy(x)
    ct = ibp_gnn.compress(x, progress=False)
    modes = ct.stats()["rows_per_mode"]
    assert modes.get("sparse", 0) > 500 and len(modes) > 1, modes
    row = cols * 4
    ids = rng.integers(0, 600, (16 << 20) // row + 100)
    want = x.view(torch.uint8).numpy()[ids]
    buf = torch.empty(len(ids) * row + 128, dtype=torch.uint8)
    base = (-buf.data_ptr()) % 64
    for kernel, threads, offset in itertools.product(KERNELS, (1, 2), (0, 4)):
        out = buf[base + offset:base + offset + len(ids) * row]
        out.fill_(0)
        _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload, ids,
                  out.numpy(), threads, kernel)
        assert np.array_equal(out.numpy().reshape(len(ids), row), want), (kernel, threads, offset)


def _escape_mix(dtype, rows, cols, seed):
    """Gaussian embedding rows whose units get, at a per-row share, an exponent
    the gaussian never has (escapes at every bit of a 64-bit window, runs of
    them), rows where every unit is such an escape, and rows where every unit
    has the commonest exponent (rank 0 only)."""
    from test_format_v3 import embeddings
    rng = np.random.default_rng(seed)
    ebits, mbits, st = {torch.float32: (8, 23, torch.int32), torch.float16: (5, 10, torch.int16),
                        torch.bfloat16: (8, 7, torch.int16)}[dtype]
    raw = embeddings(dtype, rows, cols, seed=seed, specials=0).view(st).numpy()
    bits = raw.view(raw.dtype.str.replace("i", "u")).astype(np.int64)
    emask = ((1 << ebits) - 1) << mbits
    e = (bits & emask) >> mbits
    common = np.bincount(e.ravel()).argmax()
    rare = (1 << ebits) - 2 - rng.integers(0, 3, (rows, cols))  # huge values: never ranked
    esc = rng.random((rows, cols)) < rng.random((rows, 1)) * 0.1
    kind = rng.integers(0, 8, rows)
    esc[kind == 1] = True
    e = np.where(esc, rare, e)
    e[kind == 0] = common
    bits = (bits & ~emask) | (e << mbits)
    return torch.from_numpy(bits.astype(raw.dtype.str.replace("i", "u")).view(raw.dtype)) \
        .view(dtype).contiguous()


@pytest.mark.parametrize("cols", [16, 17, 64, 128, 300])
def test_coded_rows_escapes_every_kernel(cols):
    """kCoded rows with escapes anywhere in the code stream (window ends, runs
    of them, every unit) and rows of rank-0 codes only decode bit-exactly with
    every kernel."""
    x = _escape_mix(torch.float32, 1200, cols, seed=cols)
    ct = ibp_gnn.compress(x, progress=False)
    assert ct.stats()["rows_per_mode"].get("coded", 0) > 0
    ids = np.arange(1200)
    want = x.view(torch.uint8).numpy()
    for kernel in KERNELS:
        got = _gather(ct, ids, kernel, 1).view(torch.uint8).numpy()
        assert np.array_equal(got, want), kernel


def _long_codes(rows, cols, seed):
    """float32 rows whose exponents spread over 14 values (every one ranked,
    codes of 1-14 bits), at a per-row share: a 64-bit window often holds
    fewer than 16 codes, and 16 codes sometimes more than two windows."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 23, (rows, cols)) | (rng.integers(0, 2, (rows, cols)) << 31)
    spread = rng.random((rows, 1)) < rng.random((rows, 1))
    e = np.where(spread, 120 - rng.integers(0, 14, (rows, cols)),
                 120 - rng.geometric(0.7, (rows, cols)).clip(1, 14) + 1)
    return torch.from_numpy((bits | (e << 23)).astype(np.uint32).view(np.float32))


@pytest.mark.parametrize("cols", [16, 32, 128, 160])
def test_coded_rows_long_codes_every_kernel(cols):
    """kCoded rows of long codes (windows of fewer than 16 codes: the fast
    32-bit path's second window, and its fallback) decode bit-exactly."""
    x = _long_codes(1500, cols, seed=cols)
    ct = ibp_gnn.compress(x, progress=False)
    assert ct.stats()["rows_per_mode"].get("coded", 0) > 600
    ids = np.random.default_rng(cols).permutation(1500)
    want = x.view(torch.uint8).numpy()[ids]
    for kernel in KERNELS:
        got = _gather(ct, ids, kernel, 1).view(torch.uint8).numpy()
        assert np.array_equal(got, want), kernel


def test_guard_page_faults_right_after_the_payload():
    """The guard-page tests' premise: ibp_gnn.testing.before_guard_page leaves
    the payload readable to its last byte and the next byte faulting."""
    import subprocess
    code = ("import ctypes, numpy as np\nfrom ibp_gnn import testing\n"
            "t = testing.before_guard_page(np.arange(5, dtype=np.uint32))\n"
            "assert t.tolist() == list(range(5))\n"
            "print(ctypes.c_uint8.from_address(t.ctypes.data + 19).value, flush=True)\n"
            "ctypes.c_uint8.from_address(t.ctypes.data + 20).value\n"
            "print('read past the end')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["0"] and r.returncode == -11, (r.returncode, r.stdout, r.stderr)


def _participation_rows(cols, seed):
    """Rows of two populations (variable bits 0-9, none deposited; variable
    bits 4-11 and 20-21 over fixed low bits, deposited), each as rows whose
    words all participate and rows with one word stored whole (a random
    32-bit word) at every position, two whole words in some."""
    rng = np.random.default_rng(seed)
    rows = max(512, 8 * cols)
    low = np.uint32(0x3F800000) | rng.integers(0, 1 << 10, (rows, cols), dtype=np.uint32)
    gap = (np.uint32(0x40000005) | (rng.integers(0, 1 << 8, (rows, cols), dtype=np.uint32) << 4)
           | (rng.integers(0, 4, (rows, cols), dtype=np.uint32) << 20))
    w = np.where((np.arange(rows) % 2 == 0)[:, None], low, gap).astype(np.uint32)
    r = np.arange(rows)
    hit = r % 3 != 0  # every third row keeps every word participating
    w[r[hit], (r[hit] // 3) % cols] = rng.integers(0, 1 << 32, hit.sum(), dtype=np.uint32)
    two = r % 5 == 1
    w[r[two], (r[two] * 7 + 3) % cols] = rng.integers(0, 1 << 32, two.sum(), dtype=np.uint32)
    return np.ascontiguousarray(w.view(np.float32))


@pytest.mark.parametrize("cols", [1, 15, 16, 17, 64, 129])
def test_dense_rows_whole_words_every_position(cols, monkeypatch):
    """kIbp rows whose words all participate and rows with one or two words
    stored whole at every position, over groups with and without a deposit,
    decode bit-exactly with every kernel (the AVX-512 kernel's precomputed
    field masks and offsets, the shift of the later fields by a whole word)."""
    monkeypatch.setattr(ibp_gnn._encode, "CODED_ROWS", False)
    x = _participation_rows(cols, seed=cols)
    ct = ibp_gnn.compress(x, threads=2, progress=False)
    assert ct.stats()["rows_per_mode"].get("ibp", 0) > len(x) // 5  # 1 word: whole -> kRaw
    ids = np.random.default_rng(2).permutation(np.repeat(np.arange(len(x)), 3))
    want = x.view(np.uint8)[ids]
    for kernel in KERNELS:
        got = _gather(ct, ids, kernel, 1).view(torch.uint8).reshape(len(ids), -1)
        assert np.array_equal(got.numpy(), want), kernel


def _whole_runs(cols, seed):
    """Rows over words of 3 variable bits (32 - nvar = 29 more bits when
    stored whole) and constant words (nvar = 0: 32 more), with runs of 1 to 16
    consecutive words stored whole (random 32-bit words) at every position,
    aligned 8-word groups of constant words all whole included."""
    rng = np.random.default_rng(seed)
    rows = 24 * cols
    w = np.uint32(0x3F800000) | rng.integers(0, 8, (rows, cols), dtype=np.uint32)
    const = (np.arange(cols) // 8) % 3 == 1  # whole 8-word groups of one value
    w[:, const] = np.uint32(0x40400000)
    for r in range(rows):
        k = 1 + r % 16
        at = (r // 16 * 5) % cols
        if r % 7 == 0:  # the run covers an aligned group of constant words
            at = int(np.flatnonzero(const)[(r // 7 * 8) % const.sum()])
        idx = (at + np.arange(k)) % cols
        w[r, idx] = rng.integers(0, 1 << 32, k, dtype=np.uint32) | np.uint32(1 << 31)
    return np.ascontiguousarray(w.view(np.float32))


@pytest.mark.parametrize("cols", [24, 64, 136])
def test_dense_rows_runs_of_whole_words(cols, monkeypatch):
    """kIbp rows with up to 16 consecutive words stored whole, each adding
    29 or 32 bits to the later fields' offsets (the AVX-512 kernel's
    per-64-word sums: up to 7 * 32 before a word of an 8-word group, 8 * 32
    for the group), decode bit-exactly with every kernel."""
    monkeypatch.setattr(ibp_gnn._encode, "CODED_ROWS", False)
    x = _whole_runs(cols, seed=cols)
    ct = ibp_gnn.compress(x, threads=2, progress=False)
    assert ct.stats()["rows_per_mode"].get("ibp", 0) > len(x) // 2
    ids = np.random.default_rng(3).permutation(np.repeat(np.arange(len(x)), 2))
    want = x.view(np.uint8)[ids]
    for kernel in KERNELS:
        got = _gather(ct, ids, kernel, 1).view(torch.uint8).reshape(len(ids), -1)
        assert np.array_equal(got.numpy(), want), kernel


@pytest.mark.skipif(shared_dir() is None, reason="../shared/datasets is not present")
@pytest.mark.parametrize("name", SHARED_DATASETS)
def test_shared_datasets_every_kernel(name):
    """Real feature matrices (sparse, row-normalised and dense: reddit's kIbp
    rows decode two at a time) gather bit-exactly with every kernel and
    through ct.gather and ct[idx] (the per-tensor programs), random ids with
    repeats, consecutive pairs and the last row."""
    x = torch.from_numpy(load_shared(name))[:3000].contiguous()
    ct = ibp_gnn.compress(x, progress=False)
    n = len(x)
    ids = np.concatenate([np.random.default_rng(len(name)).integers(0, n, 1500),
                          np.arange(n - 64, n), [n - 1, 0, n - 1]]).astype(np.int64)
    want = x.view(torch.uint8).numpy()[ids]
    for kernel in KERNELS:
        assert np.array_equal(_gather(ct, ids, kernel, 1).view(torch.uint8).numpy(), want), kernel
    t = torch.from_numpy(ids)
    for got in (ct.gather(t, threads=1), ct.gather(t, threads=2), ct[t]):
        assert np.array_equal(got.view(torch.uint8).numpy(), want)


@pytest.mark.skipif(shared_dir() is None, reason="../shared/datasets is not present")
@pytest.mark.parametrize("name", ["cora", "inj_amazon", "reddit"])
def test_shared_datasets_large_output_every_kernel(name):
    """Gathers of more than 16 MB from real matrices (kSparse rows streamed
    out; reddit's kIbp rows), every kernel, one and two threads."""
    x = torch.from_numpy(load_shared(name)).contiguous()
    ct = ibp_gnn.compress(x, progress=False)
    ids = np.random.default_rng(len(name)).integers(0, len(x), (16 << 20) // (x.shape[1] * 4) + 64)
    want = x.view(torch.uint8).numpy()[ids]
    for kernel, threads in itertools.product(KERNELS, (1, 2)):
        got = _gather(ct, ids, kernel, threads).view(torch.uint8).numpy()
        assert np.array_equal(got, want), (kernel, threads)


def _modes(ct, rows):
    _, infos = R.decode_rows_ref(ct._fields, ct._tables, ct._bases, ct._rel, ct._payload, rows)
    return np.array([i.mode for i in infos])


@pytest.mark.parametrize("coded", [False, True])
def test_rows_of_mixed_modes_every_order(coded, monkeypatch):
    """The AVX-512 kernel decodes two neighbouring kIbp (or two 32-bit
    kCoded) rows together, and a row whose neighbour is of another mode, or
    a slice's odd last row, alone. Id orders that put 0-3 rows of other
    modes between rows of one mode, odd and even counts, runs of one mode
    and one row alone gather bit-exactly with every kernel and 1 or 2
    threads. (A version that kept such a row waiting for the next row of its
    mode failed here when the waiting row was never written.)"""
    monkeypatch.setattr(ibp_gnn._encode, "CODED_ROWS", coded)
    x = _embedding(2000, 64, np.float32, seed=5)
    x[1::7] = 0  # kSparse rows (no listed word)
    x[3::11, ::3] = 0  # kSparse rows with listed words, or kIbp with words whole
    ct = ibp_gnn.compress(x, threads=2, progress=False)
    rows = np.arange(len(x))
    modes = _modes(ct, rows)
    pair = R.CODED if coded else R.IBP
    mine, others = rows[modes == pair], rows[modes != pair]
    assert len(mine) > 100 and len(others) > 100, np.bincount(modes)
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(x)), np.concatenate([mine[:101], others[:7]]),
              np.concatenate([others[:3], mine[:1]]), mine[:1], others[:5]]
    mixed = []  # k = 0..3 other rows after each row of the pair's mode
    for j, r in enumerate(mine[:301]):
        mixed += [r] + list(others[rng.integers(0, len(others), j % 4)])
    orders.append(np.array(mixed))
    for ids in orders:
        ids = ids.astype(np.int64)
        want = x.view(np.uint8)[ids]
        for kernel, threads in itertools.product(KERNELS, (1, 2)):
            got = _gather(ct, ids, kernel, threads).view(torch.uint8).numpy()
            assert np.array_equal(got, want), (kernel, threads, len(ids))


def _late_whole_chunks(rows, seed):
    """48-word rows over words of 3 variable bits whose middle 16-word chunk
    is stored whole in every eighth row (16 x 32 = 512 bits, the most a chunk
    takes; rarer than that, the masks stay narrow), after 0-15 whole words in the first chunk (29 more bits each), so
    the whole chunk starts at every bit of a 64-byte line, its last ones
    included, and in the payload's last rows."""
    rng = np.random.default_rng(seed)
    w = np.uint32(0x3F800000) | rng.integers(0, 8, (rows, 48), dtype=np.uint32)
    big = np.arange(rows) % 8 == 0
    w[big, 16:32] = rng.integers(0, 1 << 32, (big.sum(), 16), dtype=np.uint32) | np.uint32(1 << 31)
    for r in range(rows):
        k = rng.integers(0, 16)
        w[r, rng.choice(16, k, replace=False)] = rng.integers(0, 1 << 32, k, dtype=np.uint32) | (1 << 31)
    return np.ascontiguousarray(w.view(np.float32))


def test_dense_rows_whole_chunk_at_a_line_end(monkeypatch):
    """A chunk of 16 words stored whole whose first bit is late in a 64-byte
    line ends up to 1023 bits into the AVX-512 kernel's line-aligned 128-byte
    window: those rows decode bit-exactly with every kernel, the last rows
    of the payload too."""
    monkeypatch.setattr(ibp_gnn._encode, "CODED_ROWS", False)
    x = _late_whole_chunks(8000, seed=7)
    ct = ibp_gnn.compress(x, progress=False)
    rows = np.arange(len(x))
    assert (_modes(ct, rows[::8]) == R.IBP).mean() > 0.9  # the whole chunks stay kIbp rows
    ids = np.concatenate([np.random.default_rng(4).permutation(rows), rows[-40:][::-1]])
    want = x.view(np.uint8)[ids]
    for kernel in KERNELS:
        got = _gather(ct, ids, kernel, 1).view(torch.uint8).numpy()
        assert np.array_equal(got, want), kernel
