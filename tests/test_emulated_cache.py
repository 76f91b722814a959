"""The compressed cache and the staged path through the emulated CUDA gather
kernel (build/emu, `make emu`): hits decode from the cache's subset arrays,
zero-copy misses from the host tier, staged misses from the packed buffer
with its own index; every result bit-identical to x[idx]. The distinct
sectors the emulation counts for a launch equal cache.span_sectors(distinct=True)."""
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
from conftest import assert_bits_equal, special_matrix
from emulated import emu  # noqa: F401  (a fixture)
from ibp_gnn import cache
from test_cache import mixed_matrix


@pytest.mark.parametrize("transfer", ["zero_copy", "staged"])
@pytest.mark.parametrize("kind", ["mixed", "special", "whole"])
def test_cached_gather_through_the_kernel(emu, transfer, kind):
    x = mixed_matrix(300) if kind != "special" else special_matrix(torch.float32, 120, 21)
    ct = ibp_gnn.compress(x)
    n = len(x)
    hot = None if kind == "whole" else np.arange(n - 1, -1, -3)
    budget = (10 ** 9 if hot is None
              else int(cache.device_nbytes(ct, hot, transfer)[len(hot) // 2]))
    cf = cache.CachedFeature(ct, hot, budget=budget, transfer=transfer, kernel=emu)
    assert cf.whole == (kind == "whole")
    g = torch.Generator().manual_seed(1)
    for idx in (torch.randint(0, n, (150,), generator=g), torch.tensor([n - 1, 0, n - 1]),
                torch.tensor([], dtype=torch.int64), torch.tensor([5])):
        assert_bits_equal(cf.gather(idx), x[idx])
    assert 0 < cf.hits < cf.requests or kind == "whole"
    # The kernel read only what the cache placed, within the budget: zero-copy
    # misses the host tier's index, staged misses nothing of the host tier
    # (a whole-tensor cache is the host tier's arrays, placed as they are).
    assert cf.device_nbytes <= budget
    host = {"bases": ct._bases, "rel": ct._rel, "payload": ct._payload}
    placed = sorted(h for h, a in host.items()
                    for r in cf._resident.values() if np.shares_memory(r, a))
    assert placed == (sorted(host) if kind == "whole" else
                      ["bases", "rel"] if transfer == "zero_copy" else [])


def test_distinct_sectors_match_the_emulation(emu):
    x = mixed_matrix(600)
    ct = ibp_gnn.compress(x)
    # The payload at a 32-byte boundary, as pinned memory is: sectors by address.
    words = ct._payload.size
    buf = np.zeros(words + 16, np.uint32)
    skip = (-buf.ctypes.data % 32) // 4
    payload = buf[skip:skip + words]
    payload[:] = ct._payload
    assert payload.ctypes.data % 32 == 0
    g = np.random.default_rng(0)
    for ids in (g.integers(0, 600, 100), np.arange(100, 140), np.array([7, 7, 8]),
                np.array([599])):
        run = np.sort(ids).astype(np.int64)
        out = torch.empty((len(ids), x.shape[1]), dtype=x.dtype)
        emu.reset_counters()
        table = np.ascontiguousarray(ct._decode_table)
        err = emu.gather_cuda(ct._header, table.ctypes.data, ct._bases.ctypes.data,
                              ct._rel.ctypes.data, payload.ctypes.data, run.ctypes.data, True,
                              len(run), 0, out.data_ptr())
        assert err == 0
        assert_bits_equal(out, x[torch.from_numpy(run)])
        assert emu.counters()["distinct_sectors"] == cache.span_sectors(ct, ids, distinct=True)


def _aligned(a: np.ndarray) -> np.ndarray:
    """a copied to a 32-byte boundary, as pinned memory is: sectors by address."""
    buf = np.zeros(a.size + 16, np.uint32)
    skip = (-buf.ctypes.data % 32) // 4
    out = buf[skip:skip + a.size]
    out[:] = a
    return out


def _kernel_gather(emu, ct, payload, ids):
    run = np.ascontiguousarray(ids, np.int64)
    out = torch.empty((len(run), ct.shape[1]), dtype=ct.dtype)
    table = np.ascontiguousarray(ct._decode_table)
    emu.reset_counters()
    err = emu.gather_cuda(ct._header, table.ctypes.data, ct._bases.ctypes.data,
                          ct._rel.ctypes.data, payload.ctypes.data, run.ctypes.data, True,
                          len(run), 0, out.data_ptr())
    assert err == 0
    return out


LAYOUT_FILES = sorted((Path(__file__).resolve().parent / "data").glob("v4_layout_*.ibp"))


@pytest.mark.parametrize("path", LAYOUT_FILES, ids=[p.stem for p in LAYOUT_FILES])
def test_frozen_layout_files_through_the_kernel(emu, path):
    """Rows after zero gaps (layout kSectors) decode bit for bit; the kernel
    reads no sector outside the rows' spans."""
    raw = np.load(path.with_suffix(".raw.npy"))
    ct = ibp_gnn.load(path)
    assert ct._fields["layout"] == 1
    payload = _aligned(ct._payload)
    for ids in (np.arange(len(ct)), np.arange(len(ct) - 1, -1, -7)):
        run = np.sort(ids)
        out = _kernel_gather(emu, ct, payload, run)
        got = out.contiguous().view(torch.uint8).reshape(len(run), -1).numpy()
        assert np.array_equal(got, raw[run])
        assert emu.counters()["distinct_sectors"] == cache.span_sectors(ct, run, distinct=True)


def test_sector_layout_sectors_match_the_emulation(emu):
    """226-bit raw rows: with kSectors each row is read as one sector (the
    kernel's 16-byte loads from its sector boundary stay inside it); packed,
    the rows' spans straddle sectors."""
    g = torch.Generator().manual_seed(11)
    x = torch.randint(-2**31, 2**31 - 1, (100, 7), generator=g, dtype=torch.int64).to(torch.int32)
    emb = torch.randn(300, 128, generator=g) * 0.1
    for data in (x, emb):
        for layout in ("sectors", "packed"):
            ct = ibp_gnn.compress(data, layout=layout, mode="paper" if data is x else "auto")
            payload = _aligned(ct._payload)
            for ids in (np.array([3, 9, 10, 11, 57]), np.arange(0, len(data), 2),
                        np.array([len(data) - 1])):
                out = _kernel_gather(emu, ct, payload, ids)
                assert_bits_equal(out, data[torch.from_numpy(ids)])
                got = emu.counters()["distinct_sectors"]
                assert got == cache.span_sectors(ct, ids, distinct=True)
                if data is x and layout == "sectors":
                    assert got == len(ids)
