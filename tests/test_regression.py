"""Files written by every released format version still decode, bit for bit."""
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn

DATA = Path(__file__).resolve().parent / "data"
FILES = sorted(DATA.glob("v*.ibp"))


def test_every_released_version_has_files():
    versions = {int(p.name[1:p.name.index("_")]) for p in FILES}
    assert versions == set(range(1, ibp_gnn.FORMAT_VERSION + 1))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
@pytest.mark.parametrize("mmap", [False, True])
def test_old_file_decodes(path, mmap):
    raw = np.load(path.with_suffix(".raw.npy"))
    ct = ibp_gnn.load(path, mmap=mmap)
    got = ct.decompress()
    assert got.shape[0] == raw.shape[0]
    row_bytes = ct.shape[1] * ct.dtype.itemsize
    got_bytes = got.contiguous().view(torch.uint8).reshape(got.shape[0], row_bytes).numpy()
    if raw.size:
        assert np.array_equal(got_bytes, raw)
    idx = torch.arange(len(ct) - 1, -1, -2)
    if len(idx):
        assert np.array_equal(ct.gather(idx).view(torch.uint8).reshape(len(idx), row_bytes).numpy(),
                              raw[idx.numpy()])
