"""Bad input raises a clear exception that names the argument and the value."""
import numpy as np
import pytest
import torch

import ibp_gnn

from conftest import special_matrix


@pytest.fixture(scope="module")
def ct():
    return ibp_gnn.compress(special_matrix(torch.float32, 50, 6))


@pytest.mark.parametrize("x, exc, words", [
    (torch.zeros(3), ValueError, "2-D"),
    (torch.zeros(2, 3, 4), ValueError, "2-D"),
    (torch.zeros(4, 6)[:, ::2], ValueError, "contiguous"),
    (torch.zeros(4, 6).t(), ValueError, "contiguous"),
    (torch.zeros(4, 6, dtype=torch.float64), TypeError, "float64"),
    (torch.zeros(4, 6, dtype=torch.bool), TypeError, "bool"),
    (torch.zeros(4, 6, dtype=torch.complex64), TypeError, "complex64"),
    (np.zeros((4, 6), np.float64), TypeError, "float64"),
    (np.zeros((4, 6), np.float32, order="F")[:, :5], ValueError, "contiguous"),
    ([[1.0, 2.0]], TypeError, "list"),
    (torch.zeros(4, 6, device="meta"), ValueError, "meta"),
])
def test_compress_rejects(x, exc, words):
    with pytest.raises(exc, match=words):
        ibp_gnn.compress(x)


@pytest.mark.parametrize("kwargs, words", [
    (dict(mode="fast"), "mode"),
    (dict(sample_rows=0), "sample_rows"),
    (dict(threads=0), "threads"),
    (dict(threads=1.5), "threads"),
])
def test_compress_rejects_options(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ibp_gnn.compress(torch.zeros(3, 3), **kwargs)


@pytest.mark.parametrize("idx, exc, words", [
    (torch.tensor([0, 50]), IndexError, "id 50"),
    (torch.tensor([3, -1]), IndexError, "negative id -1"),
    (torch.tensor([2**40]), IndexError, str(2**40)),
    (torch.tensor([1.0, 2.0]), TypeError, "float32"),
    (torch.tensor([1, 2], dtype=torch.int16), TypeError, "int16"),
    (torch.tensor([[1, 2]]), ValueError, "1-D"),
    ([1, 2], TypeError, "list"),
    (np.array([0, 99]), IndexError, "id 99"),
])
def test_gather_rejects_ids(ct, idx, exc, words):
    with pytest.raises(exc, match=words):
        ct.gather(idx)


def test_out_of_range_ids_are_caught_before_any_decoding(ct):
    out = torch.full((2, 6), 3.0)
    with pytest.raises(IndexError):
        ct.gather(torch.tensor([0, 50]), out=out)
    assert torch.equal(out, torch.full((2, 6), 3.0))  # untouched


@pytest.mark.parametrize("out, exc, words", [
    (torch.empty(3, 6), ValueError, r"shape \(3, 6\)"),
    (torch.empty(2, 5), ValueError, r"shape \(2, 5\)"),
    (torch.empty(2, 6, dtype=torch.float16), TypeError, "float16"),
    (torch.empty(6, 2).t(), ValueError, "contiguous"),
    (torch.empty(2, 6, device="meta"), ValueError, "meta"),
    (np.empty((2, 6), np.float16), TypeError, "float16"),
    (np.empty((2, 6), np.float32)[:, ::2], ValueError, r"shape \(2, 3\)"),
    ([[0.0] * 6] * 2, TypeError, "list"),
])
def test_gather_rejects_out(ct, out, exc, words):
    with pytest.raises(exc, match=words):
        ct.gather(torch.tensor([0, 1]), out=out)


def test_gather_rejects_unknown_device(ct):
    with pytest.raises(ValueError, match="meta"):
        ct.gather(torch.tensor([0]), device="meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_request_without_gpu_is_explained(ct):
    with pytest.raises(RuntimeError, match="cuda"):
        ct.gather(torch.tensor([0]), device="cuda")


def test_fetch_nbytes_checks_ids(ct):
    with pytest.raises(IndexError, match="id 77"):
        ct.fetch_nbytes(torch.tensor([77]))
    with pytest.raises(TypeError, match="float"):
        ct.fetch_nbytes(torch.tensor([0.5]))


def test_compress_file_rejects(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        ibp_gnn.compress_file(tmp_path / "nope.npy", tmp_path / "o.ibp")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="not a readable .npy"):
        ibp_gnn.compress_file(bad, tmp_path / "o.ibp")
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((4, 3), np.float32)))
    with pytest.raises(ValueError, match="Fortran"):
        ibp_gnn.compress_file(tmp_path / "f.npy", tmp_path / "o.ibp")
    np.save(tmp_path / "d.npy", np.zeros((4, 3), np.float64))
    with pytest.raises(TypeError, match="float64"):
        ibp_gnn.compress_file(tmp_path / "d.npy", tmp_path / "o.ibp")
    np.save(tmp_path / "v.npy", np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="2-D"):
        ibp_gnn.compress_file(tmp_path / "v.npy", tmp_path / "o.ibp")
    with pytest.raises(ValueError, match="chunk_bytes"):
        ibp_gnn.compress_file(np.zeros((2, 2), np.float32), tmp_path / "o.ibp", chunk_bytes=0)
    with pytest.raises(TypeError, match="src"):
        ibp_gnn.compress_file(torch.zeros(2, 2), tmp_path / "o.ibp")
    assert not (tmp_path / "o.ibp").exists()
