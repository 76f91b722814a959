"""The CUDA gather-decoder: compiled wherever nvcc exists; run where a GPU is.

Every piece of logic it runs (bits.h) is also covered on the CPU by
test_compress.py::test_cpu_kernels_agree (portable deposit) and the reference tests.
"""
import shutil

import pytest
import torch

import ibp_gnn
from ibp_gnn import _C

from conftest import DTYPES, assert_bits_equal, special_matrix

needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and _C.cuda_built() and _C.cuda_device_count() > 0),
    reason="needs a CUDA GPU, a CUDA build of torch and the CUDA gather built in")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")
def test_cuda_decoder_was_compiled_when_nvcc_exists():
    assert _C.cuda_built(), "nvcc is on the PATH but the CUDA gather-decoder was not built"


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cols", [1, 5, 33, 64, 100, 1433])
def test_gpu_gather_matches_cpu(dtype, cols):
    x = special_matrix(dtype, 700, cols, seed=cols)
    ct = ibp_gnn.compress(x).pin_memory()
    g = torch.Generator().manual_seed(cols)
    idx = torch.randint(0, 700, (1000,), generator=g)
    got = ct.gather(idx.cuda())
    assert got.device.type == "cuda"
    assert_bits_equal(got.cpu(), x[idx])
    assert_bits_equal(ct.gather(idx.to(torch.int32).cuda()).cpu(), x[idx])
    assert_bits_equal(ct.gather(idx, device="cuda").cpu(), x[idx])


@needs_gpu
def test_gpu_gather_out_stream_and_edge_cases():
    x = special_matrix(torch.float32, 300, 77, seed=1)
    ct = ibp_gnn.compress(x).pin_memory()
    idx = torch.tensor([299, 0, 0, 17, 5], device="cuda")
    out = torch.empty((5, 77), device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        res = ct.gather(idx, out=out)
    s.synchronize()
    assert res.data_ptr() == out.data_ptr()
    assert_bits_equal(out.cpu(), x[idx.cpu()])
    assert ct.gather(torch.empty(0, dtype=torch.long, device="cuda")).shape == (0, 77)
    assert_bits_equal(ct.gather(idx[:1]).cpu(), x[[299]])
    with pytest.raises(IndexError, match="300"):
        ct.gather(torch.tensor([300], device="cuda"))
    # Unchecked ids out of range produce zeros, never a stray read.
    z = ct.gather(torch.tensor([3, 300], device="cuda"), check=False).cpu()
    assert_bits_equal(z[0], x[3])
    assert torch.equal(z[1], torch.zeros(77))


@needs_gpu
def test_gpu_gather_large_batch_real_layouts():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(20000, 300, generator=g) < 0.03).float()
    x[::7] = torch.randn(300)  # dense rows between sparse ones
    ct = ibp_gnn.compress(x).pin_memory()
    idx = torch.randint(0, 20000, (50000,), generator=g)
    assert_bits_equal(ct.gather(idx.cuda()).cpu(), x[idx])


@needs_gpu
@pytest.mark.parametrize("cols", [7, 300])
def test_gpu_sparse_for_and_groups(cols):
    from test_compress import sparse_forms_matrix

    g = torch.Generator().manual_seed(cols)
    cases = [
        sparse_forms_matrix()[:, :cols].contiguous(),  # every sparse form
        (torch.randint(-40, 40, (2000, cols), generator=g) + 1_000_000).int(),  # frames of reference
        torch.cat([torch.rand(1500, cols, generator=g) * 0.01,
                   -torch.rand(1500, cols, generator=g) * 100 - 1000]),  # several groups
        sparse_forms_matrix()[:, :cols].contiguous().half(),  # odd byte widths
    ]
    for x in cases:
        ct = ibp_gnn.compress(x).pin_memory()
        idx = torch.randint(0, x.shape[0], (3000,), generator=g)
        assert_bits_equal(ct.gather(idx.cuda()).cpu(), x[idx])


@needs_gpu
def test_mapped_file_is_pinned_in_place(tmp_path):
    """pin_memory registers a memory-mapped payload where it is: no copy."""
    x = special_matrix(torch.float32, 500, 40, seed=4)
    ibp_gnn.compress(x).save(tmp_path / "x.ibp")
    ct = ibp_gnn.load(tmp_path / "x.ibp", mmap=True).pin_memory()
    assert ct.is_pinned() and ct._registered is not None and ct._pinned is None
    idx = torch.randint(0, 500, (800,))
    assert_bits_equal(ct.gather(idx.cuda()).cpu(), x[idx])
    assert_bits_equal(ct.gather(idx), x[idx])  # the CPU path reads the same memory


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_pin_memory_without_gpu_is_explained():
    ct = ibp_gnn.compress(torch.zeros(4, 4))
    with pytest.raises(RuntimeError, match="torch.cuda.is_available"):
        ct.pin_memory()
    assert not ct.is_pinned()


def test_ibp_sees_the_gpus_torch_sees():
    """Never skipped: where torch sees a GPU, _C must see it too (a CUDA runtime
    in _C newer than the driver would otherwise skip every GPU test)."""
    from ibp_gnn import _cuda

    problem = _cuda.current_problem()
    assert problem is None, problem
    if torch.cuda.is_available() and _C.cuda_built():
        v = _C.cuda_versions()
        assert v["device_count"] == torch.cuda.device_count(), v
        assert v["driver"] > 0 and v["runtime"] > 0, v


@needs_gpu
def test_gpu_teardown_waits_for_queued_gathers(tmp_path):
    """The tensor (its registered payload and device tables) dies while its
    gathers are still queued on a side stream: they finish first."""
    import gc

    x = special_matrix(torch.float32, 50000, 129, seed=5)
    ibp_gnn.compress(x).save(tmp_path / "x.ibp")
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 50000, (200000,), generator=g)
    want = x[idx]
    s = torch.cuda.Stream()
    for mmap in (True, False):
        ct = ibp_gnn.load(tmp_path / "x.ibp", mmap=mmap).pin_memory()
        ct.gather(idx[:10].cuda())  # tables cached from the default stream
        ids = idx.cuda()
        torch.cuda.synchronize()
        with torch.cuda.stream(s):
            torch.cuda._sleep(50_000_000)  # the gathers below queue behind this
            outs = [ct.gather(ids, check=False) for _ in range(3)]  # no sync: all three queue
        del ct
        gc.collect()
        junk = [torch.full((1 << 20,), -1, dtype=torch.int32, device="cuda") for _ in range(8)]
        s.synchronize()
        for out in outs:
            assert_bits_equal(out.cpu(), want)
        del junk


@needs_gpu
def test_prefetcher_without_device_waits_for_gpu_decodes():
    """A loader that decodes on the GPU itself (device=None) and a consumer on
    its own stream: every batch arrives complete."""
    x = special_matrix(torch.float16, 20000, 768, seed=6)
    ct = ibp_gnn.compress(x).pin_memory()
    g = torch.Generator().manual_seed(6)
    ids = [torch.randint(0, 20000, (8192,), generator=g) for _ in range(6)]

    def loader():
        for i in ids:
            d = i.cuda()
            torch.cuda._sleep(20_000_000)  # the decode below ends well after it is queued
            yield ct.gather(d, check=False)

    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        got = [b.clone() for b in ibp_gnn.Prefetcher(_Iter(loader))]
    s.synchronize()
    for b, i in zip(got, ids):
        assert_bits_equal(b.cpu(), x[i])


class _Iter:
    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return self.make()


@needs_gpu
def test_read_only_mapped_graph_is_registered_in_place(tmp_path):
    import numpy as np

    from ibp_gnn.sampler import CSCGraph

    indptr = np.array([0, 2, 3, 5], dtype=np.int64)
    indices = np.array([1, 2, 0, 0, 1], dtype=np.int64)
    np.save(tmp_path / "p.npy", indptr)
    np.save(tmp_path / "i.npy", indices)
    g = CSCGraph(np.load(tmp_path / "p.npy", mmap_mode="r"),
                 np.load(tmp_path / "i.npy", mmap_mode="r"))
    ptrs = (g.indptr.data_ptr(), g.indices.data_ptr())
    g.pin_memory()
    assert tuple(p.tensor.data_ptr() for p in g._pins) == ptrs  # no pinned copy
    sub = g.sample(torch.tensor([0, 1, 2], device="cuda"), [-1], seed=0)
    assert sub.node.is_cuda
