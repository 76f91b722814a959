"""ibp_gnn.loader: PyG's loader signatures building our sampler, conflicting
pairs, edge features of sampled edges, reproducible heterogeneous sampling."""
import inspect
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

pytest.importorskip("torch_geometric")
import torch_geometric.loader as pyg_loader  # noqa: E402
from torch_geometric.data import Data, HeteroData  # noqa: E402

from ibp_gnn.loader import LinkNeighborLoader, NeighborLoader  # noqa: E402
from ibp_gnn.pyg import from_data  # noqa: E402
from ibp_gnn.sampler import NeighborSampler  # noqa: E402
from conftest import bits  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def graph(num_nodes=400, num_edges=3000, cols=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(num_nodes, cols, generator=g) < 0.1).float()
    return Data(x=x, y=torch.randint(0, 4, (num_nodes,), generator=g),
                edge_index=torch.randint(0, num_nodes, (2, num_edges), generator=g),
                edge_attr=torch.randn(num_edges, 6, generator=g), num_nodes=num_nodes)


def test_signatures_are_pygs_plus_keyword_only_sampler_settings():
    for ours, theirs in ((NeighborLoader, pyg_loader.NeighborLoader),
                         (LinkNeighborLoader, pyg_loader.LinkNeighborLoader)):
        a = inspect.signature(ours.__init__).parameters
        b = inspect.signature(theirs.__init__).parameters
        positional = [n for n, p in a.items() if p.kind != p.KEYWORD_ONLY]
        assert positional == list(b)
        for name, p in b.items():
            assert a[name].default == p.default, name
        extra = [n for n, p in a.items() if p.kind == p.KEYWORD_ONLY]
        assert extra == ["seed", "threads", "sampler_device", "backend"]


def test_loader_arguments_reach_the_sampler():
    data = graph()
    fs, gs = from_data(data)
    loader = NeighborLoader((fs, gs), num_neighbors=[25, 10], batch_size=16, seed=0)
    assert isinstance(loader.node_sampler, NeighborSampler)
    assert loader.node_sampler.num_neighbors.values == [25, 10]
    batch = next(iter(loader))
    assert len(batch.num_sampled_nodes) == 3  # two hops sampled, not one
    assert batch.num_sampled_edges[0] <= 16 * 25 and batch.num_sampled_edges[1] > 0
    loader = NeighborLoader(data, num_neighbors=[3], batch_size=16, replace=True, seed=0)
    assert loader.node_sampler.replace is True
    b = next(iter(loader))
    assert b.num_sampled_edges[0] == 16 * 3  # with replacement: exactly 3 each


def test_same_batches_as_pygs_loader_with_the_same_sampler():
    data = graph()
    fs, gs = from_data(data, compress="always")
    ours = NeighborLoader((fs, gs), [5, 3], batch_size=32, seed=7)
    ref = pyg_loader.NeighborLoader(data, [5, 3], batch_size=32,
                                    neighbor_sampler=NeighborSampler(data, [5, 3], seed=7))
    n = 0
    for a, b in zip(ours, ref):
        assert torch.equal(a.n_id, b.n_id) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.e_id, b.e_id)
        assert torch.equal(bits(a.x), bits(b.x))
        assert torch.equal(bits(a.edge_attr), bits(b.edge_attr))  # edge features, per e_id
        n += 1
    assert n == -(-400 // 32)


@pytest.mark.parametrize("loader_kwargs, message", [
    (dict(num_neighbors=[25, 10]), r"num_neighbors=\[25, 10\] but the sampler has \[1\]"),
    (dict(num_neighbors=[1], replace=True), r"replace=True but the sampler has False"),
    (dict(num_neighbors=[1], disjoint=True), r"disjoint=True but the sampler has False"),
    (dict(num_neighbors=[1], subgraph_type="bidirectional"),
     r"subgraph_type='bidirectional' but the sampler has 'directional'"),
    (dict(num_neighbors=[1], seed=3), r"seed=3 is a sampler setting"),
    (dict(num_neighbors=[1], weight_attr="w"), r"weight_attr='w' but the sampler has no edge"),
])
def test_a_conflicting_pair_raises(loader_kwargs, message):
    data = graph()
    fs, gs = from_data(data)
    sampler = NeighborSampler((fs, gs), [1])
    with pytest.raises(ValueError, match=message):
        NeighborLoader((fs, gs), neighbor_sampler=sampler, batch_size=8, **loader_kwargs)
    with pytest.raises(ValueError, match=message):
        LinkNeighborLoader((fs, gs), neighbor_sampler=sampler, batch_size=8,
                           edge_label_index=data.edge_index[:, :20], **loader_kwargs)
    # the same settings on both are fine
    NeighborLoader((fs, gs), num_neighbors=[1], neighbor_sampler=sampler, batch_size=8)


def test_gat_with_edge_dim_on_compressed_edge_features():
    from torch_geometric.nn.models import GAT

    data = graph(cols=64)
    data.edge_attr = (torch.rand(data.num_edges, 32) < 0.2).float()  # worth compressing
    fs, gs = from_data(data, compress="always")
    assert fs.describe()["edge edge_attr"]["compressed"]

    def run(source):
        torch.manual_seed(0)
        model = GAT(64, 16, num_layers=2, out_channels=4, heads=2, edge_dim=32)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for batch in NeighborLoader(source, [6, 4], batch_size=64, seed=1,
                                    generator=torch.Generator().manual_seed(0), shuffle=True):
            opt.zero_grad()
            out = model(batch.x, batch.edge_index, edge_attr=batch.edge_attr)
            loss = torch.nn.functional.cross_entropy(out[:batch.batch_size],
                                                     batch.y[:batch.batch_size])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    ref = run(data)
    assert len(ref) == -(-400 // 64)
    assert run((fs, gs)) == ref  # exactly
    assert fs.bytes_read < fs.raw_bytes_read


def test_link_loader_carries_edge_features():
    data = graph()
    fs, gs = from_data(data, compress="always")
    loader = LinkNeighborLoader((fs, gs), [4, 2], edge_label_index=data.edge_index[:, :64],
                                batch_size=16, seed=0)
    for batch in loader:
        assert torch.equal(bits(batch.edge_attr), bits(data.edge_attr[batch.e_id]))
        assert torch.equal(bits(batch.x), bits(data.x[batch.n_id]))


# ---- reproducible heterogeneous sampling --------------------------------------------------------
HETERO_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys, warnings
    import torch
    from torch_geometric.data import HeteroData
    from ibp_gnn.loader import NeighborLoader
    from ibp_gnn.pyg import from_data
    g = torch.Generator().manual_seed(0)
    data = HeteroData()
    sizes = {"paper": 150, "author": 90, "institution": 20, "field": 30}
    for nt, n in sizes.items():
        data[nt].x = (torch.rand(n, 24, generator=g) < 0.2).float()
    for src, rel, dst in [("author", "writes", "paper"), ("paper", "cites", "paper"),
                          ("author", "affiliated", "institution"), ("paper", "about", "field"),
                          ("field", "rev_about", "paper"), ("institution", "employs", "author")]:
        data[src, rel, dst].edge_index = torch.stack([
            torch.randint(0, sizes[src], (400,), generator=g),
            torch.randint(0, sizes[dst], (400,), generator=g)])
        data[src, rel, dst].edge_attr = torch.randn(400, 3, generator=g)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs, gs = from_data(data, compress="always")
    for name, source in (("raw", data), ("ibp", (fs, gs))):
        h = hashlib.sha256()
        loader = NeighborLoader(source, [4, 3], input_nodes=("paper", torch.arange(150)),
                                batch_size=40, seed=5)
        for batch in loader:
            for nt in sorted(batch.node_types):
                h.update(nt.encode()); h.update(batch[nt].n_id.numpy().tobytes())
                h.update(batch[nt].x.view(torch.int32).numpy().tobytes())
            for et in sorted(batch.edge_types):
                h.update("__".join(et).encode())
                h.update(batch[et].edge_index.numpy().tobytes())
                h.update(batch[et].e_id.numpy().tobytes())
                h.update(batch[et].edge_attr.view(torch.int32).numpy().tobytes())
        out[name] = h.hexdigest()
    print(json.dumps(out))
""")


def test_hetero_samples_are_identical_across_hash_seeds_and_stores():
    procs = [subprocess.Popen([sys.executable, "-c", HETERO_SCRIPT], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(os.environ, PYTHONHASHSEED=hash_seed, OMP_NUM_THREADS="1"))
             for hash_seed in ("1", "2")]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["raw"] == results[0]["ibp"]  # compressed vs in-memory, bit for bit
    assert results[1] == results[0]  # whatever the hash seed


def test_store_type_order_follows_the_stores():
    from ibp_gnn.pyg import store_type_order

    data = HeteroData()
    data["b"].x = torch.zeros(3, 2)
    data["a"].x = torch.zeros(3, 2)
    data["b", "to", "a"].edge_index = torch.tensor([[0], [1]])
    data["a", "to", "b"].edge_index = torch.tensor([[0], [1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs, gs = from_data(data)
    nts, ets = store_type_order((fs, gs), {"a", "b"}, {("a", "to", "b"), ("b", "to", "a")})
    assert nts == ["b", "a"] and ets == [("b", "to", "a"), ("a", "to", "b")]
    assert (nts, ets) == tuple(map(list, data.metadata()))
    # reversed edge types (backward sampling) keep the position of their forward type
    _, ets = store_type_order((fs, gs), {"a", "b"}, {("a", "rev", "b")})
    assert ets == [("a", "rev", "b")]


def test_compress_data_in_place_and_the_loader_gathers_its_rows():
    from ibp_gnn import CompressedTensor
    from ibp_gnn.loader import compress_data

    data = graph(cols=64)
    data.edge_attr = (torch.rand(data.num_edges, 32) < 0.2).float()
    raw = data.clone()
    assert compress_data(data, min_bytes=0) is data
    assert isinstance(data.x, CompressedTensor) and isinstance(data.edge_attr, CompressedTensor)
    assert not isinstance(data.y, CompressedTensor) and data.num_nodes == 400
    for batch, ref in zip(NeighborLoader(data, [4, 2], batch_size=100, seed=3),
                          NeighborLoader(raw, [4, 2], batch_size=100, seed=3)):
        assert torch.equal(bits(batch.x), bits(ref.x))
        assert torch.equal(bits(batch.edge_attr), bits(ref.edge_attr))
    # PyG's own loaders hand the whole compressed tensor over; using it says what to do
    with pytest.raises(TypeError, match=r"torch.linear does not run on compressed rows.*"
                                        r"ibp_gnn.loader"):
        torch.nn.functional.linear(data.x, torch.zeros(2, 64))
    with pytest.raises(TypeError, match="compress_data: data must be"):
        compress_data({"x": data.x})
