"""The CUDA gather kernel (csrc/ibp/cuda/gather.cu) run on the CPU by the
emulation layer (csrc/testing/cuda_emu.h) under ASan/UBSan, compared bit for
bit with the CPU decoder and with the source tensor."""
import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn.testing import SHARED_DATASETS, load_shared, shared_dir

from conftest import DTYPES, assert_bits_equal, special_matrix
from emulated import emu, gather  # noqa: F401  (emu is a fixture)
from test_compress import sparse_forms_matrix


def check(emu, ct, x, ids, **kw):
    got = gather(emu, ct, ids, **kw)
    want = ct.gather(torch.as_tensor(ids))  # the CPU decoder
    assert_bits_equal(got, want)
    assert_bits_equal(got, x[torch.as_tensor(ids).long()])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cols", [1, 3, 5, 33, 129])
def test_every_dtype_and_width(emu, dtype, cols):
    x = special_matrix(dtype, 150, cols, seed=cols)
    ct = ibp_gnn.compress(x)
    g = np.random.default_rng(cols)
    ids = g.integers(0, 150, 48)
    ids[:6] = ids[6]  # duplicates
    check(emu, ct, x, ids)
    check(emu, ct, x, ids.astype(np.int32), sort=False)


def test_paper_mode_and_sparse_forms(emu):
    x = sparse_forms_matrix()
    for mode in ("auto", "paper"):
        ct = ibp_gnn.compress(x, mode=mode)
        if mode == "auto":
            assert ct.stats()["rows_per_mode"].get("sparse", 0) >= 300
        check(emu, ct, x, np.arange(0, 400, 3))  # every form: row r % 5 picks it


def test_multi_group_and_frames(emu):
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.rand(300, 40, generator=g) * 0.01,
                   -torch.rand(300, 40, generator=g) * 100 - 1000])
    x = x[torch.randperm(600, generator=g)].contiguous()
    ct = ibp_gnn.compress(x)
    assert ct.num_groups > 1
    check(emu, ct, x, np.arange(599, -1, -9))
    f = (torch.randint(0, 1000, (500, 7), generator=g) + 1_000_000 - 500).int()
    f[:, 3] = torch.randint(-40, 40, (500,), generator=g).int()
    check(emu, ibp_gnn.compress(f), f, np.arange(0, 500, 7))


def test_raw_rows_with_33_word_spans(emu):
    # Random bits: every row stored raw, so each 32-word chunk spans 33 words.
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-2**31, 2**31 - 1, (120, 70), generator=g, dtype=torch.int64).int()
    ct = ibp_gnn.compress(x)
    assert ct.stats()["rows_per_mode"].get("raw", 0) >= 100
    check(emu, ct, x, np.arange(119, -1, -2))


def test_rows_longer_than_the_buffer(emu):
    """Rows of more than 4 KiB compressed (raw, kIbp and kSparse) are decoded
    straight from host memory."""
    g = torch.Generator().manual_seed(8)
    raw = torch.randint(-2**31, 2**31 - 1, (64, 1100), generator=g, dtype=torch.int64).int()
    dense = torch.randn(64, 2000, generator=g)
    sparse = torch.zeros(64, 40000)
    for r in range(64):
        sparse[r, torch.randperm(40000, generator=g)[:1100]] = torch.rand(1100, generator=g)
    for x, mode in ((raw, "raw"), (dense, "ibp"), (sparse, "sparse")):
        ct = ibp_gnn.compress(x)
        assert set(ct.stats()["rows_per_mode"]) == {mode}
        ids = np.array([63, 0, 31, 31])
        start, end = ct._row_spans(ids)
        assert np.all((end - start) // 8 > 4096)
        check(emu, ct, x, ids)


def test_zero_columns_one_row_and_no_ids(emu):
    x = torch.zeros((5, 0))
    ct = ibp_gnn.compress(x)
    assert gather(emu, ct, np.array([4, 0, 4])).shape == (3, 0)
    one = special_matrix(torch.float16, 1, 77, seed=1)
    check(emu, ibp_gnn.compress(one), one, np.array([0]))
    check(emu, ibp_gnn.compress(one), one, np.array([0, 0, 0]))
    assert gather(emu, ibp_gnn.compress(one), np.zeros(0, np.int64)).shape == (0, 77)


def test_unchecked_ids_out_of_range_give_zeros(emu):
    x = special_matrix(torch.float32, 60, 21, seed=4)
    ct = ibp_gnn.compress(x)
    ids = np.array([3, 60, 59, 2**40, 0], np.int64)
    got = gather(emu, ct, ids)
    assert_bits_equal(got[[0, 2, 4]], x[[3, 59, 0]])
    assert not got[[1, 3]].view(torch.int32).any()
    got32 = gather(emu, ct, np.array([61, 1, -1], np.int32), sort=False)
    assert_bits_equal(got32[1], x[1])
    assert not got32[[0, 2]].view(torch.int32).any()


@pytest.mark.parametrize("dtype,cols", [(torch.float16, 64), (torch.uint8, 40),
                                        (torch.int16, 3), (torch.uint8, 5)])
def test_misaligned_out(emu, dtype, cols):
    """out= a contiguous view at an offset that is not a multiple of 4 bytes:
    the kernel must not make misaligned 4-byte stores (UBSan aborts on one)."""
    x = special_matrix(dtype, 80, cols, seed=cols)
    ct = ibp_gnn.compress(x)
    ids = np.arange(79, -1, -3)
    shift = 1  # one element: 1 or 2 bytes off alignment
    flat = torch.zeros(len(ids) * cols + 4, dtype=dtype)
    out = flat[shift:shift + len(ids) * cols].view(len(ids), cols)
    assert out.data_ptr() % 4 != 0
    gather(emu, ct, ids, out=out)
    assert_bits_equal(out, x[torch.as_tensor(ids)])
    assert not flat[:shift].view(torch.uint8).any()
    assert not flat[shift + len(ids) * cols:].view(torch.uint8).any()


@pytest.mark.skipif(shared_dir() is None, reason="../shared/datasets is not present")
@pytest.mark.parametrize("name", SHARED_DATASETS)
def test_shared_datasets(emu, name):
    x = torch.from_numpy(load_shared(name))
    x = x[:600].contiguous()  # the first rows (compressing all of them is the slow part)
    ct = ibp_gnn.compress(x)
    g = np.random.default_rng(len(name))
    ids = g.integers(0, len(x), 40)
    ids[-4:] = ids[0]
    check(emu, ct, x, ids)
    # Traffic targets (the emulation's counts are deterministic): one round
    # trip per row of up to 4 KiB compressed, at most ceil(span / 32) + 1
    # sectors per row, never more than the raw rows.
    start, end = ct._row_spans(ids)
    span = (end + 7) // 8 - start // 8
    assert span.max() <= 4096
    row_bytes = x.shape[1] * x.element_size()
    raw = ((ids + 1) * row_bytes - 1) // 32 - ids * row_bytes // 32 + 1
    _, c = gather(emu, ct, ids, counters=True)
    assert c["round_trips"] <= len(ids)
    assert c["sector_requests"] <= raw.sum()
    for k in range(4):
        _, c = gather(emu, ct, ids[k:k + 1], counters=True)
        assert c["round_trips"] == 1
        assert c["sector_requests"] <= -(-span[k] // 32) + 1
        assert c["sector_requests"] <= raw[k] + 1  # +1: a compressed span starts anywhere
