"""ibp_gnn.pyg: the compressed FeatureStore and the GraphStore behind PyG's loaders.

Every batch's features must be bit-identical to the uncompressed tensors' rows,
and training on them must give exactly the losses of PyG's own in-memory path.
"""
import importlib.util
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")

from torch_geometric.data import Data, HeteroData  # noqa: E402
from torch_geometric.loader import LinkNeighborLoader, NeighborLoader, NodeLoader  # noqa: E402
from torch_geometric.sampler import BaseSampler, HeteroSamplerOutput  # noqa: E402

import ibp_gnn  # noqa: E402
from ibp_gnn import _C  # noqa: E402
from ibp_gnn.pyg import IBPFeatureStore, IBPGraphStore, from_data  # noqa: E402
from ibp_gnn.sampler import NeighborSampler  # noqa: E402
from ibp_gnn.testing import shared_dir  # noqa: E402

from conftest import DTYPES, assert_bits_equal, bits, special_matrix  # noqa: E402

needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and _C.cuda_built() and _C.cuda_device_count() > 0),
    reason="needs a CUDA GPU, a CUDA build of torch and the CUDA gather built in")
HAVE_PYG_SAMPLER = bool(importlib.util.find_spec("pyg_lib") or importlib.util.find_spec("torch_sparse"))


def bag_of_words(rows, cols, seed=0, density=0.05):
    """Sparse binary rows, like Planetoid features: they compress well."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, cols, generator=g) < density).float()


def random_data(num_nodes=300, num_edges=2400, cols=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Data(x=bag_of_words(num_nodes, cols, seed), y=torch.randint(0, 5, (num_nodes,), generator=g),
                edge_index=torch.randint(0, num_nodes, (2, num_edges), generator=g),
                num_nodes=num_nodes)


def stores(data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # edge-level tensors left out
        return from_data(data, **kwargs)


# ---- the feature store ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_put_get_bit_identical(dtype):
    x = special_matrix(dtype, 97, 13, seed=3)
    fs = IBPFeatureStore(compress="always")
    fs.put_tensor(x, group_name=None, attr_name="x", index=None)
    assert fs.is_compressed(group_name=None, attr_name="x")
    idx = torch.tensor([5, 0, 96, 5, 41])
    assert_bits_equal(fs.get_tensor(None, "x", idx), x[idx])
    assert_bits_equal(fs.get_tensor(None, "x", None), x)                       # whole tensor
    assert_bits_equal(fs.get_tensor(None, "x", slice(10, 20, 3)), x[10:20:3])
    assert_bits_equal(fs.get_tensor(None, "x", 7), x[7])                       # one row
    assert_bits_equal(fs.get_tensor(None, "x", -1), x[-1])
    assert_bits_equal(fs.get_tensor(None, "x", idx.int()), x[idx])
    mask = torch.zeros(97, dtype=torch.bool)
    mask[[1, 50]] = True
    assert_bits_equal(fs.get_tensor(None, "x", mask), x[mask])
    assert fs.get_tensor(None, "x", torch.empty(0, dtype=torch.long)).shape == (0, 13)
    assert fs.get_tensor_size(None, "x") == (97, 13)
    assert fs.get_tensor_size(None, "x", idx) == (5, 13)


def test_policy_decides_per_tensor_and_says_so():
    x = bag_of_words(2000, 256)                       # 2 MiB, compresses well
    small = bag_of_words(10, 8)
    noise = torch.randint(-2**31, 2**31 - 1, (5000, 64), dtype=torch.int32,
                          generator=torch.Generator().manual_seed(0))  # 1.2 MiB of random bits
    fs = IBPFeatureStore()
    for name, t in [("x", x), ("small", small), ("noise", noise), ("y", torch.arange(2000)),
                    ("mask", torch.ones(2000, dtype=torch.bool)), ("f64", x.double())]:
        fs.put_tensor(t, group_name=None, attr_name=name, index=None)
    d = fs.describe()
    assert d["x"]["compressed"] and d["x"]["nbytes"] < d["x"]["raw_nbytes"] / 4
    assert not d["small"]["compressed"] and "min_bytes" in d["small"]["reason"]
    assert not d["noise"]["compressed"] and "would not shrink" in d["noise"]["reason"]
    assert not d["y"]["compressed"] and "1-D" in d["y"]["reason"]
    assert not d["mask"]["compressed"]
    assert not d["f64"]["compressed"] and "float64" in d["f64"]["reason"]
    text = repr(fs)
    for name in d:
        assert f"  {name}: " in text
    assert "x: compressed 2000x256 float32, ratio" in text and "y: raw 2000 int64" in text
    assert fs.nbytes < fs.raw_nbytes
    for name, t in [("x", x), ("small", small), ("noise", noise), ("f64", x.double())]:
        idx = torch.tensor([0, 3, 1, 3])
        assert_bits_equal(fs.get_tensor(None, name, idx), t[idx])
    never = IBPFeatureStore(compress="never")
    never.put_tensor(x, group_name=None, attr_name="x", index=None)
    assert not never.is_compressed(None, "x") and "compress='never'" in repr(never)


def test_put_compressed_tensor_path_and_numpy(tmp_path):
    x = bag_of_words(500, 40, seed=1)
    ct = ibp_gnn.compress(x)
    path = ct.save(tmp_path / "x.ibp")
    fs = IBPFeatureStore()
    fs.put_tensor(ct, group_name="paper", attr_name="x", index=None)
    fs.put_tensor(str(path), group_name="author", attr_name="x", index=None)
    fs.put_tensor(x.numpy(), group_name="venue", attr_name="x", index=None)
    assert "given compressed" in repr(fs) and f"loaded from {path}" in repr(fs)
    idx = torch.tensor([499, 0, 250])
    for group in ("paper", "author", "venue"):
        assert_bits_equal(fs.get_tensor(group, "x", idx), x[idx])
    assert "paper.x" in fs.describe()
    assert fs.remove_tensor(group_name="venue", attr_name="x", index=None)
    assert len(fs.get_all_tensor_attrs()) == 2
    fs.update_tensor(x[:10], group_name="paper", attr_name="x", index=None)  # remove + put
    assert fs.get_tensor_size("paper", "x") == (10, 40)


def test_multi_get_counts_bytes():
    x = bag_of_words(1000, 64, seed=2)
    fs = IBPFeatureStore(compress="always")
    fs.put_tensor(x, group_name=None, attr_name="x", index=None)
    fs.put_tensor(torch.arange(1000), group_name=None, attr_name="y", index=None)
    idx = torch.tensor([1, 5, 5, 999])
    attrs = fs.get_all_tensor_attrs()
    for a in attrs:
        a.index = idx
    got = dict(zip([a.attr_name for a in attrs], fs.multi_get_tensor(attrs)))
    assert_bits_equal(got["x"], x[idx])
    assert torch.equal(got["y"], idx)
    ct = fs._entries[(None, "x")].ct
    assert fs.bytes_read == ct.fetch_nbytes(idx) + 4 * 8
    assert fs.raw_bytes_read == 4 * 64 * 4 + 4 * 8
    assert fs.rows_read == 8
    fs.reset_counters()
    assert fs.bytes_read == fs.raw_bytes_read == fs.rows_read == 0


def test_feature_store_errors(tmp_path):
    with pytest.raises(ValueError, match=r"compress must be one of \['auto', 'always', 'never'\], got 'yes'"):
        IBPFeatureStore(compress="yes")
    with pytest.raises(ValueError, match=r"mode must be 'auto' or 'paper', got 'fast'"):
        IBPFeatureStore(mode="fast")
    with pytest.raises(ValueError, match=r"min_bytes must be an int >= 0, got -1"):
        IBPFeatureStore(min_bytes=-1)
    with pytest.raises(ValueError, match=r"device must be 'cpu' or 'cuda\[:N\]', got 'meta'"):
        IBPFeatureStore("meta")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"torch.cuda.is_available\(\) is False"):
            IBPFeatureStore("cuda")
    fs = IBPFeatureStore(compress="always")
    x = bag_of_words(20, 4)
    fs.put_tensor(x, group_name=None, attr_name="x", index=None)
    with pytest.raises(ValueError, match=r"put_tensor\('x'\): index must be None"):
        fs.put_tensor(x[:2], group_name=None, attr_name="x", index=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"put_tensor\('z'\): expected a torch.Tensor.*got list"):
        fs.put_tensor([1, 2], group_name=None, attr_name="z", index=None)
    with pytest.raises(KeyError, match=r"no tensor 'w' .*stored: 'x'"):
        fs.get_tensor(None, "w", torch.tensor([0]))
    with pytest.raises(IndexError, match=r"get_tensor\('x'\): index holds id 20, out of range for 20 rows"):
        fs.get_tensor(None, "x", torch.tensor([3, 20]))
    with pytest.raises(IndexError, match=r"index holds id -2"):
        fs.get_tensor(None, "x", torch.tensor([-2]))
    with pytest.raises(IndexError, match=r"index 25 is out of range for 20 rows"):
        fs.get_tensor(None, "x", 25)
    with pytest.raises(TypeError, match=r"index must hold integer ids, got torch.float32"):
        fs.get_tensor(None, "x", torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"index must be 1-D, got shape \(1, 2\)"):
        fs.get_tensor(None, "x", torch.tensor([[1, 2]]))
    with pytest.raises(IndexError, match=r"a boolean index must have shape \(20,\), got \(3,\)"):
        fs.get_tensor(None, "x", torch.tensor([True, False, True]))
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        fs.put_tensor(str(tmp_path / "missing.ibp"), group_name=None, attr_name="m", index=None)


# ---- the graph store -------------------------------------------------------------------------------
def test_graph_store_layouts_match_pyg():
    from torch_geometric.sampler.utils import to_csc

    data = random_data(seed=4)
    gs = IBPGraphStore()
    gs.put_edge_index(data.edge_index, edge_type=None, layout="coo", size=(300, 300))
    row, colptr, perm = gs.csc()
    colptr_ref, row_ref, perm_ref = to_csc(data, device="cpu")
    assert torch.equal(colptr, colptr_ref) and torch.equal(row, row_ref)
    assert torch.equal(perm, perm_ref)
    assert gs.csc()[0] is row  # derived once, then kept
    rowptr, col, perm_r = gs.csr()
    src, dst = data.edge_index
    assert torch.equal(src[perm_r], torch.repeat_interleave(torch.arange(300), rowptr.diff()))
    assert torch.equal(dst[perm_r], col)
    r, c, p = gs.coo()
    assert p is None and torch.equal(r, src) and torch.equal(c, dst)
    (attr,) = gs.get_all_edge_attrs()
    assert attr.size == (300, 300) and attr.layout.value == "coo"

    # A CSC put directly (e.g. from files) gives COO/CSR back, edge ids = CSC positions.
    gs2 = IBPGraphStore()
    gs2.put_edge_index((row.numpy(), colptr.numpy()), edge_type=None, layout="csc")
    (attr2,) = gs2.get_all_edge_attrs()
    assert attr2.size == (int(row.max()) + 1, 300)
    r2, c2, p2 = gs2.coo()
    assert p2 is None and torch.equal(r2, row)
    assert torch.equal(c2, torch.repeat_interleave(torch.arange(300), colptr.diff()))
    rp, cc, pp = gs2.csr()
    assert torch.equal(row[pp], torch.repeat_interleave(torch.arange(rp.numel() - 1), rp.diff()))
    assert "csc 2400 edges" in repr(gs2)
    assert gs2.remove_edge_index(edge_type=None, layout="csc")
    with pytest.raises(ValueError, match=r"holds no edges"):
        gs2.csc()


def test_graph_store_errors():
    gs = IBPGraphStore()
    with pytest.raises(TypeError, match=r"row must be int32 or int64, got torch.float32"):
        gs.put_edge_index((torch.tensor([0.0]), torch.tensor([1])), edge_type=None, layout="coo")
    with pytest.raises(ValueError, match=r"row and col have 2 and 1 entries"):
        gs.put_edge_index((torch.tensor([0, 1]), torch.tensor([1])), edge_type=None, layout="coo")
    with pytest.raises(ValueError, match=r"colptr must start at 0 and end at the number of edges \(2\)"):
        gs.put_edge_index((torch.tensor([0, 1]), torch.tensor([0, 1])), edge_type=None,
                          layout="csc")
    with pytest.raises(ValueError, match=r"beyond size=\(2, 2\)"):
        gs.put_edge_index(torch.tensor([[0, 5], [1, 1]]), edge_type=None, layout="coo",
                          size=(2, 2))
    with pytest.raises(TypeError, match=r"must be a pair \(row, col\)"):
        gs.put_edge_index(torch.zeros(3, 2, dtype=torch.long), edge_type=None, layout="coo")
    gs.put_edge_index(torch.tensor([[0], [1]]), edge_type=("a", "to", "b"), layout="coo")
    with pytest.raises(ValueError, match=r"edge types \[\('b', 'to', 'a'\)\] are not in the store"):
        gs.csc([("b", "to", "a")])


# ---- loaders -------------------------------------------------------------------------------------
def assert_same_batches(batches_a, batches_b):
    n = 0
    for a, b in zip(batches_a, batches_b):
        assert torch.equal(a.n_id, b.n_id) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.e_id, b.e_id) and a.batch_size == b.batch_size
        assert_bits_equal(a.x, b.x)
        assert torch.equal(a.y, b.y)
        n += 1
    return n


def test_neighbor_loader_same_batches_as_data_path():
    data = random_data(seed=5)
    fs, gs = stores(data, compress="always")
    kw = dict(num_neighbors=[6, 4], batch_size=40, input_nodes=torch.arange(0, 300, 2))
    ours = NeighborLoader((fs, gs), neighbor_sampler=NeighborSampler((fs, gs), [6, 4], seed=1),
                          filter_per_worker=False, **kw)
    ref = NeighborLoader(data, neighbor_sampler=NeighborSampler(data, [6, 4], seed=1), **kw)
    assert assert_same_batches(ours, ref) == 4
    for batch in ours:
        assert_bits_equal(batch.x, data.x[batch.n_id])
    assert fs.bytes_read > 0 and fs.raw_bytes_read > 4 * fs.bytes_read


def test_neighbor_loader_worker_processes_cpu():
    data = random_data(seed=6)
    fs, gs = stores(data, compress="always")
    loader = NeighborLoader((fs, gs), [5, 5], input_nodes=torch.arange(300), batch_size=64,
                            neighbor_sampler=NeighborSampler((fs, gs), [5, 5], seed=2),
                            num_workers=2)  # features gathered inside the workers
    seen = 0
    for batch in loader:
        assert_bits_equal(batch.x, data.x[batch.n_id])
        assert torch.equal(batch.y, data.y[batch.n_id])
        seen += batch.batch_size
    assert seen == 300


def test_link_neighbor_loader():
    data = random_data(seed=7)
    fs, gs = stores(data, compress="always")
    label_index = data.edge_index[:, :120]
    loader = LinkNeighborLoader((fs, gs), num_neighbors=[4, 2], batch_size=30,
                                edge_label_index=(None, label_index),
                                neighbor_sampler=NeighborSampler((fs, gs), [4, 2], seed=3),
                                filter_per_worker=False)
    count = 0
    for batch in loader:
        assert_bits_equal(batch.x, data.x[batch.n_id])
        got = batch.n_id[batch.edge_label_index]
        assert torch.equal(got, label_index[:, batch.input_id])
        count += batch.edge_label_index.size(1)
    assert count == 120


def test_graph_built_from_files(tmp_path):
    """A graph that never was one Data: features compressed file to file, the
    CSC structure read from .npy memory maps."""
    data = random_data(seed=8)
    np.save(tmp_path / "x.npy", data.x.numpy())
    ibp_gnn.compress_file(tmp_path / "x.npy", tmp_path / "x.ibp", progress=False)
    gs0 = IBPGraphStore()
    gs0.put_edge_index(data.edge_index, edge_type=None, layout="coo", size=(300, 300))
    row, colptr, _ = gs0.csc()
    np.save(tmp_path / "row.npy", row.numpy())
    np.save(tmp_path / "colptr.npy", colptr.numpy())

    fs = IBPFeatureStore()
    fs.put_tensor(tmp_path / "x.ibp", group_name=None, attr_name="x", index=None)
    gs = IBPGraphStore()
    gs.put_edge_index((np.load(tmp_path / "row.npy", mmap_mode="r"),
                       np.load(tmp_path / "colptr.npy", mmap_mode="r")),
                      edge_type=None, layout="csc", size=(300, 300))
    loader = NeighborLoader((fs, gs), [5, 3], input_nodes=torch.arange(100), batch_size=50,
                            neighbor_sampler=NeighborSampler((fs, gs), [5, 3], seed=0))
    for batch in loader:
        assert_bits_equal(batch.x, data.x[batch.n_id])
        src, dst = batch.n_id[batch.edge_index]
        edges = set(zip(*data.edge_index.tolist()))
        assert all((s, d) in edges for s, d in zip(src.tolist(), dst.tolist()))


# ---- heterogeneous graphs ----------------------------------------------------------------------------
class FullNeighborhoodHeteroSampler(BaseSampler):
    """Reference sampler: every in-neighbour of the seeds over each edge type that
    ends at the seed type (one hop), relabelled in order of first appearance.
    Needs neither pyg-lib nor torch-sparse."""

    def __init__(self, graph_store):
        self.rows, self.colptrs, self.perms = graph_store.csc()

    def sample_from_nodes(self, inputs, **kwargs):
        seed_type, seeds = inputs.input_type, inputs.node
        nodes = {seed_type: seeds.tolist()}
        local = {seed_type: {}}
        for i, v in enumerate(nodes[seed_type]):
            local[seed_type].setdefault(v, i)
        row, col, edge = {}, {}, {}
        for et, colptr in self.colptrs.items():
            src_type, _, dst_type = et
            if dst_type != seed_type:
                continue
            nodes.setdefault(src_type, [])
            local.setdefault(src_type, {})
            r, c, e = [], [], []
            for j, s in enumerate(seeds.tolist()):
                for pos in range(int(colptr[s]), int(colptr[s + 1])):
                    u = int(self.rows[et][pos])
                    if u not in local[src_type]:
                        local[src_type][u] = len(nodes[src_type])
                        nodes[src_type].append(u)
                    r.append(local[src_type][u])
                    c.append(j)
                    perm = self.perms[et]
                    e.append(int(perm[pos]) if perm is not None else pos)
            row[et], col[et], edge[et] = (torch.tensor(v, dtype=torch.long) for v in (r, c, e))
        return HeteroSamplerOutput(
            node={t: torch.tensor(v, dtype=torch.long) for t, v in nodes.items()},
            row=row, col=col, edge=edge, metadata=(inputs.input_id, inputs.time))

    def sample_from_edges(self, inputs, neg_sampling=None):
        raise NotImplementedError("this reference sampler samples from nodes only")


def hetero_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["paper"].x = bag_of_words(120, 32, seed)
    data["paper"].y = torch.randint(0, 4, (120,), generator=g)
    data["author"].x = special_matrix(torch.float16, 80, 12, seed)
    data["author", "writes", "paper"].edge_index = torch.stack(
        [torch.randint(0, 80, (400,), generator=g), torch.randint(0, 120, (400,), generator=g)])
    data["paper", "cites", "paper"].edge_index = torch.randint(0, 120, (2, 500), generator=g)
    return data


def test_hetero_two_node_types():
    data = hetero_data()
    fs, gs = stores(data, compress="always")
    assert fs.is_compressed("paper", "x") and fs.is_compressed("author", "x")
    assert not fs.is_compressed("paper", "y")
    raw_fs, raw_gs = stores(data, compress="never")
    seeds = ("paper", torch.arange(0, 120, 3))
    ours = NodeLoader((fs, gs), node_sampler=FullNeighborhoodHeteroSampler(gs),
                      input_nodes=seeds, batch_size=16)
    raw = NodeLoader((raw_fs, raw_gs), node_sampler=FullNeighborhoodHeteroSampler(raw_gs),
                     input_nodes=seeds, batch_size=16)
    batches = 0
    for a, b in zip(ours, raw):
        for nt in ("paper", "author"):
            assert_bits_equal(a[nt].x, data[nt].x[a[nt].n_id])
            assert_bits_equal(a[nt].x, b[nt].x)
        assert torch.equal(a["paper"].y, data["paper"].y[a["paper"].n_id])
        et = ("author", "writes", "paper")
        src = a["author"].n_id[a[et].edge_index[0]]
        dst = a["paper"].n_id[a[et].edge_index[1]]
        assert torch.equal(torch.stack([src, dst]), data[et].edge_index[:, a[et].e_id])
        batches += 1
    assert batches == 3
    assert fs.bytes_read < raw_fs.bytes_read == raw_fs.raw_bytes_read


@pytest.mark.skipif(not HAVE_PYG_SAMPLER, reason="PyG's heterogeneous NeighborLoader needs "
                                                 "pyg-lib or torch-sparse")
def test_hetero_pyg_neighbor_loader():
    data = hetero_data(seed=1)
    fs, gs = stores(data, compress="always")
    loader = NeighborLoader((fs, gs), num_neighbors=[4, 2], batch_size=20,
                            input_nodes=("paper", torch.arange(120)))
    for batch in loader:
        for nt in ("paper", "author"):
            assert_bits_equal(batch[nt].x, data[nt].x[batch[nt].n_id])


def test_from_data_errors_and_warnings():
    data = random_data()
    data.edge_attr = torch.randn(data.num_edges, 3)
    data.graph_label = torch.zeros(1, 2, 3)
    with pytest.warns(UserWarning, match=r"tensors \['graph_label'\] are neither node- nor edge"):
        fs, _ = from_data(data)
    assert fs.edge_tensor_names() == ["edge_attr"]
    assert_bits_equal(fs.get_edge_tensor(None, "edge_attr", torch.tensor([4, 0])),
                      data.edge_attr[[4, 0]])
    with pytest.raises(KeyError, match=r"no edge tensor 'edge w'; stored: 'edge edge_attr'"):
        fs.get_edge_tensor(None, "w")
    with pytest.raises(TypeError, match=r"must be a torch_geometric Data or HeteroData, got dict"):
        from_data({"x": data.x})
    h = HeteroData()
    h["a"].x = torch.randn(3, 2)
    h["b"].num_nodes = 4
    h["a", "to", "b"].edge_index = torch.tensor([[0, 1], [1, 3]])
    with pytest.raises(ValueError, match=r"node types \['b'\] have no node-level tensor"):
        from_data(h)


# ---- CUDA ----------------------------------------------------------------------------------------------
@needs_gpu
def test_cuda_store_gathers_on_gpu():
    data = random_data(seed=9)
    fs, gs = stores(data, device="cuda", compress="always")
    loader = NeighborLoader((fs, gs), [5, 5], input_nodes=torch.arange(300), batch_size=64,
                            neighbor_sampler=NeighborSampler((fs, gs), [5, 5], seed=0),
                            filter_per_worker=False)
    for batch in loader:
        assert batch.x.is_cuda and batch.y.is_cuda
        assert_bits_equal(batch.x.cpu(), data.x[batch.n_id])
        assert torch.equal(batch.y.cpu(), data.y[batch.n_id])
    idx = torch.tensor([3, 1, 3], device="cuda")
    assert_bits_equal(fs.get_tensor(None, "x", idx).cpu(), data.x[idx.cpu()])


@needs_gpu
def test_cuda_store_in_worker_says_what_to_do():
    data = random_data(seed=10)
    fs, gs = stores(data, device="cuda", compress="always")
    loader = NeighborLoader((fs, gs), [3], input_nodes=torch.arange(10), batch_size=5,
                            neighbor_sampler=NeighborSampler((fs, gs), [3], seed=0),
                            num_workers=1, filter_per_worker=True,
                            multiprocessing_context="fork")
    with pytest.raises(RuntimeError, match=r"filter_per_worker=False"):
        next(iter(loader))


# ---- training: same losses as PyG's in-memory path ------------------------------------------------
def planetoid(name):
    root = shared_dir()
    if root is None or not (root / name / f"ind.{name}.graph").is_file():
        pytest.skip(f"../shared/datasets/{name} is not present")
    from torch_geometric.io import read_planetoid_data

    return read_planetoid_data(str(root / name), name)


def make_model(kind, data):
    from torch_geometric.nn.models import GAT, GraphSAGE

    torch.manual_seed(0)
    classes = int(data.y.max()) + 1
    if kind == "sage":
        return GraphSAGE(data.num_features, 32, num_layers=2, out_channels=classes, dropout=0.5)
    return GAT(data.num_features, 32, num_layers=2, out_channels=classes, heads=2, dropout=0.5)


def train(loader, model, epochs=3, check=None):
    torch.manual_seed(1)  # dropout
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses, ids = [], []
    model.train()
    for _ in range(epochs):
        for batch in loader:
            if check is not None:
                check(batch)
            opt.zero_grad()
            out = model(batch.x, batch.edge_index)[:batch.batch_size]
            loss = torch.nn.functional.cross_entropy(out, batch.y[:batch.batch_size])
            loss.backward()
            opt.step()
            losses.append(loss.item())
            ids.append(batch.n_id)
    return losses, ids


@pytest.mark.parametrize("name", ["cora", "citeseer"])
@pytest.mark.parametrize("kind", ["sage", "gat"])
def test_training_losses_match_uncompressed(name, kind):
    data = planetoid(name)
    train_idx = data.train_mask.nonzero().view(-1)
    fs, gs = stores(data)
    assert fs.is_compressed(None, "x") and fs.describe()["x"]["nbytes"] * 10 < data.x.nbytes

    def loader(source, sampler_data):
        return NeighborLoader(source, num_neighbors=[10, 5], input_nodes=train_idx,
                              batch_size=32, shuffle=True, filter_per_worker=False,
                              generator=torch.Generator().manual_seed(0),
                              neighbor_sampler=NeighborSampler(sampler_data, [10, 5], seed=0))

    def same_bits(batch):
        assert torch.equal(bits(batch.x), bits(data.x[batch.n_id]))

    ref_losses, ref_ids = train(loader(data, data), make_model(kind, data))
    losses, ids = train(loader((fs, gs), (fs, gs)), make_model(kind, data), check=same_bits)
    assert len(losses) == 3 * -(-train_idx.numel() // 32)
    assert all(torch.equal(a, b) for a, b in zip(ids, ref_ids))
    assert losses == ref_losses  # exactly


# ---- tensor-like features -----------------------------------------------------------------------
def _bits(t):
    return t.contiguous().view(torch.int32) if t.dtype == torch.float32 else t


TENSOR_KEYS = [
    torch.tensor([3, -1, 5, 5]), np.array([7, 0, 2]), [1, 2, -3], slice(2, 50, 3), slice(None),
    4, -2, torch.tensor(7), np.int64(9), torch.tensor([[1, 2], [3, 4]]), (torch.tensor([1, 0]),
    slice(1, 4)), (3, 2), Ellipsis, (slice(None), 0), range(3), torch.empty(0, dtype=torch.long),
    torch.tensor([5, 9], dtype=torch.int32), [True] * 50 + [False] * 50,
]


def _special_rows(n=100, cols=7):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, cols, generator=g)
    x[x > 0.4] = 0
    x[0, 0], x[1, 1], x[2, 2], x[3, 3] = float("nan"), -0.0, float("inf"), 1e-42
    return x


@pytest.mark.parametrize("key", TENSOR_KEYS, ids=lambda k: type(k).__name__)
def test_tensor_like_indexing_matches_the_raw_tensor(key):
    x = _special_rows()
    ct = ibp_gnn.compress(x)
    fs, _ = from_data(Data(x=x, edge_index=torch.zeros(2, 0, dtype=torch.long)),
                      compress="always")
    for holder in (ct, fs[None, "x"], fs.tensor("x")):
        got = holder[key]
        want = x[key]
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.equal(_bits(got), _bits(want))


def test_tensor_like_description_and_errors():
    x = _special_rows()
    ct = ibp_gnn.compress(x)
    view = from_data(Data(x=x, edge_index=torch.zeros(2, 0, dtype=torch.long)),
                     compress="always")[0][None, "x"]
    for holder in (ct, view):
        assert holder.shape == x.shape and holder.size() == x.size() and holder.size(-1) == 7
        assert holder.dtype == x.dtype and holder.device == torch.device("cpu")
        assert len(holder) == 100 and holder.dim() == 2 and holder.ndim == 2
        assert holder.numel() == x.numel() and holder.to("cpu") is holder
        assert holder.to(x) is holder  # same device and dtype as a tensor
        with pytest.raises(IndexError, match="100 is out of range for 100 rows"):
            holder[100]
        with pytest.raises(IndexError, match="id -101, out of range"):
            holder[torch.tensor([0, -101])]
        with pytest.raises(TypeError, match=r"decoded bit for bit, not converted.*to\(torch"):
            holder.to(torch.float64)
        with pytest.raises(TypeError, match="must hold integers"):
            holder[torch.tensor([0.5])]
        with pytest.raises(ValueError, match="decoded on 'cpu' or 'cuda"):
            holder.to("meta")
        with pytest.raises(IndexError, match="size: dim 2 is out of range"):
            holder.size(2)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="is_available"):
            ct.to("cuda")


def test_store_views_count_bytes_and_raw_stores_index_too():
    from ibp_gnn.stores import IBPStore, RawStore

    x = _special_rows(300, 64)
    fs, _ = from_data(Data(x=x, edge_index=torch.zeros(2, 0, dtype=torch.long)),
                      compress="always")
    before = fs.bytes_read
    assert torch.equal(_bits(fs[None, "x"][torch.tensor([1, 2])]), _bits(x[[1, 2]]))
    assert fs.bytes_read > before  # a view's gathers go through the store's counters
    for store in (IBPStore(x), RawStore(x)):
        idx = torch.tensor([299, 0, -1])
        assert torch.equal(_bits(store[idx]), _bits(x[idx]))
        assert store.shape == x.shape and len(store) == 300 and store.to("cpu") is store


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tensor_like_to_cuda_decodes_on_the_gpu():
    x = _special_rows(300, 64)
    ct = ibp_gnn.compress(x)
    g = ct.to("cuda")
    idx = torch.tensor([5, 1, 5])
    assert g.device.type == "cuda" and g[idx].device.type == "cuda"
    assert torch.equal(_bits(g[idx].cpu()), _bits(x[idx]))
    assert torch.equal(_bits(g[idx.cuda()].cpu()), _bits(x[idx]))
    assert g.to("cpu") is ct
