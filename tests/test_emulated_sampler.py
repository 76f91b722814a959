"""The CUDA sampler steps (csrc/sampler/cuda/neighbor.cu) run on the CPU by the
emulation layer under ASan/UBSan, driven hop by hop exactly as
ibp_gnn.sampler drives them on a GPU, against the CPU sampler."""
import numpy as np
import pytest
import torch

from ibp_gnn import _C, sampler
from ibp_gnn.sampler import CSCGraph

from emulated import emu  # noqa: F401  (a fixture)


class _EmulatedC:
    """ibp_gnn._C with its *_cuda sampler steps replaced by the emulated ones."""

    def __init__(self, emu):
        self._emu = emu

    def __getattr__(self, name):
        if name.endswith("_cuda") and hasattr(self._emu, name):
            return getattr(self._emu, name)
        return getattr(_C, name)


def random_graph(nodes, edges, seed, ptr_dtype, idx_dtype):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, nodes, (edges,), generator=g)
    # A skewed target distribution: a few hubs, many low-degree nodes, some isolated.
    dst = (torch.rand(edges, generator=g) ** 3 * (nodes - 3)).long()
    csc = CSCGraph.from_edge_index(torch.stack([src, dst]), nodes, index_dtype=idx_dtype)
    return CSCGraph(csc.indptr.to(ptr_dtype), csc.indices.to(idx_dtype))


def sample_emulated(emu, graph, seeds, fanouts, replace, rng, monkeypatch):
    monkeypatch.setattr(sampler, "_C", _EmulatedC(emu))
    emu.reset_counters()
    out = graph._sample_steps(seeds, fanouts, replace, rng, "cuda", 0)
    assert emu.counters()["launches"] >= 2  # the kernels ran
    return out


def same(a, b):
    assert a.num_sampled_nodes == b.num_sampled_nodes
    assert a.num_sampled_edges == b.num_sampled_edges
    for f in ("node", "row", "col", "edge"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


@pytest.mark.parametrize("ptr_dtype,idx_dtype", [(torch.int64, torch.int64),
                                                 (torch.int32, torch.int32),
                                                 (torch.int64, torch.int32),
                                                 (torch.int32, torch.int64)])
@pytest.mark.parametrize("replace", [False, True])
def test_steps_match_cpu_sampler(emu, monkeypatch, ptr_dtype, idx_dtype, replace):
    graph = random_graph(400, 3000, 1, ptr_dtype, idx_dtype)
    seeds = torch.tensor([5, 399, 0, 5, 17, 398, 250, 3], dtype=torch.int64)  # a duplicate
    fanouts = [6, -1, 3] if not replace else [4, 2]
    rng = 12345
    got = sample_emulated(emu, graph, seeds, fanouts, replace, rng, monkeypatch)
    monkeypatch.undo()
    same(got, graph._sample_cpu(seeds, fanouts, replace, rng, 2))
    same(got, graph._sample_steps(seeds, fanouts, replace, rng, "host", 0))


def test_many_seeds_cross_blocks_and_table_growth(emu, monkeypatch):
    # More than one 256-thread block per step, and a relabel table that grows.
    graph = random_graph(3000, 20000, 2, torch.int64, torch.int64)
    seeds = torch.from_numpy(np.random.default_rng(3).choice(3000, 300, replace=False))
    got = sample_emulated(emu, graph, seeds, [5, 3], False, 7, monkeypatch)
    monkeypatch.undo()
    same(got, graph._sample_cpu(seeds, [5, 3], False, 7, 2))


def test_empty_frontier_and_isolated_nodes(emu, monkeypatch):
    indptr = torch.tensor([0, 0, 0, 2, 2], dtype=torch.int64)  # nodes 0, 1, 3 isolated
    indices = torch.tensor([0, 1], dtype=torch.int64)
    graph = CSCGraph(indptr, indices)
    seeds = torch.tensor([3, 1, 2])
    got = sample_emulated(emu, graph, seeds, [2, 2, 2], False, 1, monkeypatch)
    monkeypatch.undo()
    same(got, graph._sample_cpu(seeds, [2, 2, 2], False, 1, 1))
