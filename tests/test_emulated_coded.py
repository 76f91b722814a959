"""kCoded rows (format version 3) decoded by the emulated CUDA kernel
(csrc/ibp/cuda/gather.cu through csrc/ibp/coded.h), compared bit for bit with
the CPU decoder and with the source tensor."""
import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _encode

from conftest import assert_bits_equal, special_matrix
from emulated import emu, gather  # noqa: F401  (emu is a fixture)


def check(emu, ct, x, ids, **kw):
    got = gather(emu, ct, ids, **kw)
    assert_bits_equal(got, ct.gather(torch.as_tensor(ids)))
    assert_bits_equal(got, x[torch.as_tensor(ids).long()])


def embeddings(dtype, rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, cols, generator=g) * 0.2).to(dtype)
    sp = special_matrix(dtype, rows, cols, seed=seed)
    keep = torch.rand(rows, cols, generator=g) < 0.97
    return torch.where(keep, x, sp).contiguous()  # escapes: specials and zeros


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cols", [1, 3, 7, 33, 130])
def test_coded_rows_every_float_dtype_and_width(emu, dtype, cols):
    x = embeddings(dtype, 1200, cols, seed=cols)
    ct = ibp_gnn.compress(x)
    if cols >= 33:
        assert ct.stats()["rows_per_mode"].get("coded", 0) > 0
    ids = np.random.default_rng(cols).integers(0, len(x), 64)
    ids[:5] = ids[5]
    check(emu, ct, x, ids)
    check(emu, ct, x, ids.astype(np.int32), sort=False)


def test_coded_rows_longer_than_the_buffer(emu):
    """kCoded rows over 4 KiB compressed are decoded from host memory."""
    x = embeddings(torch.float32, 300, 2000, seed=9)
    ct = ibp_gnn.compress(x)
    assert set(ct.stats()["rows_per_mode"]) == {"coded"}
    ids = np.array([299, 0, 150, 150])
    start, end = ct._row_spans(ids)
    assert np.all((end - start) // 8 > 4096)
    check(emu, ct, x, ids)


def test_coded_rows_with_several_groups_and_misaligned_out(emu):
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(800, 24, generator=g) * 1e-3, torch.randn(800, 24, generator=g) * 50])
    x = x[torch.randperm(1600, generator=g)].half().contiguous()
    ct = ibp_gnn.compress(x)
    assert ct.num_groups > 1 and ct.stats()["rows_per_mode"].get("coded", 0) > 0
    ids = np.arange(1599, -1, -13)
    check(emu, ct, x, ids)
    flat = torch.zeros(len(ids) * 24 + 4, dtype=x.dtype)
    out = flat[1:1 + len(ids) * 24].view(len(ids), 24)
    gather(emu, ct, ids, out=out)
    assert_bits_equal(out, x[torch.as_tensor(ids)])
    assert not flat[0].view(torch.int16).any() and not flat[1 + len(ids) * 24:].view(torch.int16).any()


def test_v2_encodings_still_match(emu, monkeypatch):
    x = embeddings(torch.float32, 600, 40, seed=4)
    monkeypatch.setattr(_encode, "CODED_ROWS", False)
    ct = ibp_gnn.compress(x)
    assert "coded" not in ct.stats()["rows_per_mode"]
    check(emu, ct, x, np.arange(0, 600, 7))
