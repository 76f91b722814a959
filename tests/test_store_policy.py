"""IBPFeatureStore's compress="auto" policy on a CPU store: a dense table that
compresses less than min_ratio stays raw (and the repr says why) unless the
raw tensor is larger than memory_limit."""
import numpy as np
import pytest
import torch

from ibp_gnn.pyg import IBPFeatureStore


def _dense(rows=4000, cols=64, seed=0):
    # 30 random low bits per word: compresses, but by less than 1.1x.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1 << 30, (rows, cols), generator=g, dtype=torch.int32).view(torch.float32)


def _sparse(rows=4000, cols=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, cols, generator=g) < 0.02).float()


def test_dense_table_below_min_ratio_stays_raw_on_cpu():
    s = IBPFeatureStore(min_bytes=0)
    x, bow = _dense(), _sparse()
    s.put_tensor(x, group_name=None, attr_name="x", index=None)
    s.put_tensor(bow, group_name=None, attr_name="bow", index=None)
    assert not s.is_compressed(None, "x")
    ratio = float(s.describe()["x"]["reason"].split("ratio ")[1].split()[0])
    assert 1.0 < ratio < 1.1
    assert s.is_compressed(group_name=None, attr_name="bow", index=None)
    d = s.describe()
    assert "kept raw: ratio" in d["x"]["reason"] and "min_ratio=1.1" in d["x"]["reason"]
    assert "kept raw: ratio" in repr(s)
    got = s.get_tensor(group_name=None, attr_name="x", index=torch.tensor([5, 1, 5]))
    assert torch.equal(got.view(torch.int32), x[[5, 1, 5]].view(torch.int32))


def test_min_ratio_zero_and_always_compress_the_dense_table():
    for kw in (dict(min_ratio=0.0), dict(compress="always")):
        s = IBPFeatureStore(min_bytes=0, **kw)
        s.put_tensor(_dense(), group_name=None, attr_name="x", index=None)
        assert s.is_compressed(None, "x"), kw


def test_memory_limit_forces_compression():
    x = _dense()
    s = IBPFeatureStore(min_bytes=0, memory_limit=x.numel() * 4 - 1)
    s.put_tensor(x, group_name=None, attr_name="x", index=None)
    assert s.is_compressed(None, "x")
    assert "compressed anyway" in s.describe()["x"]["reason"]


@pytest.mark.parametrize("kw,what", [(dict(min_ratio=-1), "min_ratio"),
                                     (dict(min_ratio="1.1"), "min_ratio"),
                                     (dict(memory_limit=-5), "memory_limit"),
                                     (dict(memory_limit=1.5), "memory_limit")])
def test_bad_policy_arguments(kw, what):
    with pytest.raises(ValueError, match=f"IBPFeatureStore: {what}"):
        IBPFeatureStore(**kw)
