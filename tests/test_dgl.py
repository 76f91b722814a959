"""ibp_gnn.dgl against the real dgl package (skipped where dgl is not installed).

DGL 2.1.0 at torch 2.13 imports only without GraphBolt (import_dgl(without_graphbolt=True)):
the classic dgl.dataloading path runs here; the GraphBolt adapter is tested with
GraphBolt where its library loads, and its protocol on its own everywhere.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import ibp_gnn
import ibp_gnn.dgl as idgl
from ibp_gnn import _C
from ibp_gnn.testing import shared_dir

from conftest import DTYPES, assert_bits_equal, bits, special_matrix

if importlib.util.find_spec("dgl") is None:
    pytest.skip("dgl is not installed (pip install dgl pydantic 'torchdata<0.10')",
                allow_module_level=True)
try:
    dgl = idgl.import_dgl(without_graphbolt=True)
except ImportError as e:
    pytest.skip(f"dgl does not import here: {e}", allow_module_level=True)

needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and _C.cuda_built() and _C.cuda_device_count() > 0),
    reason="needs a CUDA GPU, a CUDA build of torch and the CUDA gather built in")


def graphbolt_or_none():
    try:
        return idgl._graphbolt()
    except ImportError:
        return None


needs_graphbolt = pytest.mark.skipif(
    graphbolt_or_none() is None,
    reason=f"DGL's GraphBolt library does not load with torch {torch.__version__}")


def bag_of_words(rows, cols, seed=0, density=0.05):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, cols, generator=g) < density).float()


# ---- importing ----------------------------------------------------------------------------------------
def test_module_import_leaves_dgl_alone():
    """Importing ibp_gnn.dgl imports neither dgl nor a stand-in; a failed DGL import
    says what to do."""
    code = textwrap.dedent("""
        import sys
        import ibp_gnn.dgl as idgl
        assert "dgl" not in sys.modules and "dgl.graphbolt" not in sys.modules
        try:
            idgl.IBPFeatureStorage
            print("PLAIN-OK")
        except ImportError as e:
            print("ERROR:", e)
            assert "dgl.graphbolt" not in sys.modules  # no stand-in behind the user's back
            idgl.import_dgl(without_graphbolt=True)    # recovers from the failed import
            idgl.IBPFeatureStorage
            print("WORKAROUND-OK")
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    if "PLAIN-OK" not in out.stdout:
        assert "ERROR: ibp_gnn.dgl: `import dgl` failed" in out.stdout
        assert "import_dgl(without_graphbolt=True)" in out.stdout
        assert "WORKAROUND-OK" in out.stdout


def test_graphbolt_missing_is_explained():
    if graphbolt_or_none() is not None:
        pytest.skip("GraphBolt loads here")
    with pytest.raises(ImportError, match=r"IBPFeature needs DGL's GraphBolt"):
        idgl.IBPFeature
    with pytest.raises(AttributeError, match=r"has no attribute 'Nope'"):
        idgl.Nope


# ---- FeatureStorage ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_storage_fetch_bit_identical(dtype):
    x = special_matrix(dtype, 150, 9, seed=5)
    st = idgl.IBPFeatureStorage(x)
    assert isinstance(st, dgl.storages.FeatureStorage) and not st.requires_ddp()
    idx = torch.tensor([149, 0, 7, 7, 64])
    assert_bits_equal(st.fetch(idx, "cpu"), x[idx])
    assert_bits_equal(st.fetch(idx.int(), torch.device("cpu"), pin_memory=True), x[idx])
    assert_bits_equal(st.fetch(idx.numpy(), "cpu"), x[idx])
    assert st.fetch(torch.empty(0, dtype=torch.long), "cpu").shape == (0, 9)
    assert st.raw_bytes_read == 15 * 9 * x.element_size()


def test_storage_sources_counters_and_errors(tmp_path):
    x = bag_of_words(300, 40, seed=1)
    ct = ibp_gnn.compress(x)
    path = ct.save(tmp_path / "x.ibp")
    idx = torch.tensor([3, 299, 3])
    for src in (x, x.numpy(), ct, path, str(path)):
        st = idgl.IBPFeatureStorage(src)
        assert_bits_equal(st.fetch(idx, "cpu"), x[idx])
    assert st.bytes_read == ct.fetch_nbytes(idx) and st.raw_bytes_read == 3 * 40 * 4
    st.reset_counters()
    assert st.bytes_read == st.raw_bytes_read == 0
    assert "IBPFeatureStorage(CompressedTensor(shape=(300, 40)" in repr(st)
    with pytest.raises(IndexError, match=r"out of range for 300 rows"):
        st.fetch(torch.tensor([300]), "cpu")
    with pytest.raises(TypeError, match=r"ids must hold integer node ids, got torch.float32"):
        st.fetch(torch.tensor([1.0]), "cpu")
    with pytest.raises(ValueError, match=r"IBPFeatureStorage: features must be 2-D"):
        idgl.IBPFeatureStorage(torch.arange(5))
    with pytest.raises(TypeError, match=r"features must be a torch.Tensor.*got list"):
        idgl.IBPFeatureStorage([[1.0]])
    with pytest.raises(ValueError, match=r"device must be cpu or cuda, got meta"):
        st.fetch(idx, "meta")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"torch.cuda.is_available\(\) is False"):
            st.fetch(idx, "cuda")


# ---- the classic dgl.dataloading path ------------------------------------------------------------
def random_graph(n=400, e=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (2, e), generator=g)
    return dgl.graph((src, dst), num_nodes=n)


def test_fetch_block_features_with_dataloader():
    g = random_graph()
    x = bag_of_words(400, 32, seed=2)
    y = torch.arange(400)
    st = idgl.IBPFeatureStorage(x)
    sampler = dgl.dataloading.NeighborSampler([5, 3])
    loader = dgl.dataloading.DataLoader(g, torch.arange(0, 400, 2), sampler, batch_size=64,
                                        shuffle=True)
    seen = 0
    for input_nodes, output_nodes, blocks in loader:
        idgl.fetch_block_features(blocks, {"feat": st}, labels={"label": y})
        assert_bits_equal(blocks[0].srcdata["feat"], x[input_nodes])
        assert torch.equal(blocks[-1].dstdata["label"], output_nodes)
        seen += output_nodes.numel()
    assert seen == 200
    with pytest.raises(TypeError, match=r"storages must be a dict"):
        idgl.fetch_block_features(blocks, st)


class WithLazyFeatures(dgl.dataloading.Sampler):
    """Appends LazyFeature(name, input_nodes) to a block sampler's output, so
    DGL's own prefetcher fetches them from storages given with attach_data."""

    def __init__(self, sampler, names):
        super().__init__()
        self.sampler, self.names = sampler, names

    def sample(self, g, indices):
        input_nodes, output_nodes, blocks = self.sampler.sample(g, indices)
        return (input_nodes, output_nodes, blocks,
                *[dgl.dataloading.LazyFeature(n, input_nodes) for n in self.names])


def test_attach_data_prefetches_from_storage():
    g = random_graph(seed=3)
    x = bag_of_words(400, 16, seed=3)
    st = idgl.IBPFeatureStorage(x)
    loader = dgl.dataloading.DataLoader(
        g, torch.arange(400), WithLazyFeatures(dgl.dataloading.NeighborSampler([4, 4]), ["x"]),
        batch_size=100)
    loader.attach_data("x", st)
    n = 0
    for input_nodes, _, blocks, feats in loader:
        assert_bits_equal(feats, x[input_nodes])
        n += 1
    assert n == 4 and st.bytes_read > 0


def test_prefetcher_transform_for_dgl():
    from ibp_gnn.prefetch import Prefetcher

    g = random_graph(seed=4)
    x = bag_of_words(400, 16, seed=4)
    st = idgl.IBPFeatureStorage(x)
    loader = dgl.dataloading.DataLoader(g, torch.arange(400), dgl.dataloading.NeighborSampler([3]),
                                        batch_size=128)
    pf = Prefetcher(loader, "cpu", stores=[st],
                    transform=lambda b: (*b[:2], idgl.fetch_block_features(b[2], {"feat": st})))
    for input_nodes, _, blocks in pf:
        assert_bits_equal(blocks[0].srcdata["feat"], x[input_nodes])
    assert pf.last.batches == 4 and 0 < pf.last.bytes_read < pf.last.raw_bytes_read


@pytest.mark.parametrize("holder", ["compressed_tensor", "storage"])
def test_ndata_assignment_and_stock_prefetch_fetch_from_the_compressed_store(holder):
    g = random_graph(seed=6)
    x = bag_of_words(400, 48, seed=6)
    feat = ibp_gnn.compress(x) if holder == "compressed_tensor" else idgl.IBPFeatureStorage(x)
    g.ndata["feat"] = feat
    assert g.ndata["feat"] is feat  # kept compressed, not decoded
    calls = []
    real_gather = type(feat).gather

    def counting_gather(self, *args, **kwargs):
        calls.append(1)
        return real_gather(self, *args, **kwargs)

    sampler = dgl.dataloading.NeighborSampler([4, 3], prefetch_node_feats=["feat"])
    loader = dgl.dataloading.DataLoader(g, torch.arange(400), sampler, batch_size=128)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(feat), "gather", counting_gather)
        n = 0
        for input_nodes, _, blocks in loader:
            assert_bits_equal(blocks[0].srcdata["feat"], x[input_nodes])
            n += 1
    assert n == 4 and len(calls) >= 4  # each batch's rows came from the compressed store
    if holder == "storage":
        assert 0 < feat.bytes_read < feat.raw_bytes_read
    # no prefetch: DGL slices the column lazily when a block's srcdata is read
    for input_nodes, _, blocks in dgl.dataloading.DataLoader(
            g, torch.arange(400), dgl.dataloading.NeighborSampler([4]), batch_size=200):
        assert_bits_equal(blocks[0].srcdata["feat"], x[input_nodes])
    # layer-wise inference's feat[input_nodes] and .to(device)
    f = g.ndata["feat"].to("cpu")
    assert_bits_equal(f[torch.tensor([399, 0, 7])], x[[399, 0, 7]])


def test_ndata_whole_feature_operations_say_what_to_do():
    g = random_graph(seed=7)
    g.ndata["feat"] = ibp_gnn.compress(bag_of_words(400, 8, seed=7))
    with pytest.raises(TypeError, match=r"Tensor.contiguous does not run on compressed rows.*gather the rows"):
        g.update_all(dgl.function.copy_u("feat", "m"), dgl.function.sum("m", "h"))
    with pytest.raises(TypeError, match=r"torch.linear does not run on compressed rows"):
        torch.nn.functional.linear(g.ndata["feat"], torch.zeros(2, 8))


@needs_gpu
def test_dataloader_use_uva():
    g = random_graph(seed=5)
    x = bag_of_words(400, 32, seed=5)
    st = idgl.IBPFeatureStorage(x)
    for use_uva in (False, True):
        loader = dgl.dataloading.DataLoader(
            g, torch.arange(400, device="cuda"), dgl.dataloading.NeighborSampler([4, 2]),
            batch_size=64, device="cuda", use_uva=use_uva)
        for input_nodes, _, blocks in loader:
            idgl.fetch_block_features(blocks, {"feat": st})
            assert blocks[0].srcdata["feat"].is_cuda
            assert_bits_equal(blocks[0].srcdata["feat"].cpu(), x[input_nodes.cpu()])


# ---- training: same losses as the uncompressed features ------------------------------------------
def planetoid(name):
    root = shared_dir()
    if root is None or not (root / name / f"ind.{name}.graph").is_file():
        pytest.skip(f"../shared/datasets/{name} is not present")
    from torch_geometric.io import read_planetoid_data

    return read_planetoid_data(str(root / name), name)


class Net(torch.nn.Module):
    def __init__(self, kind, d_in, classes):
        super().__init__()
        from dgl.nn import GATConv, SAGEConv

        self.kind = kind
        if kind == "sage":
            self.convs = torch.nn.ModuleList([SAGEConv(d_in, 32, "mean"),
                                              SAGEConv(32, classes, "mean")])
        else:
            self.convs = torch.nn.ModuleList([GATConv(d_in, 16, num_heads=2),
                                              GATConv(32, classes, num_heads=1)])

    def forward(self, blocks, h):
        for i, (conv, block) in enumerate(zip(self.convs, blocks)):
            h = conv(block, (h, h[:block.num_dst_nodes()]))
            if self.kind == "gat":
                h = h.flatten(1) if i == 0 else h.mean(1)
            if i == 0:
                h = torch.nn.functional.dropout(torch.relu(h), 0.5, self.training)
        return h


@pytest.mark.parametrize("name", ["cora", "citeseer"])
@pytest.mark.parametrize("kind", ["sage", "gat"])
def test_training_losses_match_uncompressed(name, kind):
    """Every batch's features from the compressed store equal the raw rows bit for
    bit, so two identical models trained on the same blocks, one per source, give
    the same losses exactly (each step runs under the same dropout seed)."""
    data = planetoid(name)
    g = dgl.graph((data.edge_index[0], data.edge_index[1]), num_nodes=data.num_nodes)
    g.ndata["feat"] = data.x  # the uncompressed baseline
    st = idgl.IBPFeatureStorage(data.x)
    assert st.ct.nbytes * 10 < data.x.nbytes
    classes = int(data.y.max()) + 1
    models, opts = [], []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(Net(kind, data.num_features, classes))
        opts.append(torch.optim.Adam(models[-1].parameters(), lr=0.01))
    loader = dgl.dataloading.DataLoader(
        g, data.train_mask.nonzero().view(-1), dgl.dataloading.NeighborSampler([10, 5]),
        batch_size=32, shuffle=True)
    losses = ([], [])
    step = 0
    for _ in range(3):
        for input_nodes, output_nodes, blocks in loader:
            raw = g.ndata["feat"][input_nodes]
            ours = st.fetch(input_nodes, "cpu")
            assert torch.equal(bits(ours), bits(raw))
            for k, (h, model, opt) in enumerate(zip((raw, ours), models, opts)):
                with torch.random.fork_rng():
                    torch.manual_seed(step)
                    opt.zero_grad()
                    out = model(blocks, h)
                    loss = torch.nn.functional.cross_entropy(out, data.y[output_nodes])
                    loss.backward()
                    opt.step()
                losses[k].append(loss.item())
            step += 1
    assert step >= 12
    assert losses[0] == losses[1]


# ---- GraphBolt Feature -----------------------------------------------------------------------------
def check_feature_protocol(f, x):
    idx = torch.tensor([4, 0, 4, 99])
    assert_bits_equal(f.read(idx), x[idx])
    assert_bits_equal(f.read(), x)
    assert f.size() == torch.Size([x.shape[1]]) and f.count() == x.shape[0]
    assert f.read_async_num_stages(torch.device("cpu")) == 1
    stages = list(f.read_async(idx))
    assert len(stages) == f.read_async_num_stages(idx.device)
    assert_bits_equal(stages[-1].wait(), x[idx])
    assert f.metadata() == {"num_classes": 3}
    f.update(torch.ones(2, x.shape[1], dtype=x.dtype), torch.tensor([1, 3]))
    y = x.clone()
    y[[1, 3]] = 1
    assert_bits_equal(f.read(), y)
    f.update(x[:50])
    assert f.count() == 50
    with pytest.raises(ValueError, match=r"IBPFeature.update: value has shape \(1, 7\)"):
        f.update(torch.ones(1, 7, dtype=x.dtype), torch.tensor([0, 1]))


def test_feature_protocol_without_graphbolt():
    """The methods GraphBolt calls, on the implementation IBPFeature adds to
    GraphBolt's Feature base (GraphBolt itself does not load at every torch version)."""
    x = special_matrix(torch.float32, 100, 6, seed=1)
    check_feature_protocol(idgl._FeatureImpl(x, metadata={"num_classes": 3}), x)


@needs_graphbolt
def test_ibp_feature_in_graphbolt():
    gb = graphbolt_or_none()
    x = special_matrix(torch.float32, 100, 6, seed=2)
    f = idgl.IBPFeature(x, metadata={"num_classes": 3})
    assert isinstance(f, gb.Feature)
    store = gb.BasicFeatureStore({("node", None, "feat"): f})
    idx = torch.tensor([1, 2, 99])
    assert_bits_equal(store.read("node", None, "feat", idx), x[idx])
    check_feature_protocol(idgl.IBPFeature(x, metadata={"num_classes": 3}), x)


@needs_gpu
@needs_graphbolt
def test_ibp_feature_under_gpu_cache():
    gb = graphbolt_or_none()
    x = bag_of_words(1000, 32, seed=3)
    f = idgl.IBPFeature(x)
    cached = gb.gpu_cached_feature(f, 64 * 32 * 4)
    for _ in range(3):
        idx = torch.randint(0, 1000, (200,), device="cuda")
        assert_bits_equal(cached.read(idx).cpu(), x[idx.cpu()])


@needs_gpu
def test_feature_read_cuda_ids():
    x = bag_of_words(500, 24, seed=6)
    f = idgl._FeatureImpl(x)
    idx = torch.tensor([7, 499, 7], device="cuda")
    assert_bits_equal(f.read(idx).cpu(), x[idx.cpu()])
    (fut,) = list(f.read_async(idx))
    assert_bits_equal(fut.wait().cpu(), x[idx.cpu()])
