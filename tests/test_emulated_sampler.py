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


def sample_emulated(emu, graph, seeds, fanouts, replace, rng, monkeypatch, **modes):
    monkeypatch.setattr(sampler, "_C", _EmulatedC(emu))
    emu.reset_counters()
    out = graph._sample_steps(seeds, fanouts, replace, rng, "cuda", 0, **modes)
    assert emu.counters()["launches"] >= 2  # the kernels ran
    return out


def same(a, b):
    assert a.num_sampled_nodes == b.num_sampled_nodes
    assert a.num_sampled_edges == b.num_sampled_edges
    for f in ("node", "row", "col", "edge"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert (a.batch is None) == (b.batch is None)
    if a.batch is not None:
        assert torch.equal(a.batch, b.batch)


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


def graph_with_modes(weights, times, seed=4):
    """A skewed graph with edge weights (some zero) and/or times sorted within
    each node's neighbours."""
    base = random_graph(300, 2500, seed, torch.int64, torch.int64)
    g = torch.Generator().manual_seed(seed)
    E, indptr = base.num_edges, base.indptr
    kw = {}
    if weights:
        w = torch.rand(E, generator=g) * 10 ** torch.randint(-2, 3, (E,), generator=g)
        w[torch.rand(E, generator=g) < 0.2] = 0.0
        kw["edge_weight"] = w
    if times:
        t = torch.randint(0, 40, (E,), generator=g)
        dst = torch.repeat_interleave(torch.arange(300), indptr[1:] - indptr[:-1])
        order = torch.from_numpy(np.lexsort((t.numpy(), dst.numpy())))
        kw = {k: v[order] for k, v in kw.items()}
        kw["edge_time"] = t[order]
        return CSCGraph(indptr, base.indices[order], **kw)
    return CSCGraph(indptr, base.indices, **kw)


@pytest.mark.parametrize("weights,times,last", [(True, False, False), (False, True, False),
                                                (False, True, True), (True, True, False)])
@pytest.mark.parametrize("replace", [False, True])
def test_weighted_temporal_disjoint_steps_match_cpu_sampler(emu, monkeypatch, weights, times,
                                                            last, replace):
    graph = graph_with_modes(weights, times)
    seeds = torch.tensor([5, 299, 0, 5, 17, 298, 250, 3, 120, 44], dtype=torch.int64)
    fanouts = [6, -1, 3] if not replace else [4, 2]
    seed_time = torch.tensor([30, 5, 39, 12, 0, 20, 25, 39, 8, 16]) if times else None
    modes = dict(disjoint=True, seed_time=seed_time, last=last)
    got = sample_emulated(emu, graph, seeds, fanouts, replace, 99, monkeypatch, **modes)
    monkeypatch.undo()
    assert got.batch is not None and got.num_sampled_edges[0] > 0
    same(got, graph._sample_cpu(seeds, fanouts, replace, 99, 1, **modes))


def test_weighted_redraw_fallback_in_kernel(emu, monkeypatch):
    # A dominant weight: the kernel's redraw budget runs out and the exact scan runs.
    w = torch.tensor([1e9, 1.0, 0.0, 2.0, 1.0, 0.0, 3.0] * 8)
    indptr = torch.tensor([0, 56] + [56] * 56)
    graph = CSCGraph(indptr, torch.arange(1, 57), edge_weight=w)
    seeds = torch.zeros(40, dtype=torch.int64)
    for f in (3, 40):
        got = sample_emulated(emu, graph, seeds, [f], False, 5, monkeypatch, disjoint=True)
        monkeypatch.undo()
        same(got, graph._sample_cpu(seeds, [f], False, 5, 1, disjoint=True))


def test_disjoint_uniform_steps_match_cpu_sampler(emu, monkeypatch):
    graph = random_graph(400, 3000, 1, torch.int32, torch.int64)
    seeds = torch.tensor([5, 399, 5, 17, 398], dtype=torch.int64)
    got = sample_emulated(emu, graph, seeds, [5, 3], False, 3, monkeypatch, disjoint=True)
    monkeypatch.undo()
    same(got, graph._sample_cpu(seeds, [5, 3], False, 3, 1, disjoint=True))
