"""Round trip and gather through the public API, bit for bit, on every dtype."""
import numpy as np
import pytest
import torch

import ibp_gnn
from ibp_gnn import _C

from conftest import DTYPES, assert_bits_equal, bits, special_matrix

SHAPES = [(0, 5), (1, 1), (1, 7), (5, 1), (3, 3), (17, 5), (64, 33), (129, 64), (300, 129)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mode", ["auto", "paper"])
def test_round_trip(dtype, shape, mode):
    x = special_matrix(dtype, *shape, seed=shape[0] * 31 + shape[1])
    ct = ibp_gnn.compress(x, mode=mode)
    assert ct.shape == x.shape and ct.dtype == dtype and len(ct) == shape[0]
    assert ct.mode == mode and ct.format_version == ibp_gnn.FORMAT_VERSION
    assert_bits_equal(ct.decompress(), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gather_unsorted_duplicates_int32_ids(dtype):
    x = special_matrix(dtype, 200, 37, seed=3)
    ct = ibp_gnn.compress(x)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 200, (500,), generator=g)  # unsorted, many duplicates
    assert_bits_equal(ct.gather(idx), x[idx])
    assert_bits_equal(ct.gather(idx.to(torch.int32)), x[idx])
    assert_bits_equal(ct.gather(idx.numpy()), x[idx])
    empty = ct.gather(torch.empty(0, dtype=torch.int64))
    assert empty.shape == (0, 37) and empty.dtype == dtype


def test_gather_out_and_threads():
    x = special_matrix(torch.float32, 5000, 100, seed=5)
    ct = ibp_gnn.compress(x, threads=2)
    idx = torch.randint(0, 5000, (4000,), generator=torch.Generator().manual_seed(1))
    out = torch.full((4000, 100), 7.0)
    res = ct.gather(idx, out=out, threads=2)
    assert res.data_ptr() == out.data_ptr()
    assert_bits_equal(out, x[idx])
    assert_bits_equal(ct.gather(idx, threads=1), x[idx])


@pytest.mark.parametrize("kernel", [1, 2, 3, 4], ids=["portable", "bmi2", "avx2", "avx512"])
def test_cpu_kernels_agree(kernel):
    """The portable deposit (the one the CUDA kernel runs), PDEP and the SIMD kernels agree."""
    if kernel not in _C.cpu_kernels():
        pytest.skip(f"this CPU cannot run kernel {kernel}")
    for dtype, cols in [(torch.float32, 64), (torch.float16, 33), (torch.int64, 9),
                        (torch.uint8, 13)]:
        x = special_matrix(dtype, 400, cols, seed=cols)
        ct = ibp_gnn.compress(x)
        idx = torch.randint(0, 400, (700,), generator=torch.Generator().manual_seed(2))
        out = torch.empty((700, cols), dtype=dtype)
        _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload, idx.numpy(),
                  out.view(torch.uint8).reshape(-1).numpy(), 2, kernel)
        assert_bits_equal(out, x[idx])


def test_compressible_data_shrinks_and_sizes_add_up():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3000, 500, generator=g) < 0.02).float()  # sparse binary bag-of-words
    ct = ibp_gnn.compress(x)
    assert ct.ratio > 15, ct.ratio
    paper = ibp_gnn.compress(x, mode="paper")
    assert ct.nbytes <= paper.nbytes
    s = ct.stats()
    assert s["nbytes"] == ct.nbytes == (_C.HEADER_BYTES + s["payload_bytes"] + s["index_bytes"]
                                        + s["table_bytes"])
    assert ct.raw_nbytes == x.numel() * 4
    # Fetching every row once reads the whole payload (minus its padding words).
    every = ct.fetch_nbytes(torch.arange(3000))
    payload_bytes = (ct._fields["payload_bits"] + 7) // 8
    assert payload_bytes <= every <= payload_bytes + 3000
    # Duplicates count each time; an empty batch reads nothing.
    one = ct.fetch_nbytes(torch.tensor([5]))
    assert ct.fetch_nbytes(torch.tensor([5, 5, 5])) == 3 * one
    assert ct.fetch_nbytes(torch.empty(0, dtype=torch.long)) == 0


def test_incompressible_rows_are_stored_raw():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-2**31, 2**31 - 1, (500, 16), generator=g, dtype=torch.int64).to(torch.int32)
    ct = ibp_gnn.compress(x, layout="packed")
    rows = ct.stats()["rows_per_mode"]
    assert rows.get("raw", 0) > 0
    # A raw row costs its words plus the 2-bit mode tag, nothing more (packed
    # rows: no gaps before them).
    assert ct._fields["payload_bits"] <= 500 * (16 * 32 + 2)
    assert_bits_equal(ct.decompress(), x)


def test_sampled_masks_still_lossless():
    """Masks chosen from a sample must not assume anything about other rows."""
    x = torch.zeros(5000, 8, dtype=torch.int32)
    x[4000:] = torch.arange(8, dtype=torch.int32) * 1000 + 12345  # rows the sample rarely sees
    ct = ibp_gnn.compress(x, sample_rows=64)
    assert_bits_equal(ct.decompress(), x)


def test_large_multithreaded_encode_matches_single_thread():
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(60000, 40, generator=g) * 0.01).to(torch.float16)
    a = ibp_gnn.compress(x, threads=1)
    b = ibp_gnn.compress(x, threads=2)
    assert np.array_equal(a._payload, b._payload)
    assert np.array_equal(a._rel, b._rel) and np.array_equal(a._bases, b._bases)
    idx = torch.randint(0, 60000, (10000,), generator=g)
    assert_bits_equal(b.gather(idx, threads=2), x[idx])


def test_numpy_input_and_repr():
    x = np.arange(60, dtype=np.int16).reshape(6, 10)
    ct = ibp_gnn.compress(x)
    assert ct.dtype == torch.int16
    assert torch.equal(ct.decompress(), torch.from_numpy(x))
    r = repr(ct)
    assert "shape=(6, 10)" in r and "int16" in r and "ratio=" in r


def sparse_forms_matrix() -> torch.Tensor:
    """Rows that the encoder stores in each sparse form: positions + inline
    values, positions + dictionary, bitmap + one-entry dictionary, bitmap +
    inline values, and rows equal to the group values (nothing listed)."""
    g = torch.Generator().manual_seed(9)
    x = torch.zeros(400, 300)
    for r in range(0, 400, 5):
        x[r, torch.randperm(300, generator=g)[:6]] = torch.rand(6, generator=g)  # list + inline
    for r in range(1, 400, 5):
        x[r, torch.randperm(300, generator=g)[:12]] = torch.tensor([0.5, 2.0]).repeat(6)  # dict
    for r in range(2, 400, 5):
        k = 120
        x[r, torch.randperm(300, generator=g)[:k]] = 1.0 / k  # bitmap + 1 entry
    for r in range(3, 400, 5):
        x[r, torch.randperm(300, generator=g)[:150]] = torch.rand(150, generator=g)  # bitmap inline
    return x  # rows 4, 9, ...: all zero


@pytest.mark.parametrize("kernel", [1, 2, 3, 4], ids=["portable", "bmi2", "avx2", "avx512"])
def test_sparse_rows_every_form(kernel):
    if kernel not in _C.cpu_kernels():
        pytest.skip(f"this CPU cannot run kernel {kernel}")
    x = sparse_forms_matrix()
    ct = ibp_gnn.compress(x)
    assert ct.stats()["rows_per_mode"].get("sparse", 0) >= 300
    idx = torch.randint(0, 400, (900,), generator=torch.Generator().manual_seed(3))
    out = torch.empty((900, 300))
    _C.gather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload, idx.numpy(),
              out.view(torch.uint8).reshape(-1).numpy(), 2, kernel)
    assert_bits_equal(out, x[idx])
    # Sparse rows are what beats the per-word header of the published algorithm.
    assert ct.ratio > 1.5 * ibp_gnn.compress(x, mode="paper").ratio


def test_paper_mode_is_the_published_algorithm():
    x = sparse_forms_matrix()
    paper = ibp_gnn.compress(x, mode="paper")
    assert paper.num_groups == 1
    assert "sparse" not in paper.stats()["rows_per_mode"]
    tables = paper._tables[0]
    assert not np.any(tables[1] & ~tables[0])  # invariant values inside their masks


def test_frame_of_reference_words():
    """Integers in a narrow range that crosses a power of two: no bit of the
    low 10 is invariant, yet a frame of reference stores them in 10 bits."""
    g = torch.Generator().manual_seed(1)
    x = (torch.randint(0, 1000, (3000, 4), generator=g) + 1_000_000 - 500).int()
    x[:, 3] = torch.randint(-40, 40, (3000,), generator=g).int()  # wraps past zero
    ct = ibp_gnn.compress(x)
    paper = ibp_gnn.compress(x, mode="paper")
    assert_bits_equal(ct.decompress(), x)
    assert ct.nbytes < 0.8 * paper.nbytes, (ct.ratio, paper.ratio)


def test_groups_chosen_when_rows_form_clusters():
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.rand(3000, 16, generator=g) * 0.01,
                   -torch.rand(3000, 16, generator=g) * 100 - 1000])
    x = x[torch.randperm(6000, generator=g)]
    ct = ibp_gnn.compress(x)
    assert ct.num_groups > 1
    assert ct.nbytes < ibp_gnn.compress(x[:, :], mode="paper").nbytes
    assert_bits_equal(ct.gather(torch.arange(5999, -1, -7)), x[torch.arange(5999, -1, -7)])
    # Masks come from a sample: a tensor compressed from a smaller sample is
    # still exact, whatever groups it picked.
    assert_bits_equal(ibp_gnn.compress(x, sample_rows=300).decompress(), x)


def test_zero_columns():
    x = np.zeros((5, 0), np.float32)
    ct = ibp_gnn.compress(x)
    assert ct.shape == (5, 0)
    assert ct.gather(torch.tensor([4, 0])).shape == (2, 0)
    assert ct.decompress().shape == (5, 0)
