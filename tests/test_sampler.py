"""The neighbour sampler: the CPU sampler against a pure-Python reference of the
same algorithm (RNG included), statistics of the picks, the layout PyG and DGL
expect, bad input, and PyG's NeighborLoader end to end.

The GPU sampler runs the per-element code of csrc/sampler/pick.h and relabel.h;
its host twins (`CSCGraph._sample_steps(..., "host", 0)`) drive that code on
the CPU here, and must agree with the CPU sampler bit for bit.
"""
import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.stats import chisquare

from ibp_gnn import _C
from ibp_gnn.sampler import (CSCGraph, NeighborSampler, SampledSubgraph, sample_neighbors,
                             to_dgl_blocks)

FIELDS = ("node", "row", "col", "edge")
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15

needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and _C.cuda_built() and _C.cuda_device_count() > 0),
    reason="needs a CUDA GPU, a CUDA build of torch and the CUDA sampler built in")


# ---- reference ------------------------------------------------------------------------------
def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def ref_picks(seed, hop, local, begin, deg, fanout, replace):
    """CSC positions picked for one node: the algorithm of pick.h in Python."""
    if fanout < 0 or (not replace and fanout >= deg):
        return list(range(begin, begin + deg))
    key = mix64(mix64((seed + (hop + 1) * 0xD6E8FEB86659FD93) & M64) ^ ((local * GOLDEN) & M64))
    draw = lambda t: mix64((key + (t + 1) * GOLDEN) & M64)  # noqa: E731
    if replace:
        return [begin + ((draw(t) * deg) >> 64) for t in range(fanout if deg else 0)]
    out, taken = [], set()  # Floyd's algorithm
    for t in range(fanout):
        j = deg - fanout + t
        p = begin + ((draw(t) * (j + 1)) >> 64)
        p = begin + j if p in taken else p
        taken.add(p)
        out.append(p)
    return out


def reference_sample(indptr, indices, seeds, fanouts, seed=0, replace=False):
    """PyG's layout (csrc/sampler/neighbor.h), one hop at a time, in Python."""
    indptr, indices = np.asarray(indptr).tolist(), np.asarray(indices).tolist()
    node = [int(s) for s in seeds]
    local = {}
    for i, s in enumerate(node):
        local.setdefault(s, i)
    row, col, edge, nsn, nse = [], [], [], [len(node)], []
    begin, end = 0, len(node)
    for hop, f in enumerate(fanouts):
        e0 = len(row)
        for i in range(begin, end):
            v = node[i]
            for p in ref_picks(seed, hop, i, indptr[v], indptr[v + 1] - indptr[v], f, replace):
                u = indices[p]
                if u not in local:
                    local[u] = len(node)
                    node.append(u)
                row.append(local[u])
                col.append(i)
                edge.append(p)
        nse.append(len(row) - e0)
        nsn.append(len(node) - end)
        begin, end = end, len(node)
    t = lambda x: torch.tensor(x, dtype=torch.int64)  # noqa: E731
    return SampledSubgraph(t(node), t(row), t(col), t(edge), nsn, nse)


def assert_same(a: SampledSubgraph, b: SampledSubgraph):
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert list(a.num_sampled_nodes) == list(b.num_sampled_nodes)
    assert list(a.num_sampled_edges) == list(b.num_sampled_edges)


def random_graph(num_nodes, num_edges, seed=0, index_dtype=torch.int64):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    return CSCGraph.from_edge_index(ei, num_nodes, index_dtype=index_dtype), ei


def star(deg=10, self_loop=False):
    """Node 0 with in-neighbours 1..deg (plus itself with a self-loop)."""
    nbrs = list(range(1, deg + 1)) + ([0] if self_loop else [])
    indptr = np.array([0, len(nbrs)] + [len(nbrs)] * deg, dtype=np.int64)
    return CSCGraph(indptr, np.array(nbrs, dtype=np.int64))


def check_invariants(g: CSCGraph, sub: SampledSubgraph, seeds, fanouts, replace=False):
    indptr, indices = g.indptr.long(), g.indices.long()
    node, row, col, edge = sub.node, sub.row, sub.col, sub.edge
    assert torch.equal(node[:len(seeds)], torch.as_tensor(seeds, dtype=torch.int64))
    assert len(node) == sum(sub.num_sampled_nodes) and len(row) == sum(sub.num_sampled_edges)
    assert len(set(node[len(seeds):].tolist())) == len(node) - len(seeds)  # new nodes are new
    assert not set(node[len(seeds):].tolist()) & set(np.asarray(seeds).tolist())
    # Every edge is a real in-edge of the node it was sampled for (subset property).
    assert torch.equal(indices[edge], node[row])
    assert bool((edge >= indptr[node[col]]).all()) and bool((edge < indptr[node[col] + 1]).all())
    # Sizes follow the fan-outs, hop by hop.
    cum_n = np.cumsum([0] + list(sub.num_sampled_nodes))
    e = 0
    for h, f in enumerate(fanouts):
        lo, hi = cum_n[h], cum_n[h + 1]
        cols = col[e:e + sub.num_sampled_edges[h]]
        assert bool(((cols >= lo) & (cols < hi)).all())
        counts = torch.bincount(cols - lo, minlength=hi - lo) if len(cols) else torch.zeros(hi - lo)
        deg = indptr[node[lo:hi] + 1] - indptr[node[lo:hi]]
        want = deg if f < 0 else (torch.where(deg > 0, f, 0) if replace else deg.clamp(max=f))
        assert torch.equal(counts.long(), want.long())
        if not replace:  # no edge twice for the same node
            pairs = (col[e:e + sub.num_sampled_edges[h]] * (g.num_edges + 1)
                     + edge[e:e + sub.num_sampled_edges[h]])
            assert pairs.unique().numel() == pairs.numel()
        e += sub.num_sampled_edges[h]


# ---- correctness ----------------------------------------------------------------------------
@pytest.mark.parametrize("fanouts", [[-1], [-1, -1], [-1, -1, -1]])
def test_full_neighbourhood_equals_bfs_exactly(fanouts):
    g, _ = random_graph(300, 1200, seed=1)
    seeds = torch.tensor([5, 17, 5, 299, 0])
    sub = g.sample(seeds, fanouts, seed=123)
    assert_same(sub, reference_sample(g.indptr, g.indices, seeds, fanouts))
    # Node sets per hop are the BFS layers (a node counted at its first hop).
    indptr, indices = g.indptr.numpy(), g.indices.numpy()
    seen, layer = set(seeds.tolist()), set(seeds.tolist())
    cum = np.cumsum([0] + sub.num_sampled_nodes)
    for h in range(len(fanouts)):
        nxt = {int(u) for v in layer for u in indices[indptr[v]:indptr[v + 1]]} - seen
        assert set(sub.node[cum[h + 1]:cum[h + 2]].tolist()) == nxt
        seen |= nxt
        layer = nxt


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("fanouts", [[3], [10, 5], [2, -1, 4], [0, 3]])
def test_matches_python_reference_with_rng(fanouts, replace):
    g, _ = random_graph(500, 4000, seed=2)
    seeds = torch.randint(0, 500, (64,), generator=torch.Generator().manual_seed(3))
    sub = g.sample(seeds, fanouts, replace=replace, seed=987654321, threads=1)
    assert_same(sub, reference_sample(g.indptr, g.indices, seeds, fanouts, 987654321, replace))
    check_invariants(g, sub, seeds, fanouts, replace)


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("fanouts", [[10, 5], [-1, 3], [25, 10, 2]])
def test_threads_and_gpu_logic_give_the_same_sample(fanouts, replace):
    g, _ = random_graph(3000, 40000, seed=4)
    seeds = torch.randint(0, 3000, (2500,), generator=torch.Generator().manual_seed(5))
    seeds[100:110] = seeds[0]  # duplicates
    ref = g.sample(seeds, fanouts, replace=replace, seed=42, threads=1)
    for threads in (2, 3, 4):
        assert_same(g.sample(seeds, fanouts, replace=replace, seed=42, threads=threads), ref)
        assert_same(g._sample_cpu(seeds, fanouts, replace, 42, threads, exact_threads=True), ref)
    assert_same(g._sample_steps(seeds, fanouts, replace, 42, "host", 0), ref)
    check_invariants(g, ref, seeds, fanouts, replace)


def test_parallel_path_edge_cases():
    """Frontiers smaller than the thread count, and hops that find nothing new."""
    g, _ = random_graph(400, 30000, seed=10)  # dense: 75 in-neighbours per node
    for seeds, fanouts in (([7, 7, 9], [-1, -1, -1]), ([1], [-1, 0, 5])):
        ref = reference_sample(g.indptr, g.indices, seeds, fanouts, 5)
        for threads in (1, 2, 4, 8):
            assert_same(g._sample_cpu(torch.tensor(seeds), fanouts, False, 5, threads, True), ref)
    # All nodes reached after two hops: the third finds no new node.
    sub = g._sample_cpu(torch.tensor([7]), [-1, -1, -1], False, 0, 4, True)
    assert sub.num_sampled_nodes[-1] == 0


def test_seed_determinism():
    g, _ = random_graph(2000, 20000, seed=6)
    seeds = torch.arange(0, 2000, 7)
    a = g.sample(seeds, [10, 5], seed=1)
    assert_same(a, g.sample(seeds, [10, 5], seed=1))
    assert not torch.equal(a.edge, g.sample(seeds, [10, 5], seed=2).edge)
    torch.manual_seed(0)
    b = g.sample(seeds, [10, 5])
    torch.manual_seed(0)
    assert_same(b, g.sample(seeds, [10, 5]))


def test_pick_frequencies_chi_square():
    g = star(10)
    draws = 20000
    sub = g.sample(torch.zeros(draws, dtype=torch.long), [3], seed=2024)
    assert sub.num_sampled_edges == [3 * draws]
    picked = sub.node[sub.row]
    counts = torch.bincount(picked, minlength=11)[1:].numpy()
    assert chisquare(counts).pvalue > 1e-3
    # The 3-subsets themselves are uniform (120 of them), not only the marginals.
    sets = sub.edge.view(draws, 3).sort(1).values.numpy()
    codes = (sets[:, 0] * 100 + sets[:, 1] * 10 + sets[:, 2])
    _, per_subset = np.unique(codes, return_counts=True)
    assert len(per_subset) == 120 and chisquare(per_subset).pvalue > 1e-3
    # With replacement: 3 independent uniform picks each.
    rep = g.sample(torch.zeros(draws, dtype=torch.long), [3], seed=7, replace=True)
    assert chisquare(torch.bincount(rep.edge, minlength=10).numpy()).pvalue > 1e-3


def test_isolated_nodes_self_loops_duplicate_seeds():
    # 0 <- {1, 0 (self-loop)}, 1 <- {}, 2 <- {0}, 3 isolated
    g = CSCGraph(np.array([0, 2, 2, 3, 3]), np.array([1, 0, 0]))
    sub = g.sample([3, 1], [5, 5], seed=0)
    assert sub.node.tolist() == [3, 1] and sub.row.numel() == 0
    assert sub.num_sampled_nodes == [2, 0, 0] and sub.num_sampled_edges == [0, 0]
    sub = g.sample([0, 0, 2], [-1], seed=0)
    assert sub.node.tolist() == [0, 0, 2, 1]
    # Each copy of seed 0 is sampled at its own position; ids map to the first copy.
    assert sub.col.tolist() == [0, 0, 1, 1, 2]
    assert sub.row.tolist() == [3, 0, 3, 0, 0]
    assert torch.equal(g.indices[sub.edge].long(), sub.node[sub.row])


@pytest.mark.parametrize("ptr_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("seed_dtype", [torch.int32, torch.int64])
def test_index_dtypes(ptr_dtype, idx_dtype, seed_dtype):
    """int32 and int64 ids and offsets (int64 offsets: the > 2^31 edges path) agree."""
    g64, _ = random_graph(400, 3000, seed=8)
    g = CSCGraph(g64.indptr.numpy().astype(ptr_dtype), g64.indices.numpy().astype(idx_dtype))
    assert g.indptr.dtype == torch.from_numpy(np.zeros(0, ptr_dtype)).dtype
    seeds = torch.arange(0, 400, 3).to(seed_dtype)
    for threads in (1, 2):
        assert_same(g._sample_cpu(seeds.long(), [4, 3], False, 9, threads, True),
                    g64.sample(seeds.long(), [4, 3], seed=9))
    assert_same(g._sample_steps(seeds.long(), [4, 3], False, 9, "host", 0),
                g64.sample(seeds.long(), [4, 3], seed=9))


def test_empty_seeds_and_empty_graph():
    g, _ = random_graph(50, 200)
    for seeds in (torch.empty(0, dtype=torch.long), [], np.zeros(0, dtype=np.int32)):
        sub = g.sample(seeds, [5, 5], seed=0)
        assert sub.node.numel() == 0 and sub.row.numel() == 0
        assert sub.num_sampled_nodes == [0, 0, 0] and sub.num_sampled_edges == [0, 0]
    none = torch.empty(0, dtype=torch.long)
    assert g._sample_steps(none, [5], False, 0, "host", 0).num_sampled_nodes == [0, 0]
    empty = CSCGraph(np.zeros(4, np.int64), np.zeros(0, np.int64))
    sub = empty.sample([1, 2], [3], seed=0)
    assert sub.node.tolist() == [1, 2] and sub.num_sampled_edges == [0]
    assert g.sample([1], [], seed=0).node.tolist() == [1]


def test_sample_neighbors_function():
    g, _ = random_graph(100, 600)
    sub = sample_neighbors(g.indptr.numpy(), g.indices.numpy(), np.array([1, 2, 3]), [4, 2], seed=5)
    assert_same(sub, g.sample([1, 2, 3], [4, 2], seed=5))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(0, 300), st.integers(0, 40),
       st.lists(st.integers(-1, 6), min_size=1, max_size=3), st.booleans(),
       st.integers(0, 2**64 - 1))
def test_property_random_graphs(num_nodes, num_edges, num_seeds, fanouts, replace, seed):
    g, _ = random_graph(num_nodes, num_edges, seed=num_edges)
    gen = torch.Generator().manual_seed(seed % 1000)
    seeds = torch.randint(0, num_nodes, (num_seeds,), generator=gen)
    sub = g.sample(seeds, fanouts, replace=replace, seed=seed)
    check_invariants(g, sub, seeds, fanouts, replace)
    assert_same(sub, reference_sample(g.indptr, g.indices, seeds, fanouts, seed, replace))
    assert_same(g._sample_steps(seeds, fanouts, replace, seed, "host", 0), sub)
    assert_same(g._sample_cpu(seeds, fanouts, replace, seed, 3, exact_threads=True), sub)


# ---- bad input ------------------------------------------------------------------------------
def test_errors_name_argument_and_value():
    g = CSCGraph(np.array([0, 1, 2, 2]), np.array([1, 2]))
    with pytest.raises(IndexError, match=r"seeds\[2\] = 3 is out of range for a graph of 3 nodes"):
        g.sample([0, 1, 3], [2])
    with pytest.raises(IndexError, match=r"seeds\[1\] = -1 is out of range"):
        g.sample(torch.tensor([0, -1]), [2])
    with pytest.raises(TypeError, match=r"seeds must hold integer node ids, got torch.float32"):
        g.sample(torch.tensor([0.0, 1.0]), [2])
    with pytest.raises(TypeError, match=r"seeds must hold integer node ids, got dtype float64"):
        g.sample(np.array([0.5]), [2])
    with pytest.raises(ValueError, match=r"seeds must be 1-D, got shape \(1, 2\)"):
        g.sample(torch.tensor([[0, 1]]), [2])
    with pytest.raises(ValueError, match=r"num_neighbors\[1\] must be an int >= -1.*got -2"):
        g.sample([0], [2, -2])
    with pytest.raises(ValueError, match=r"num_neighbors\[0\] must be an int >= -1.*got 1.5"):
        g.sample([0], [1.5])
    with pytest.raises(ValueError, match=r"threads must be a positive int below 2\*\*31, got 0"):
        g.sample([0], [1], threads=0)
    with pytest.raises(ValueError, match=r"device must be cpu or cuda, got meta"):
        g.sample([0], [1], device="meta")
    if not torch.cuda.is_available():
        with pytest.raises((RuntimeError, ValueError), match=r"cuda"):
            g.sample([0], [1], device="cuda")
        with pytest.raises(RuntimeError, match=r"pin_memory"):
            g.pin_memory()


def test_graph_errors():
    with pytest.raises(ValueError, match=r"indptr must be non-decreasing, "
                                         r"but indptr\[1\] = 3 > indptr\[2\] = 2"):
        CSCGraph(np.array([0, 3, 2, 4]), np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"indptr\[-1\] = 3 must equal len\(indices\) = 4"):
        CSCGraph(np.array([0, 1, 3]), np.array([0, 1, 1, 0]))
    with pytest.raises(ValueError, match=r"indptr\[0\] must be 0, got 1"):
        CSCGraph(np.array([1, 1, 2]), np.array([0]))
    with pytest.raises(IndexError,
                       match=r"indices\[1\] = 7 is out of range for a graph of 2 nodes"):
        CSCGraph(np.array([0, 1, 2]), np.array([0, 7]))
    with pytest.raises(IndexError, match=r"indices\[0\] = -4 is out of range"):
        CSCGraph(np.array([0, 1, 2]), np.array([-4, 0]))
    with pytest.raises(TypeError, match=r"indices must hold integer ids \(int32 or int64\), "
                                        r"got torch.float32"):
        CSCGraph(torch.tensor([0, 1]), torch.tensor([0.0]))
    with pytest.raises(TypeError, match=r"indptr must be int32 or int64, got torch.int16"):
        CSCGraph(torch.tensor([0, 1], dtype=torch.int16), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"indptr must be 1-D, got shape \(2, 1\)"):
        CSCGraph(torch.zeros(2, 1, dtype=torch.long), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"indptr must have num_nodes \+ 1 >= 1 entries, got 0"):
        CSCGraph(np.zeros(0, np.int64), np.zeros(0, np.int64))
    # Large graphs are checked by several threads; the first offending position wins.
    indptr = np.arange(0, 400001, dtype=np.int64)
    indptr[150000] = 5
    indptr[350000] = 7
    with pytest.raises(ValueError, match=r"indptr\[149999\] = 149999 > indptr\[150000\] = 5"):
        CSCGraph(indptr, np.zeros(400000, dtype=np.int32), threads=2)


# ---- PyG --------------------------------------------------------------------------------------
def small_data(num_nodes=200, num_edges=1500, seed=0):
    from torch_geometric.data import Data

    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    return Data(x=torch.randn(num_nodes, 4, generator=g), edge_index=ei,
                edge_attr=torch.arange(num_edges).float(), y=torch.arange(num_nodes),
                num_nodes=num_nodes)


def check_batch(batch, data, batch_size=None, either_way=False):
    n_id, e_id = batch.n_id, batch.e_id
    assert torch.equal(batch.x, data.x[n_id]) and torch.equal(batch.y, n_id)
    src, dst = n_id[batch.edge_index[0]], n_id[batch.edge_index[1]]
    same = (data.edge_index[0, e_id] == src) & (data.edge_index[1, e_id] == dst)
    if either_way:  # bidirectional subgraphs add each edge reversed, with the same e_id
        same |= (data.edge_index[0, e_id] == dst) & (data.edge_index[1, e_id] == src)
    assert bool(same.all())
    assert torch.equal(batch.edge_attr, data.edge_attr[e_id])
    if batch_size is not None:
        assert batch.batch_size == batch_size


def test_neighbor_loader_end_to_end():
    from torch_geometric.loader import NeighborLoader

    data = small_data()
    sampler = NeighborSampler(data, num_neighbors=[5, 3], seed=0)
    loader = NeighborLoader(data, num_neighbors=[5, 3], batch_size=32, shuffle=True,
                            neighbor_sampler=sampler)
    seen = []
    for batch in loader:
        check_batch(batch, data)
        seen.append(batch.n_id[:batch.batch_size])
        assert batch.num_sampled_nodes[0] == batch.batch_size
        assert sum(batch.num_sampled_edges) == batch.edge_index.size(1)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(data.num_nodes))
    # An int seed makes the sequence of batches reproducible.
    first = [next(iter(NeighborLoader(data, [5, 3], batch_size=32,
                                      neighbor_sampler=NeighborSampler(data, [5, 3], seed=9))))
             for _ in range(2)]
    assert torch.equal(first[0].n_id, first[1].n_id)
    assert torch.equal(first[0].edge_index, first[1].edge_index)


def test_neighbor_loader_full_neighbourhood_and_options():
    from torch_geometric.loader import NeighborLoader, NodeLoader

    data = small_data(seed=1)
    sampler = NeighborSampler(data, [-1, -1])
    batch = next(iter(NodeLoader(data, node_sampler=sampler, input_nodes=torch.tensor([3, 9, 3]),
                                 batch_size=3)))
    check_batch(batch, data, 3)
    assert batch.n_id[:3].tolist() == [3, 9, 3]
    # Exactly the 2-hop in-neighbourhood, like the reference.
    ref = reference_sample(sampler.graph.indptr, sampler.graph.indices, [3, 9, 3], [-1, -1])
    assert torch.equal(batch.n_id, ref.node)
    # Bidirectional subgraphs and backward sampling produce valid edges too.
    for kwargs in ({"subgraph_type": "bidirectional"}, {"sample_direction": "backward"},
                   {"replace": True}):
        s = NeighborSampler(data, [4, 2], seed=3, **kwargs)
        for batch in NeighborLoader(data, [4, 2], batch_size=50, neighbor_sampler=s):
            check_batch(batch, data, either_way="subgraph_type" in kwargs)


def test_feature_store_graph_store_tuple():
    from torch_geometric.loader import NeighborLoader
    from torch_geometric.testing import MyFeatureStore, MyGraphStore

    data = small_data(seed=2)
    fs, gs = MyFeatureStore(), MyGraphStore()
    fs.put_tensor(data.x, group_name=None, attr_name="x", index=None)
    gs.put_edge_index(data.edge_index, edge_type=None, layout="coo",
                      size=(data.num_nodes, data.num_nodes))
    sampler = NeighborSampler((fs, gs), [3, 2], seed=0)
    batch = next(iter(NeighborLoader((fs, gs), [3, 2], batch_size=20, neighbor_sampler=sampler,
                                     input_nodes=torch.arange(20))))
    src, dst = batch.n_id[batch.edge_index[0]], batch.n_id[batch.edge_index[1]]
    edges = set(zip(*data.edge_index.tolist()))
    assert all((s, d) in edges for s, d in zip(src.tolist(), dst.tolist()))
    assert torch.equal(batch.x, data.x[batch.n_id])


def test_neighbor_sampler_unsupported_and_backend_pyg():
    from torch_geometric.data import HeteroData

    data = small_data()
    hetero = HeteroData()
    hetero["a"].x = torch.randn(3, 2)
    hetero["a", "to", "a"].edge_index = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(NotImplementedError, match=r"backward sampling.*heterogeneous.*'pyg'"):
        NeighborSampler(hetero, [2], sample_direction="backward")
    with pytest.raises(NotImplementedError, match=r"induced subgraphs"):
        NeighborSampler(data, [2], subgraph_type="induced")
    with pytest.raises(ValueError, match=r"temporal_strategy must be 'uniform' or 'last'"):
        NeighborSampler(data, [2], temporal_strategy="recent")
    with pytest.raises(ValueError, match=r"backend must be 'ibp' or 'pyg', got 'dgl'"):
        NeighborSampler(data, [2], backend="dgl")
    import torch_geometric.typing as tgt

    pyg = NeighborSampler(data, [2], backend="pyg")
    from torch_geometric.sampler import NodeSamplerInput

    inp = NodeSamplerInput(input_id=None, node=torch.tensor([0, 1]))
    if tgt.WITH_PYG_LIB or tgt.WITH_TORCH_SPARSE:
        assert pyg.sample_from_nodes(inp).node[:2].tolist() == [0, 1]
    else:
        with pytest.raises(ImportError, match="pyg-lib"):
            pyg.sample_from_nodes(inp)


@pytest.mark.skipif(
    not (importlib.util.find_spec("pyg_lib") or importlib.util.find_spec("torch_sparse")),
    reason="neither pyg-lib nor torch-sparse is installed")
def test_same_structure_as_pyg_backend():
    data = small_data(seed=4)
    seeds = torch.tensor([1, 5, 5, 77])
    from torch_geometric.sampler import NodeSamplerInput

    inp = NodeSamplerInput(input_id=None, node=seeds)
    ours = NeighborSampler(data, [-1, -1]).sample_from_nodes(inp)
    theirs = NeighborSampler(data, [-1, -1], backend="pyg").sample_from_nodes(inp)
    assert torch.equal(ours.node[:4], theirs.node[:4])
    assert set(ours.node.tolist()) == set(theirs.node.tolist())
    assert ours.row.numel() == theirs.row.numel()
    ours = NeighborSampler(data, [3, 2], seed=0).sample_from_nodes(inp)
    theirs = NeighborSampler(data, [3, 2], backend="pyg").sample_from_nodes(inp)
    assert int((ours.col < 4).sum()) == int((theirs.col < 4).sum())  # hop-1 sizes: min(3, deg)


# ---- PyG, heterogeneous graphs -----------------------------------------------------------------
CITES, WRITES, REV = ("paper", "cites", "paper"), ("author", "writes", "paper"), \
    ("paper", "rev_writes", "author")


def small_hetero(num_papers=40, num_authors=25, seed=0):
    from torch_geometric.data import HeteroData

    g = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["paper"].x = torch.randn(num_papers, 3, generator=g)
    data["author"].x = torch.randn(num_authors, 3, generator=g)
    data[CITES].edge_index = torch.randint(0, num_papers, (2, 120), generator=g)
    writes = torch.stack([torch.randint(0, num_authors, (70,), generator=g),
                          torch.randint(0, num_papers, (70,), generator=g)])
    data[WRITES].edge_index = writes
    data[REV].edge_index = writes.flip(0)
    return data


def hetero_edge_sets(data):
    return {et: set(zip(*data[et].edge_index.tolist())) for et in data.edge_types}


def check_hetero_output(out, sampler, data):
    """Every sampled edge is a real edge of its type, (CSC position) unique
    per edge type, and lies between nodes of the right types."""
    for et in data.edge_types:
        src, _, dst = et
        row, col, e = out.row[et], out.col[et], out.edge[et]
        assert row.numel() == col.numel() == e.numel() == sum(out.num_sampled_edges[et])
        perm = sampler.perm.get(et) if sampler.perm is not None else None
        eid = e if perm is None else perm[e]
        ei = data[et].edge_index[:, eid]
        assert torch.equal(ei[0], out.node[src][row]) and torch.equal(ei[1], out.node[dst][col])
        assert e.unique().numel() == e.numel()
    for nt in data.node_types:
        n = out.node[nt]
        assert n.unique().numel() == n.numel() and n.numel() == sum(out.num_sampled_nodes[nt])


def bfs_levels(data, seeds, hops):
    """Per node type, the nodes first reached at each hop, taking every
    in-edge of each edge type, as pyg-lib does (frontier fixed per hop)."""
    ins = {et: {} for et in data.edge_types}
    for et in data.edge_types:
        for u, v in zip(*data[et].edge_index.tolist()):
            ins[et].setdefault(v, []).append(u)
    seen = {nt: set() for nt in data.node_types}
    levels = {nt: [set()] for nt in data.node_types}
    seen["paper"] |= set(seeds)
    levels["paper"][0] = set(seeds)
    frontier = {nt: set(levels[nt][0]) for nt in data.node_types}
    for _ in range(hops):
        new = {nt: set() for nt in data.node_types}
        for et in data.edge_types:
            src, _, dst = et
            for v in frontier[dst]:
                for u in ins[et].get(v, []):
                    if u not in seen[src]:
                        seen[src].add(u)
                        new[src].add(u)
        for nt in data.node_types:
            levels[nt].append(new[nt])
        frontier = new
    return levels


def hops_of(out, nt):
    bounds = np.cumsum([0] + list(out.num_sampled_nodes[nt])).tolist()
    n = out.node[nt].tolist()
    return [set(n[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def hetero_sample(sampler, seeds):
    from torch_geometric.sampler import NodeSamplerInput

    return sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=torch.tensor(seeds),
                                                      input_type="paper"))


def test_hetero_full_neighbourhood_equals_bfs():
    data = small_hetero()
    seeds = [0, 7, 13, 21]
    for hops in (1, 2, 3):
        sampler = NeighborSampler(data, [-1] * hops, seed=0)
        out = hetero_sample(sampler, seeds)
        assert out.node["paper"][:4].tolist() == seeds
        levels = bfs_levels(data, seeds, hops)
        for nt in data.node_types:
            assert len(out.num_sampled_nodes[nt]) == hops + 1
            assert hops_of(out, nt) == levels[nt], (hops, nt)
        check_hetero_output(out, sampler, data)
        # All in-edges of every frontier node were taken.
        edges = hetero_edge_sets(data)
        for et in data.edge_types:
            src, _, dst = et
            got = set(zip(out.node[src][out.row[et]].tolist(), out.node[dst][out.col[et]].tolist()))
            reached = set().union(*levels[dst][:hops])
            assert got == {(u, v) for (u, v) in edges[et] if v in reached}


@pytest.mark.parametrize("num_neighbors", [[2, 3], {CITES: [1, 2], WRITES: [3, 0], REV: [2, 2]}])
def test_hetero_finite_fanouts(num_neighbors):
    data = small_hetero(seed=1)
    sampler = NeighborSampler(data, num_neighbors, seed=5)
    out = hetero_sample(sampler, [1, 2, 3, 5, 8, 13, 34])
    check_hetero_output(out, sampler, data)
    fan = num_neighbors if isinstance(num_neighbors, dict) else \
        {et: num_neighbors for et in data.edge_types}
    for et in data.edge_types:
        src, _, dst = et
        indeg = torch.bincount(data[et].edge_index[1], minlength=data[dst].num_nodes)
        bounds = np.cumsum([0] + list(out.num_sampled_nodes[dst])).tolist()
        ebounds = np.cumsum([0] + list(out.num_sampled_edges[et])).tolist()
        for hop, f in enumerate(fan[et]):
            col = out.col[et][ebounds[hop]:ebounds[hop + 1]]
            a, b = bounds[hop], bounds[hop + 1]  # the dst nodes first reached at hop - 1
            assert bool(((col >= a) & (col < b)).all())
            got = torch.bincount(col - a, minlength=b - a)
            want = indeg[out.node[dst][a:b]].clamp(max=f)
            assert torch.equal(got, want), (et, hop)


def test_hetero_determinism():
    data = small_hetero(seed=2)
    seeds = list(range(0, 40, 3))

    def run(seed):
        return hetero_sample(NeighborSampler(data, [2, 2], seed=seed), seeds)

    a, b, c = run(11), run(11), run(12)
    for key in ("node", "row", "col", "edge"):
        da, db = getattr(a, key), getattr(b, key)
        assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)
    assert a.num_sampled_nodes == b.num_sampled_nodes
    assert a.num_sampled_edges == b.num_sampled_edges
    assert any(not torch.equal(a.edge[k], c.edge[k]) for k in a.edge)
    # The same sampler object: the i-th batch is reproducible, batches differ.
    s1, s2 = NeighborSampler(data, [2, 2], seed=3), NeighborSampler(data, [2, 2], seed=3)
    x1, y1 = hetero_sample(s1, seeds), hetero_sample(s1, seeds)
    x2 = hetero_sample(s2, seeds)
    assert all(torch.equal(x1.edge[k], x2.edge[k]) for k in x1.edge)
    assert any(not torch.equal(x1.edge[k], y1.edge[k]) for k in x1.edge)


def check_hetero_batch(batch, data, edges):
    for nt in data.node_types:
        n_id = batch[nt].n_id
        assert bool(((n_id >= 0) & (n_id < data[nt].num_nodes)).all())
        assert n_id.unique().numel() == n_id.numel()
        assert torch.equal(batch[nt].x, data[nt].x[n_id])
    for et in data.edge_types:
        src, _, dst = et
        ei = batch[et].edge_index
        s, d = batch[src].n_id[ei[0]], batch[dst].n_id[ei[1]]
        assert all(e in edges[et] for e in zip(s.tolist(), d.tolist()))
        orig = data[et].edge_index[:, batch[et].e_id]
        assert torch.equal(orig[0], s) and torch.equal(orig[1], d)


@pytest.mark.parametrize("num_neighbors", [[3, 2], {CITES: [2, 1], WRITES: [-1, 2], REV: [1, 1]}])
def test_hetero_neighbor_loader_end_to_end(num_neighbors):
    from torch_geometric.loader import NeighborLoader

    data = small_hetero(seed=3)
    edges = hetero_edge_sets(data)
    idx = torch.arange(0, 40, 2)
    sampler = NeighborSampler(data, num_neighbors, seed=0)
    loader = NeighborLoader(data, num_neighbors=num_neighbors, input_nodes=("paper", idx),
                            batch_size=6, shuffle=True, neighbor_sampler=sampler)
    seen = []
    for batch in loader:
        check_hetero_batch(batch, data, edges)
        bs = batch["paper"].batch_size
        seen.append(batch["paper"].n_id[:bs])
        assert batch["paper"].num_sampled_nodes[0] == bs
        for et in data.edge_types:
            assert sum(batch[et].num_sampled_edges) == batch[et].edge_index.size(1)
    assert torch.equal(torch.cat(seen).sort().values, idx)
    # Bidirectional subgraphs are valid too.
    s = NeighborSampler(data, num_neighbors, seed=1, subgraph_type="bidirectional")
    batch = next(iter(NeighborLoader(data, num_neighbors, input_nodes=("paper", idx),
                                     batch_size=8, neighbor_sampler=s)))
    for nt in data.node_types:
        assert torch.equal(batch[nt].x, data[nt].x[batch[nt].n_id])


def test_hetero_feature_store_graph_store_tuple():
    from torch_geometric.loader import NeighborLoader
    from torch_geometric.testing import MyFeatureStore, MyGraphStore

    data = small_hetero(seed=4)
    fs, gs = MyFeatureStore(), MyGraphStore()
    for nt in data.node_types:
        fs.put_tensor(data[nt].x, group_name=nt, attr_name="x", index=None)
    for et in data.edge_types:
        src, _, dst = et
        gs.put_edge_index(data[et].edge_index, edge_type=et, layout="coo",
                          size=(data[src].num_nodes, data[dst].num_nodes))
    sampler = NeighborSampler((fs, gs), [3, 2], seed=0)
    batch = next(iter(NeighborLoader((fs, gs), [3, 2], batch_size=10, neighbor_sampler=sampler,
                                     input_nodes=("paper", torch.arange(10)))))
    edges = hetero_edge_sets(data)
    assert batch["paper"].n_id[:10].tolist() == list(range(10))
    for nt in data.node_types:
        assert torch.equal(batch[nt].x, data[nt].x[batch[nt].n_id])
    n = 0
    for et in data.edge_types:
        src, _, dst = et
        ei = batch[et].edge_index
        s, d = batch[src].n_id[ei[0]], batch[dst].n_id[ei[1]]
        assert all(e in edges[et] for e in zip(s.tolist(), d.tolist()))
        n += ei.size(1)
    assert n > 0


def test_hetero_errors():
    data = small_hetero()
    with pytest.raises(ValueError, match=r"\('paper', 'likes', 'author'\).*not in the graph"):
        NeighborSampler(data, {CITES: [2], WRITES: [2], REV: [2],
                               ("paper", "likes", "author"): [1]})
    with pytest.raises(ValueError, match=r"no fan-outs for edge type \('author', 'writes'"):
        NeighborSampler(data, {CITES: [2], REV: [2]})
    with pytest.raises(ValueError, match=r"same number of hops"):
        NeighborSampler(data, {CITES: [2], WRITES: [2, 1], REV: [2]})
    with pytest.raises(ValueError, match=r"edge type \('paper', 'cites', 'paper'\).*>= -1"):
        NeighborSampler(data, {CITES: [-2], WRITES: [2], REV: [2]})
    with pytest.raises(NotImplementedError, match=r"CPU only"):
        NeighborSampler(data, [2], device="cuda")
    s = NeighborSampler(data, [2], seed=0)
    from torch_geometric.sampler import NodeSamplerInput

    with pytest.raises(IndexError, match=r"out of range"):
        s.sample_from_nodes(NodeSamplerInput(input_id=None, node=torch.tensor([0, 40]),
                                             input_type="paper"))
    with pytest.raises(ValueError, match=r"node type 'venue'"):
        s.sample_from_nodes(NodeSamplerInput(input_id=None, node=torch.tensor([0]),
                                             input_type="venue"))


# ---- DGL --------------------------------------------------------------------------------------
def test_to_dgl_blocks_layout():
    g, ei = random_graph(300, 2000, seed=5)
    seeds = torch.tensor([4, 8, 15, 16, 23, 42])
    sub = g.sample(seeds, [4, 3, 2], seed=1)
    blocks = to_dgl_blocks(sub, edge_permutation=g.edge_perm)
    assert len(blocks) == 3
    assert torch.equal(blocks[-1].dst_nodes, seeds)
    for b, blk in enumerate(blocks):
        n_dst, n_src = blk.dst_nodes.numel(), blk.src_nodes.numel()
        assert torch.equal(blk.src_nodes[:n_dst], blk.dst_nodes)  # DGL: dst nodes lead src nodes
        assert bool((blk.src < n_src).all()) and bool((blk.dst < n_dst).all())
        # Real edges, messages flowing src -> dst.
        assert torch.equal(ei[0, blk.edge_ids], blk.src_nodes[blk.src])
        assert torch.equal(ei[1, blk.edge_ids], blk.dst_nodes[blk.dst])
        if b:
            assert torch.equal(blocks[b - 1].dst_nodes, blk.src_nodes)


def test_to_dgl_blocks_as_dgl():
    import sys
    import types

    if importlib.util.find_spec("dgl") is None:
        pytest.skip("dgl is not installed")
    sys.modules.setdefault("dgl.graphbolt", types.ModuleType("dgl.graphbolt"))
    try:
        import dgl
    except Exception as e:  # dgl ships libraries for a few torch versions only
        pytest.skip(f"dgl does not import here: {e}")
    g, _ = random_graph(100, 600, seed=6)
    sub = g.sample([1, 2, 3], [3, 2], seed=0)
    blocks = to_dgl_blocks(sub, as_dgl=True)
    assert blocks[-1].num_dst_nodes() == 3
    assert torch.equal(blocks[-1].dstdata[dgl.NID], torch.tensor([1, 2, 3]))


# ---- CUDA ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not _C.cuda_built(), reason="the CUDA sampler was not built (no nvcc)")
def test_cuda_steps_compiled():
    assert hasattr(_C, "neighbor_pick_cuda") and hasattr(_C, "relabel_commit_cuda")


@needs_gpu
@pytest.mark.parametrize("placement", ["pinned", "device"])
@pytest.mark.parametrize("replace", [False, True])
def test_gpu_sample_matches_cpu(placement, replace):
    g, _ = random_graph(5000, 60000, seed=7, index_dtype=torch.int32)
    seeds = torch.randint(0, 5000, (3000,), generator=torch.Generator().manual_seed(1))
    seeds[:5] = seeds[5]
    ref = g.sample(seeds, [10, -1, 3], replace=replace, seed=77)
    gg = g.pin_memory() if placement == "pinned" else g.to("cuda")
    got = gg.sample(seeds.cuda(), [10, -1, 3], replace=replace, seed=77)
    assert got.node.is_cuda
    assert_same(SampledSubgraph(*(getattr(got, f).cpu() for f in FIELDS),
                                got.num_sampled_nodes, got.num_sampled_edges), ref)
    empty = gg.sample(torch.empty(0, dtype=torch.long, device="cuda"), [3], seed=0)
    assert empty.num_sampled_nodes == [0, 0]


@needs_gpu
def test_gpu_neighbor_sampler():
    from torch_geometric.sampler import NodeSamplerInput

    data = small_data(seed=8)
    inp = NodeSamplerInput(input_id=None, node=torch.arange(50))
    cpu = NeighborSampler(data, [5, 5], seed=3).sample_from_nodes(inp)
    for placement in ("pinned", "device"):
        gpu = NeighborSampler(data, [5, 5], seed=3, device="cuda",
                              graph_placement=placement).sample_from_nodes(inp)
        assert torch.equal(gpu.node.cpu(), cpu.node) and torch.equal(gpu.row.cpu(), cpu.row)
