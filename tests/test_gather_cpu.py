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
    monkeypatch.setattr(ibp_gnn._tensor, "CODED_ROWS", False)
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
import ctypes, mmap, sys
import numpy as np, torch, ibp_gnn
from ibp_gnn import _C
cols, dtype = int(sys.argv[1]), getattr(np, sys.argv[2])
rng = np.random.default_rng(cols)
x = (rng.standard_normal((300, cols)) * 0.1).astype(dtype)
ct = ibp_gnn.compress(x, progress=False)
payload = ct._payload
page = mmap.PAGESIZE
size = -(-payload.nbytes // page) * page
buf = mmap.mmap(-1, size + page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(addr + size, page, 0) == 0  # the page after the payload faults
tight = np.frombuffer(buf, np.uint32, payload.size, size - payload.nbytes)
tight[:] = payload
ids = np.arange(300)[::-1].copy()
want = x.view(np.uint8).reshape(300, -1)[ids]
for k in _C.cpu_kernels():
    out = np.empty_like(want)
    _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, tight, ids, out.reshape(-1), 1, k)
    assert np.array_equal(out, want), k
print("ok", _C.cpu_kernels())
"""


@pytest.mark.parametrize("cols,dtype", [(3, "float32"), (64, "float32"), (33, "float16")])
def test_kernels_read_nothing_past_the_payload(cols, dtype):
    """The last rows decode with every kernel when the page after the payload
    is unreadable (the wide SIMD loads stay inside the payload and its padding)."""
    import subprocess
    r = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT, str(cols), dtype],
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
