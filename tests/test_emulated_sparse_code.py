"""Coded-form kSparse rows (format version 4) decoded by the emulated CUDA
kernel (csrc/ibp/cuda/gather.cu through csrc/ibp/sparse_code.h), compared bit
for bit with the CPU decoder and with the source tensor."""
import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _encode

from conftest import assert_bits_equal
from emulated import emu, gather  # noqa: F401  (emu is a fixture)
from test_format_v4 import code_rows_in, sparse_rows


def check(emu, ct, x, ids, **kw):
    got = gather(emu, ct, ids, **kw)
    assert_bits_equal(got, ct.gather(torch.as_tensor(ids)))
    assert_bits_equal(got, x[torch.as_tensor(ids).long()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int32,
                                   torch.int64], ids=str)
@pytest.mark.parametrize("cols", [3, 33, 301])
def test_coded_sparse_rows_every_dtype_and_width(emu, dtype, cols):
    x = sparse_rows(dtype, 80, cols, seed=cols)
    ct = ibp_gnn.compress(x)
    if cols >= 301 or (cols >= 33 and dtype.is_floating_point):
        assert code_rows_in(ct) > 0
    ids = np.random.default_rng(cols).integers(0, len(x), 48)
    ids[:5] = ids[5]
    check(emu, ct, x, ids)
    check(emu, ct, x, ids.astype(np.int32), sort=False)


def test_coded_sparse_rows_longer_than_the_buffer(emu):
    """Coded-form rows over 4 KiB compressed are decoded from host memory."""
    x = sparse_rows(torch.float32, 12, 20000, density=0.1, seed=9, specials=False)
    ct = ibp_gnn.compress(x)
    assert code_rows_in(ct) == 12
    ids = np.array([11, 0, 5, 5])
    start, end = ct._row_spans(ids)
    assert np.all((end - start) // 8 > 4096)
    check(emu, ct, x, ids)


def test_coded_sparse_rows_misaligned_out(emu):
    x = sparse_rows(torch.float16, 200, 41, density=0.1, seed=3)
    ct = ibp_gnn.compress(x)
    assert code_rows_in(ct) > 0
    ids = np.arange(199, -1, -7)
    flat = torch.zeros(len(ids) * 41 + 4, dtype=x.dtype)
    out = flat[1:1 + len(ids) * 41].view(len(ids), 41)
    gather(emu, ct, ids, out=out)
    assert_bits_equal(out, x[torch.as_tensor(ids)])
    assert not flat[0].view(torch.int16).any() and not flat[1 + len(ids) * 41:].view(torch.int16).any()


def test_v3_sparse_forms_still_match(emu, monkeypatch):
    x = sparse_rows(torch.float32, 120, 300, seed=4)
    monkeypatch.setattr(_encode, "SPARSE_CODE", False)
    ct = ibp_gnn.compress(x)
    assert code_rows_in(ct) == 0 and ct.stats()["rows_per_mode"].get("sparse", 0) > 0
    check(emu, ct, x, np.arange(0, 120, 7))
