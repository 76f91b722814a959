"""Disjoint, weighted and temporal sampling and the sampled edges' ids: the CPU
sampler and the GPU algorithm's host twins against a pure-Python reference
of the same algorithm (RNG and floating-point steps included), distributions
of the weighted picks, set semantics against brute force, and PyG's
NeighborLoader end to end (batch.batch, batch.e_id, time_attr, weight_attr).
"""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from ibp_gnn.sampler import CSCGraph, NeighborSampler

from test_sampler import GOLDEN, M64, mix64, ref_picks

FIELDS = ("node", "row", "col", "edge")
UNIT = 1.0 / 9007199254740992.0


# ---- reference ------------------------------------------------------------------------------
def key_of(seed, hop, local):
    return mix64(mix64((seed + (hop + 1) * 0xD6E8FEB86659FD93) & M64) ^ ((local * GOLDEN) & M64))


def draw(key, t):
    return mix64((key + (t + 1) * GOLDEN) & M64)


def ref_window(etime, begin, deg, fanout, bound, last):
    end = begin + deg
    if etime is not None:
        end = begin
        while end < begin + deg and etime[end] <= bound:
            end += 1
        if last and fanout >= 0 and end - begin > fanout:
            begin = end - fanout
    return begin, end - begin


def ref_weighted(wcum, seg, a, n, fanout, replace, key):
    """pick_weighted of csrc/sampler/pick.h, step by step in Python floats."""
    k = n if fanout < 0 else (fanout if n else 0) if replace else min(fanout, n)
    if k == 0:
        return []
    lo, hi = (wcum[a - 1] if a > seg else 0.0), wcum[a + n - 1]
    if fanout < 0 or (not replace and k == n) or not hi > lo:
        return ref_picks_at(a, n, fanout, replace, key)
    w = lambda e: wcum[e] - wcum[e - 1] if e > seg else wcum[e]  # noqa: E731

    def one(r):
        u = lo + ((r >> 11) * UNIT) * (hi - lo)
        for e in range(a, a + n):
            if wcum[e] > u:
                return e
        e = a + n - 1
        while e > a and not wcum[e] > wcum[e - 1]:
            e -= 1
        return e

    if replace:
        return [one(draw(key, t)) for t in range(k)]
    out, t = [], 0
    while len(out) < k and t < 4 * k + 16:
        p = one(draw(key, t))
        t += 1
        if p not in out:
            out.append(p)
    while len(out) < k:
        rest = 0.0
        for e in range(a, a + n):
            if e not in out:
                rest += w(e)
        r = draw(key, t)
        t += 1
        if rest > 0:
            u, acc, p = ((r >> 11) * UNIT) * rest, 0.0, None
            for e in range(a, a + n):
                if not w(e) > 0 or e in out:
                    continue
                acc += w(e)
                p = e
                if acc > u:
                    break
        else:
            left = [e for e in range(a, a + n) if e not in out]
            p = left[(r * len(left)) >> 64]
        out.append(p)
    return out


def ref_picks_at(a, n, fanout, replace, key):
    """ref_picks of test_sampler.py with a precomputed key."""
    if fanout < 0 or (not replace and fanout >= n):
        return list(range(a, a + n))
    if replace:
        return [a + ((draw(key, t) * n) >> 64) for t in range(fanout if n else 0)]
    out, taken = [], set()
    for t in range(fanout):
        j = n - fanout + t
        p = a + ((draw(key, t) * (j + 1)) >> 64)
        p = a + j if p in taken else p
        taken.add(p)
        out.append(p)
    return out


def reference(g: CSCGraph, seeds, fanouts, seed, replace=False, disjoint=False, seed_time=None,
              last=False):
    indptr, indices = g.indptr.tolist(), g.indices.tolist()
    wcum = g.weight_cumsum.tolist() if g.is_weighted else None
    etime = g.edge_time.tolist() if g.is_temporal else None
    if etime is not None:
        disjoint = True
        if seed_time is None:
            seed_time = [g.node_time[s].item() for s in seeds]
    node = [int(s) for s in seeds]
    batch = list(range(len(node)))
    local = {}
    for i, s in enumerate(node):
        local.setdefault((i, s) if disjoint else s, i)
    row, col, edge, nsn, nse = [], [], [], [len(node)], []
    begin, end = 0, len(node)
    for hop, f in enumerate(fanouts):
        e0 = len(row)
        for i in range(begin, end):
            v = node[i]
            b0, deg = indptr[v], indptr[v + 1] - indptr[v]
            bound = seed_time[batch[i]] if etime is not None else 0
            a, n = ref_window(etime, b0, deg, f, bound, last)
            key = key_of(seed, hop, i)
            picks = (ref_weighted(wcum, b0, a, n, f, replace, key) if wcum is not None
                     else ref_picks_at(a, n, f, replace, key))
            for p in picks:
                u = indices[p]
                k = (batch[i], u) if disjoint else u
                if k not in local:
                    local[k] = len(node)
                    node.append(u)
                    batch.append(batch[i])
                row.append(local[k])
                col.append(i)
                edge.append(p)
        nse.append(len(row) - e0)
        nsn.append(len(node) - end)
        begin, end = end, len(node)
    t = lambda x: torch.tensor(x, dtype=torch.int64)  # noqa: E731
    return dict(node=t(node), row=t(row), col=t(col), edge=t(edge), nsn=nsn, nse=nse,
                batch=t(batch) if disjoint else None)


def assert_matches(sub, ref):
    for f in FIELDS:
        assert torch.equal(getattr(sub, f), ref[f]), f
    assert list(sub.num_sampled_nodes) == ref["nsn"]
    assert list(sub.num_sampled_edges) == ref["nse"]
    if ref["batch"] is None:
        assert sub.batch is None
    else:
        assert torch.equal(sub.batch, ref["batch"])


def random_csc(num_nodes, num_edges, seed, weights=None, times=None):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=g)
    dst = (torch.rand(num_edges, generator=g) ** 2 * num_nodes).long().clamp_(max=num_nodes - 1)
    base = CSCGraph.from_edge_index(torch.stack([src, dst]), num_nodes)
    perm = base.edge_perm
    kw = {}
    if weights == "mixed":  # some zeros, a wide range
        w = torch.rand(num_edges, generator=g) * 10 ** torch.randint(-3, 3, (num_edges,),
                                                                       generator=g)
        w[torch.rand(num_edges, generator=g) < 0.2] = 0.0
        kw["edge_weight"] = w[perm]
    if times == "edge":
        et = torch.randint(0, 50, (num_edges,), generator=g)[perm]
        # sort each node's neighbours by time (what PyG's to_csc does)
        dst_sorted = dst[perm]
        order = np.lexsort((et.numpy(), dst_sorted.numpy()))
        indices = base.indices[order]
        kw = {k: v[order] for k, v in kw.items()}
        kw["edge_time"] = et[order]
        return CSCGraph(base.indptr, indices, **kw), perm[order]
    if times == "node":
        nt = torch.randint(0, 50, (num_nodes,), generator=g)
        dst_sorted = dst[perm]
        order = np.lexsort((nt[base.indices].numpy(), dst_sorted.numpy()))
        kw = {k: v[order] for k, v in kw.items()}
        kw["node_time"] = nt
        return CSCGraph(base.indptr, base.indices[order], **kw), perm[order]
    return CSCGraph(base.indptr, base.indices, **kw), perm


CASES = [  # (weights, times, last)
    (None, None, False),
    ("mixed", None, False),
    (None, "node", False),
    (None, "node", True),
    (None, "edge", False),
    ("mixed", "edge", True),
    ("mixed", "node", False),
]


# ---- exact agreement with the reference ------------------------------------------------------
@pytest.mark.parametrize("weights,times,last", CASES)
@pytest.mark.parametrize("replace", [False, True])
def test_modes_match_reference_cpu_and_steps(weights, times, last, replace):
    g, _ = random_csc(60, 700, 1, weights, times)
    seeds = [3, 59, 0, 3, 17, 42]  # a duplicate: its own subgraph when disjoint
    fanouts = [4, -1, 2] if not replace else [3, 2]
    seed_time = [40, 10, 49, 5, 25, 0] if times == "edge" else None
    for disjoint in ([True] if times else [False, True]):
        ref = reference(g, seeds, fanouts, 77, replace, disjoint, seed_time, last)
        kw = dict(disjoint=disjoint, seed_time=seed_time,
                  temporal_strategy="last" if last else "uniform")
        sub = g.sample(seeds, fanouts, replace=replace, seed=77, device="cpu", **kw)
        assert_matches(sub, ref)
        st = None if seed_time is None else torch.tensor(seed_time)
        if st is None and times == "node":
            st = g.node_time[torch.tensor(seeds)]
        steps = g._sample_steps(torch.tensor(seeds), fanouts, replace, 77, "host", 0,
                                disjoint=disjoint or times is not None, seed_time=st, last=last)
        assert_matches(steps, ref)


def test_weighted_redraw_fallback_matches_reference():
    # One heavy edge: redraws of it exhaust the budget and the exact scan takes over.
    w = torch.tensor([1e9, 1.0, 0.0, 2.0, 1.0, 0.0, 3.0])
    indptr = torch.tensor([0, 7] + [7] * 7)
    g = CSCGraph(indptr, torch.arange(1, 8), edge_weight=w)
    for seed in range(30):
        for f in (3, 5, 6):
            assert_matches(g.sample([0], [f], seed=seed), reference(g, [0], [f], seed))
    sub = g.sample([0], [6], seed=3)  # 5 positive weights: the 6th pick is a zero-weight edge
    assert set(sub.edge[:5].tolist()) == {0, 1, 3, 4, 6}


# ---- distributions -----------------------------------------------------------------------------
def star_weighted(w):
    n = len(w)
    indptr = torch.tensor([0, n] + [n] * n)
    return CSCGraph(indptr, torch.arange(1, n + 1), edge_weight=torch.tensor(w))


def test_weighted_single_pick_is_proportional():
    w = [1.0, 2.0, 3.0, 4.0, 0.0, 10.0]
    g = star_weighted(w)
    trials = 4000
    subs = g.sample([0] * trials, [1], seed=5, disjoint=True)
    counts = np.bincount(subs.edge.numpy(), minlength=len(w))
    assert counts[4] == 0  # zero weight: never drawn while positive weight remains
    pos = [i for i in range(len(w)) if w[i] > 0]
    expected = np.array([w[i] for i in pos]) / sum(w) * trials
    assert chisquare(counts[pos], expected).pvalue > 1e-3


def test_weighted_with_replacement_counts_are_proportional():
    w = [0.5, 0.0, 2.5, 1.0, 6.0]
    g = star_weighted(w)
    sub = g.sample([0] * 500, [8], replace=True, seed=11, disjoint=True)
    counts = np.bincount(sub.edge.numpy(), minlength=len(w))
    assert counts[1] == 0 and counts.sum() == 4000
    pos = [0, 2, 3, 4]
    expected = np.array([w[i] for i in pos]) / sum(w) * 4000
    assert chisquare(counts[pos], expected).pvalue > 1e-3


def test_weighted_without_replacement_is_successive_sampling():
    # Ordered pairs (first pick, second pick) against P(i) * w_j / (W - w_i).
    w = [1.0, 3.0, 0.5, 5.0]
    W = sum(w)
    g = star_weighted(w)
    trials = 6000
    sub = g.sample([0] * trials, [2], seed=23, disjoint=True)
    e = sub.edge.view(trials, 2).numpy()
    assert (e[:, 0] != e[:, 1]).all()
    cells = [(i, j) for i in range(4) for j in range(4) if i != j]
    observed = np.array([np.sum((e[:, 0] == i) & (e[:, 1] == j)) for i, j in cells])
    expected = np.array([w[i] / W * w[j] / (W - w[i]) for i, j in cells]) * trials
    assert chisquare(observed, expected).pvalue > 1e-3


def test_zero_weight_window_is_uniform_and_weights_checked():
    g = star_weighted([0.0, 0.0, 0.0, 0.0])
    sub = g.sample([0] * 2000, [1], seed=2, disjoint=True)
    counts = np.bincount(sub.edge.numpy(), minlength=4)
    assert chisquare(counts).pvalue > 1e-3
    indptr, indices = torch.tensor([0, 2, 2, 2]), torch.tensor([1, 2])
    for bad in ([1.0, -1.0], [float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(ValueError, match=r"edge_weight must be finite and >= 0.*edge_weight\["):
            CSCGraph(indptr, indices, edge_weight=torch.tensor(bad))
    with pytest.raises(ValueError, match="edge_weight must be 1-D with 2 values"):
        CSCGraph(indptr, indices, edge_weight=torch.ones(3))


# ---- set semantics ----------------------------------------------------------------------------
def in_edges(g, v):
    return range(int(g.indptr[v]), int(g.indptr[v + 1]))


def test_disjoint_full_neighbourhood_is_each_seeds_own_bfs():
    g, _ = random_csc(50, 300, 3)
    seeds = [4, 4, 9, 0, 31]
    sub = g.sample(seeds, [-1, -1], seed=0, disjoint=True)
    assert torch.equal(sub.batch[:len(seeds)], torch.arange(len(seeds)))
    # Every edge stays within one seed's subgraph.
    assert torch.equal(sub.batch[sub.row], sub.batch[sub.col])
    for i, s in enumerate(seeds):
        level, seen, edges = [s], {s}, set()
        for _ in range(2):
            nxt = []
            for v in level:
                for e in in_edges(g, v):
                    u = int(g.indices[e])
                    edges.add((u, v, e))
                    if u not in seen:
                        seen.add(u)
                        nxt.append(u)
            level = nxt
        mine = sub.batch == i
        assert set(sub.node[mine].tolist()) == seen
        assert int(mine.sum()) == len(seen)  # one local node per (seed, global id)
        got = {(int(sub.node[r]), int(sub.node[c]), int(e))
               for r, c, e in zip(sub.row.tolist(), sub.col.tolist(), sub.edge.tolist())
               if int(sub.batch[c]) == i}
        assert got == edges


@pytest.mark.parametrize("times", ["node", "edge"])
@pytest.mark.parametrize("last", [False, True])
def test_temporal_picks_only_earlier_or_equal_neighbours(times, last):
    g, _ = random_csc(80, 1200, 4, times=times)
    seeds = list(range(0, 80, 7))
    seed_time = torch.randint(0, 50, (len(seeds),), generator=torch.Generator().manual_seed(1))
    st = seed_time if times == "edge" else g.node_time[torch.tensor(seeds)]
    fanout = 3
    sub = g.sample(seeds, [fanout, -1], seed=9, seed_time=seed_time if times == "edge" else None,
                   temporal_strategy="last" if last else "uniform")
    assert sub.batch is not None  # temporal sampling is disjoint
    et = g.edge_time
    bound = st[sub.batch[sub.col]]
    assert bool((et[sub.edge] <= bound).all())
    # Hop 1: exactly min(fanout, valid) picks per seed; with "last", the latest valid ones.
    e1 = sub.num_sampled_edges[0]
    for i, s in enumerate(seeds):
        valid = [e for e in in_edges(g, s) if int(et[e]) <= int(st[i])]
        picked = sub.edge[:e1][sub.col[:e1] == i].tolist()
        assert len(picked) == min(fanout, len(valid)) and set(picked) <= set(valid)
        if last:
            assert sorted(picked) == valid[len(valid) - len(picked):]
    # Hop 2 takes every valid neighbour (fan-out -1).
    for j in range(len(seeds), len(seeds) + sub.num_sampled_nodes[1]):
        v, b = int(sub.node[j]), int(sub.batch[j])
        valid = {e for e in in_edges(g, v) if int(et[e]) <= int(st[b])}
        assert set(sub.edge[e1:][sub.col[e1:] == j].tolist()) == valid


def test_temporal_graph_checks():
    indptr, indices = torch.tensor([0, 2, 3, 3]), torch.tensor([1, 2, 0])
    with pytest.raises(ValueError, match="node 0's neighbours are not"):
        CSCGraph(indptr, indices, edge_time=torch.tensor([5, 1, 0]))
    CSCGraph(indptr, indices, edge_time=torch.tensor([1, 5, 0]))  # a new node may start lower
    with pytest.raises(TypeError, match="edge_time must hold integer times"):
        CSCGraph(indptr, indices, edge_time=torch.tensor([1.0, 5.0, 0.0]))
    g = CSCGraph(indptr, indices, edge_time=torch.tensor([1, 5, 0]))
    with pytest.raises(ValueError, match="needs seed_time"):
        g.sample([0], [2])
    with pytest.raises(ValueError, match="seed_time given, but the graph has no"):
        CSCGraph(indptr, indices).sample([0], [2], seed_time=[1])
    with pytest.raises(ValueError, match="temporal_strategy must be 'uniform' or 'last'"):
        g.sample([0], [2], seed_time=[1], temporal_strategy="latest")


def test_modes_deterministic_across_threads():
    g, _ = random_csc(300, 5000, 6, weights="mixed", times="node")
    seeds = list(range(0, 300, 3))
    a = g.sample(seeds, [5, 3], seed=4, threads=1)
    b = g.sample(seeds, [5, 3], seed=4, threads=2)
    c = g.sample(seeds, [5, 3], seed=5, threads=2)
    for f in FIELDS + ("batch",):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not torch.equal(a.edge, c.edge)


# ---- PyG ----------------------------------------------------------------------------------------
def pyg_data(num_nodes=120, num_edges=900, seed=0):
    from torch_geometric.data import Data

    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    return Data(x=torch.randn(num_nodes, 4, generator=g), edge_index=ei,
                edge_attr=torch.randn(num_edges, 3, generator=g),
                w=torch.rand(num_edges, generator=g) * (torch.rand(num_edges, generator=g) > 0.3),
                time=torch.randint(0, 30, (num_nodes,), generator=g),
                etime=torch.randint(0, 30, (num_edges,), generator=g),
                num_nodes=num_nodes)


def check_pyg_batch(batch, data, batch_size):
    # e_id: the sampled edges' ids in data.edge_index, and their features.
    src, dst = batch.n_id[batch.edge_index[0]], batch.n_id[batch.edge_index[1]]
    assert torch.equal(data.edge_index[0, batch.e_id], src)
    assert torch.equal(data.edge_index[1, batch.e_id], dst)
    assert torch.equal(batch.edge_attr, data.edge_attr[batch.e_id])
    assert torch.equal(batch.x, data.x[batch.n_id])
    if getattr(batch, "batch", None) is not None:
        assert torch.equal(batch.batch[:batch_size], torch.arange(batch_size))
        assert torch.equal(batch.batch[batch.edge_index[0]], batch.batch[batch.edge_index[1]])


@pytest.mark.parametrize("kw", [dict(), dict(disjoint=True), dict(weight_attr="w"),
                                dict(time_attr="time"), dict(time_attr="time", disjoint=True,
                                                             temporal_strategy="last"),
                                dict(weight_attr="w", disjoint=True, replace=True)])
def test_neighbor_loader_modes(kw):
    from torch_geometric.loader import NeighborLoader

    data = pyg_data()
    sampler = NeighborSampler(data, num_neighbors=[4, 3], seed=3, **kw)
    assert sampler.disjoint == bool(kw.get("disjoint") or kw.get("time_attr"))
    loader = NeighborLoader(data, num_neighbors=[4, 3], batch_size=16, neighbor_sampler=sampler,
                            time_attr=kw.get("time_attr"))
    n = 0
    for batch in loader:
        bs = batch.batch_size
        check_pyg_batch(batch, data, bs)
        assert (batch.batch is not None) == sampler.disjoint
        if "time_attr" in kw:
            t = data.time[batch.n_id]
            assert bool((t <= t[:bs][batch.batch]).all())
        if "weight_attr" in kw and not kw.get("replace"):
            # A zero-weight edge only where the node's whole neighbourhood was taken
            # or its positive weights ran out.
            for c in batch.edge_index[1].unique().tolist():
                mine = batch.edge_index[1] == c
                v = int(batch.n_id[c])
                w_all = data.w[data.edge_index[1] == v]
                k = int(mine.sum())
                if k < w_all.numel() and int((w_all > 0).sum()) >= k:
                    assert bool((data.w[batch.e_id[mine]] > 0).all())
        n += 1
    assert n == 8


def test_neighbor_loader_edge_time_with_input_time():
    from torch_geometric.loader import NeighborLoader

    data = pyg_data()
    sampler = NeighborSampler(data, num_neighbors=[5, 5], time_attr="etime", seed=1)
    seeds = torch.arange(0, 40)
    input_time = torch.randint(0, 30, (40,), generator=torch.Generator().manual_seed(2))
    loader = NeighborLoader(data, num_neighbors=[5, 5], batch_size=10, input_nodes=seeds,
                            input_time=input_time, time_attr="etime", neighbor_sampler=sampler)
    for k, batch in enumerate(loader):
        check_pyg_batch(batch, data, 10)
        bound = input_time[k * 10:(k + 1) * 10][batch.batch[batch.edge_index[1]]]
        assert bool((data.etime[batch.e_id] <= bound).all())


def test_neighbor_sampler_same_seed_same_batches():
    from torch_geometric.loader import NeighborLoader

    data = pyg_data()

    def run():
        s = NeighborSampler(data, num_neighbors=[3, 2], weight_attr="w", disjoint=True, seed=8)
        return [b.e_id for b in NeighborLoader(data, num_neighbors=[3, 2], batch_size=32,
                                                neighbor_sampler=s)]

    assert all(torch.equal(a, b) for a, b in zip(run(), run()))


# ---- heterogeneous graphs -----------------------------------------------------------------------
def hetero_data(seed=0):
    from test_sampler import small_hetero

    data = small_hetero(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    for nt in data.node_types:
        data[nt].time = torch.randint(0, 20, (data[nt].num_nodes,), generator=g)
    for et in data.edge_types:
        E = data[et].edge_index.size(1)
        data[et].w = torch.rand(E, generator=g) * (torch.rand(E, generator=g) > 0.3)
        data[et].etime = torch.randint(0, 20, (E,), generator=g)
    return data


def hetero_sample(sampler, nt, seeds, seed_time=None):
    from torch_geometric.sampler import NodeSamplerInput

    seeds = torch.as_tensor(seeds)
    return sampler.sample_from_nodes(NodeSamplerInput(
        input_id=None, node=seeds, time=seed_time, input_type=nt))


def check_hetero_modes(out, sampler, data, seeds, seed_time):
    for et in data.edge_types:
        src, _, dst = et
        row, col, e = out.row[et], out.col[et], out.edge[et]
        perm = sampler.perm.get(et) if sampler.perm is not None else None
        eid = e if perm is None else perm[e]
        ei = data[et].edge_index[:, eid]
        assert torch.equal(ei[0], out.node[src][row]) and torch.equal(ei[1], out.node[dst][col])
        if out.batch is not None:  # every edge inside one seed's subgraph
            assert torch.equal(out.batch[src][row], out.batch[dst][col])
            if seed_time is not None:
                bound = seed_time[out.batch[dst][col]]
                t = data[src].time[out.node[src][row]] if sampler.node_time is not None \
                    else data[et].etime[eid]
                assert bool((t <= bound).all())
    if out.batch is not None:
        assert torch.equal(out.batch["paper"][:len(seeds)], torch.arange(len(seeds)))


@pytest.mark.parametrize("kw", [dict(disjoint=True), dict(weight_attr="w"),
                                dict(time_attr="time"),
                                dict(time_attr="time", temporal_strategy="last"),
                                dict(time_attr="etime", weight_attr="w")])
def test_hetero_modes(kw):
    data = hetero_data()
    sampler = NeighborSampler(data, num_neighbors=[3, 2], seed=2, **kw)
    seeds = [0, 5, 5, 39, 12]
    seed_time = None
    if kw.get("time_attr") == "time":
        seed_time = data["paper"].time[torch.tensor(seeds)]
    elif kw.get("time_attr") == "etime":
        seed_time = torch.tensor([19, 3, 10, 0, 15])
    out = hetero_sample(sampler, "paper", seeds,
                        seed_time if kw.get("time_attr") == "etime" else None)
    assert (out.batch is not None) == sampler.disjoint
    check_hetero_modes(out, sampler, data, seeds, seed_time)
    again = hetero_sample(NeighborSampler(data, num_neighbors=[3, 2], seed=2, **kw), "paper",
                          seeds, seed_time if kw.get("time_attr") == "etime" else None)
    for et in data.edge_types:
        assert torch.equal(out.edge[et], again.edge[et])


def test_hetero_temporal_full_neighbourhood_is_each_seeds_timed_bfs():
    data = hetero_data(seed=3)
    sampler = NeighborSampler(data, num_neighbors=[-1, -1], time_attr="time", seed=0)
    seeds = [1, 7, 7, 30]
    out = hetero_sample(sampler, "paper", seeds)
    edges = {et: data[et].edge_index.t().tolist() for et in data.edge_types}
    for i, s in enumerate(seeds):
        bound = int(data["paper"].time[s])
        level, seen = {("paper", s)}, {("paper", s)}
        for _ in range(2):
            nxt = set()
            for (src, _, dst), el in zip(edges.keys(), edges.values()):
                for u, v in el:
                    if (dst, v) in level and int(data[src].time[u]) <= bound \
                            and (src, u) not in seen:
                        nxt.add((src, u))
            seen |= nxt
            level = nxt
        got = {(nt, int(v)) for nt in data.node_types
               for v, b in zip(out.node[nt].tolist(), out.batch[nt].tolist()) if b == i}
        assert got == seen


def test_hetero_neighbor_loader_disjoint():
    from torch_geometric.loader import NeighborLoader

    data = hetero_data()
    sampler = NeighborSampler(data, num_neighbors=[3, 2], disjoint=True, seed=1)
    loader = NeighborLoader(data, num_neighbors=[3, 2], batch_size=8,
                            input_nodes=("paper", torch.arange(24)), neighbor_sampler=sampler)
    for batch in loader:
        assert torch.equal(batch["paper"].batch[:8], torch.arange(8))
        for et in data.edge_types:
            src, _, dst = et
            ei = batch[et].edge_index
            assert torch.equal(batch[src].batch[ei[0]], batch[dst].batch[ei[1]])
            gi = data[et].edge_index[:, batch[et].e_id]
            assert torch.equal(gi[0], batch[src].n_id[ei[0]])
            assert torch.equal(gi[1], batch[dst].n_id[ei[1]])


def test_sgformer_runs_on_disjoint_batches():
    # PyG's ogbn_train.py default model reads batch.batch (None without disjoint sampling).
    from torch_geometric.loader import NeighborLoader
    from torch_geometric.nn.models import SGFormer

    torch.manual_seed(0)
    data = pyg_data()
    sampler = NeighborSampler(data, num_neighbors=[4, 3], disjoint=True, seed=0)
    loader = NeighborLoader(data, num_neighbors=[4, 3], batch_size=16, neighbor_sampler=sampler)
    model = SGFormer(4, 8, 3, trans_num_layers=1, gnn_num_layers=2).eval()
    batch = next(iter(loader))
    out = model(batch.x, batch.edge_index, batch.batch)
    assert out.shape == (batch.num_nodes, 3) and bool(torch.isfinite(out).all())
    # The attention pools per subgraph: moving a node to another seed's subgraph changes it.
    moved = batch.batch.clone()
    moved[-1] = (moved[-1] + 1) % 16
    assert not torch.allclose(model(batch.x, batch.edge_index, moved)[:16], out[:16])


def test_from_edge_index_sorts_by_time_and_keeps_edge_ids():
    g = torch.Generator().manual_seed(5)
    ei = torch.randint(0, 30, (2, 200), generator=g)
    et = torch.randint(0, 9, (200,), generator=g)
    w = torch.rand(200, generator=g)
    csc = CSCGraph.from_edge_index(ei, 30, edge_time=et, edge_weight=w)
    perm = csc.edge_perm
    assert torch.equal(ei[0, perm], csc.indices) and torch.equal(csc.edge_time, et[perm])
    assert torch.equal(csc.weight_cumsum, CSCGraph(csc.indptr, csc.indices,
                                                   edge_weight=w[perm]).weight_cumsum)
    sub = csc.sample([1, 2, 3], [4, 4], seed_time=[8, 4, 0], seed=1)
    assert torch.equal(ei[0, perm[sub.edge]], sub.node[sub.row])
    assert bool((et[perm[sub.edge]] <= torch.tensor([8, 4, 0])[sub.batch[sub.col]]).all())
    nt = torch.randint(0, 9, (30,), generator=g)
    by_node = CSCGraph.from_edge_index(ei, 30, node_time=nt)
    assert torch.equal(by_node.edge_time, nt[by_node.indices])


def test_mode_argument_errors():
    g, _ = random_csc(20, 60, 0)
    with pytest.raises(TypeError, match="disjoint must be a bool, got str"):
        g.sample([0], [2], disjoint="yes")
    with pytest.raises(ValueError, match="seed_time must be 1-D with 2 values"):
        CSCGraph(g.indptr, g.indices, node_time=torch.zeros(20, dtype=torch.int64)).sample(
            [0, 1], [2], seed_time=[1, 2, 3])


needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or not __import__("ibp_gnn")._C.cuda_built(),
    reason="needs a CUDA GPU, a CUDA build of torch and the CUDA sampler built in")


@needs_gpu
@pytest.mark.parametrize("placement", ["pinned", "device"])
def test_gpu_modes_match_cpu(placement):
    g, _ = random_csc(500, 6000, 7, weights="mixed", times="node")
    cpu_graph, _ = random_csc(500, 6000, 7, weights="mixed", times="node")
    gpu_graph = g.pin_memory() if placement == "pinned" else g.to("cuda")
    seeds = torch.arange(0, 500, 5)
    for strategy in ("uniform", "last"):
        for replace in (False, True):
            kw = dict(seed=3, replace=replace, temporal_strategy=strategy)
            a = cpu_graph.sample(seeds, [5, -1, 2], **kw)
            b = gpu_graph.sample(seeds.cuda(), [5, -1, 2], **kw)
            for f in FIELDS + ("batch",):
                assert torch.equal(getattr(a, f), getattr(b, f).cpu()), f


def test_link_neighbor_loader_disjoint_and_temporal():
    from torch_geometric.loader import LinkNeighborLoader

    data = pyg_data()
    label_index = data.edge_index[:, :40]
    label_time = torch.randint(0, 30, (40,), generator=torch.Generator().manual_seed(4))
    for kw in (dict(disjoint=True), dict(time_attr="time")):
        sampler = NeighborSampler(data, num_neighbors=[3, 2], seed=0, **kw)
        extra = dict(edge_label_time=label_time) if "time_attr" in kw else {}
        loader = LinkNeighborLoader(data, num_neighbors=[3, 2], batch_size=10,
                                    edge_label_index=label_index, neighbor_sampler=sampler,
                                    time_attr=kw.get("time_attr"), **extra)
        for k, batch in enumerate(loader):
            src, dst = batch.n_id[batch.edge_index[0]], batch.n_id[batch.edge_index[1]]
            assert torch.equal(data.edge_index[0, batch.e_id], src)
            assert torch.equal(data.edge_index[1, batch.e_id], dst)
            assert torch.equal(batch.batch[batch.edge_index[0]], batch.batch[batch.edge_index[1]])
            # Each label edge's endpoints are seeds of its own subgraph.
            eli = batch.edge_label_index
            assert torch.equal(batch.batch[eli[0]], torch.arange(eli.size(1)))
            assert torch.equal(batch.batch[eli[1]], torch.arange(eli.size(1)))
            assert torch.equal(batch.n_id[eli], label_index[:, k * 10:(k + 1) * 10])
            if "time_attr" in kw:
                t = data.time[batch.n_id]
                bound = label_time[k * 10:(k + 1) * 10][batch.batch]
                assert bool((t[batch.edge_index[0]] <= bound[batch.edge_index[0]]).all())


def test_disjoint_full_neighbourhood_matches_pyg_k_hop_subgraph():
    # PyG's own semantics: k_hop_subgraph with flow source_to_target collects the
    # in-neighbourhood within k hops, the node set fan-outs of -1 sample.
    from torch_geometric.sampler import NodeSamplerInput
    from torch_geometric.utils import k_hop_subgraph

    data = pyg_data(num_nodes=90, num_edges=400, seed=2)
    sampler = NeighborSampler(data, num_neighbors=[-1, -1], disjoint=True, seed=0)
    seeds = torch.tensor([0, 7, 7, 55, 89])
    out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=seeds))
    for i, s in enumerate(seeds.tolist()):
        subset, _, _, _ = k_hop_subgraph(s, 2, data.edge_index, num_nodes=data.num_nodes,
                                         flow="source_to_target")
        assert set(out.node[out.batch == i].tolist()) == set(subset.tolist())


def test_store_pair_disjoint_and_node_time():
    # A (FeatureStore, GraphStore) pair, as ibp_gnn.pyg's stores are used: PyG's
    # remote path reads node-level times from the feature store ('time').
    from torch_geometric.loader import NeighborLoader
    from torch_geometric.testing import MyFeatureStore, MyGraphStore

    data = pyg_data()
    fs, gs = MyFeatureStore(), MyGraphStore()
    fs.put_tensor(data.x, group_name=None, attr_name="x", index=None)
    fs.put_tensor(data.time, group_name=None, attr_name="time", index=None)
    csc = CSCGraph.from_edge_index(data.edge_index, data.num_nodes, node_time=data.time)
    perm = csc.edge_perm
    gs.put_edge_index(data.edge_index[:, perm], edge_type=None, layout="coo",
                      size=(data.num_nodes, data.num_nodes), is_sorted=True)
    for kw in (dict(disjoint=True), dict(time_attr="time")):
        sampler = NeighborSampler((fs, gs), [3, 2], seed=0, **kw)
        loader = NeighborLoader((fs, gs), [3, 2], batch_size=20, neighbor_sampler=sampler,
                                input_nodes=torch.arange(40), time_attr=kw.get("time_attr"))
        for batch in loader:
            bs = batch.batch_size
            assert torch.equal(batch.batch[:bs], torch.arange(bs))
            src, dst = batch.n_id[batch.edge_index[0]], batch.n_id[batch.edge_index[1]]
            edges = set(zip(*data.edge_index.tolist()))
            assert all((s, d) in edges for s, d in zip(src.tolist(), dst.tolist()))
            if "time_attr" in kw:
                t = data.time[batch.n_id]
                assert bool((t <= t[:bs][batch.batch]).all())
