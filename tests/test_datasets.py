"""Every real feature matrix in ../shared/datasets round-trips exactly, and the
automatic mask choice never loses to the published algorithm."""
import pytest
import torch

import ibp_gnn
from ibp_gnn.testing import SHARED_DATASETS, load_shared, shared_dir

from conftest import assert_bits_equal

pytestmark = pytest.mark.skipif(shared_dir() is None,
                                reason="../shared/datasets is absent (a fresh clone has none)")

# Host-memory ratio of the published algorithm re-implemented from its paper
# (shared/FACTS.md); mode="paper" must reproduce it.
PUBLISHED = {"cora": 22.2, "citeseer": 24.7, "actor": 26.5, "inj_amazon": 2.41,
             "reddit": 1.27}
# The targets of the issue, per dataset kind (binary or row-normalised bags of
# words vs. dense features).
BAG_OF_WORDS = {"cora", "citeseer", "actor", "inj_amazon", "squirrel", "chameleon"}
DENSE = {"tolokers", "reddit"}


def zstd_per_row_ratio(x: torch.Tensor) -> float:
    zstandard = pytest.importorskip("zstandard")
    c = zstandard.ZstdCompressor(level=3)
    raw = x.view(torch.uint8).reshape(x.shape[0], -1).numpy()
    return raw.size / sum(len(c.compress(r.tobytes())) for r in raw)


@pytest.fixture(scope="module", params=SHARED_DATASETS)
def dataset(request):
    return request.param, torch.from_numpy(load_shared(request.param))


def test_round_trip_and_ratio(dataset):
    name, x = dataset
    auto = ibp_gnn.compress(x)
    paper = ibp_gnn.compress(x, mode="paper")
    assert_bits_equal(auto.decompress(), x)
    assert_bits_equal(paper.decompress(), x)
    idx = torch.randint(0, x.shape[0], (777,), generator=torch.Generator().manual_seed(0))
    assert_bits_equal(auto.gather(idx), x[idx])
    assert auto.nbytes <= paper.nbytes * 1.001, (auto.ratio, paper.ratio)
    if name in PUBLISHED:
        assert paper.ratio == pytest.approx(PUBLISHED[name], rel=0.03)


def test_beats_per_row_zstd_and_the_published_ratio(dataset):
    """The targets of the "beat the published ratio" issue, on bytes to fetch
    every row once (payload only: the index stays on the device)."""
    name, x = dataset
    auto = ibp_gnn.compress(x).stats()["fetch_ratio"]
    paper = ibp_gnn.compress(x, mode="paper").stats()["fetch_ratio"]
    zstd = zstd_per_row_ratio(x)
    assert auto >= zstd and auto >= paper, (auto, zstd, paper)
    if name in BAG_OF_WORDS:
        assert auto >= 1.5 * zstd and auto >= 2 * paper, (auto, zstd, paper)
    if name in DENSE:
        assert auto >= 1.05 * paper, (auto, paper)


def test_save_load_real_data(dataset, tmp_path):
    name, x = dataset
    path = ibp_gnn.compress(x).save(tmp_path / f"{name}.ibp")
    assert_bits_equal(ibp_gnn.load(path, mmap=True).decompress(), x)
