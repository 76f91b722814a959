"""Out-of-core preparation against the in-memory reference on small graphs: the
chunked CSC build across chunk and bucket borders, repeated edges and self
loops, every edge source (npz deflated/stored, [2, E]/[E, 2]/Fortran, csv,
npy memory maps), the int32/int64 index choice, resume after a kill (in a
subprocess), atomic cache files, caches tied to their sources' identity, and
synthetic-papers through OGB's code path and train(cfg)."""
import gzip
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
import ibp_gnn.datasets._cache as DC
import ibp_gnn.datasets.csc as CSC
from ibp_gnn.datasets import (IGB, ArrayEdges, CSVEdges, DatasetError, NpzEdges, SyntheticPapers,
                              build_csc, csc_reference, file_identity, index_dtype, memory_budget,
                              npy_edges, open_csc)
from ibp_gnn.stores import IBPStore, RawStore

ROOT = Path(__file__).resolve().parent.parent


def messy_edges(n, m, seed=0):
    """Random edges with repeats (both orientations) and self loops."""
    rng = np.random.default_rng(seed)
    e = rng.integers(0, n, (2, m))
    k = m // 5
    e[:, :k] = e[:, k:2 * k]            # exact repeats
    e[:, 2 * k:3 * k] = e[::-1, k:2 * k]  # reversed repeats
    e[1, 3 * k:3 * k + k // 2] = e[0, 3 * k:3 * k + k // 2]  # self loops
    return e


def built(tmp_path, edges, n, undirected, **kw):
    folder = tmp_path / f"csc{len(list(tmp_path.glob('csc*')))}"
    info = build_csc(edges, n, folder, undirected=undirected, progress=False, **kw)
    ip, ix = open_csc(folder)
    return info, np.asarray(ip), np.asarray(ix), folder


@pytest.mark.parametrize("undirected", [True, False])
@pytest.mark.parametrize("chunk,bucket", [(1, 1), (7, 13), (299, 300), (300, 10**6),
                                          (301, 57), (10**6, 10**6)])
def test_chunked_build_equals_reference(tmp_path, undirected, chunk, bucket):
    n = 40  # nodes 37..39 get no edges: empty rows at the end
    e = messy_edges(37, 300)
    info, ip, ix, folder = built(tmp_path, e, n, undirected, chunk_edges=chunk,
                                 bucket_entries=bucket)
    rp, rx = csc_reference(e, n, undirected)
    assert np.array_equal(ip, rp) and np.array_equal(ix, rx)
    assert ip.dtype == np.int64 and ix.dtype == np.int32
    assert info["num_edges"] == len(rx) and info["source_edges"] == 300
    if undirected:  # no repeats, no self loops, both directions
        col = np.repeat(np.arange(n), np.diff(ip))
        pairs = set(zip(ix.tolist(), col.tolist()))
        assert len(pairs) == len(ix) and all(a != b for a, b in pairs)
        assert all((b, a) in pairs for a, b in pairs)
    else:
        assert len(ix) == 300  # everything as given
    if bucket < 300:
        assert info["buckets"] > 1
    assert sorted(p.name for p in folder.iterdir()) == ["csc_indices.npy", "csc_indptr.npy",
                                                        "phase-csc.json"]


def test_empty_and_edgeless_graphs(tmp_path):
    for n in (0, 1, 5):
        info, ip, ix, _ = built(tmp_path, np.zeros((2, 0), np.int64), n, True)
        assert ip.tolist() == [0] * (n + 1) and ix.size == 0 and info["num_edges"] == 0
    _, ip, ix, _ = built(tmp_path, np.array([[2, 2], [2, 2]]), 3, True)  # self loops only
    assert ip.tolist() == [0, 0, 0, 0] and ix.size == 0


def test_index_dtype_choice(tmp_path, monkeypatch):
    assert index_dtype(2**31 - 1) == np.int32 and index_dtype(2**31) == np.int64
    e = messy_edges(50, 400, seed=4)
    rp, rx = csc_reference(e, 50, True)
    monkeypatch.setattr(CSC, "index_dtype", lambda n: np.dtype(np.int64))  # as for N >= 2^31
    _, ip, ix, folder = built(tmp_path, e, 50, True, chunk_edges=33, bucket_entries=70)
    assert ix.dtype == np.int64 and np.array_equal(ix, rx) and np.array_equal(ip, rp)
    assert np.load(folder / "csc_indices.npy").dtype == np.int64


def test_bad_ids_name_the_source(tmp_path):
    with pytest.raises(DatasetError, match=r"mine.*node id 9, outside \[0, 9\)"):
        build_csc(ArrayEdges(np.array([[0, 1], [9, 2]]), name="mine"), 9, tmp_path,
                  undirected=True, progress=False)
    with pytest.raises(DatasetError, match="node id -1"):
        build_csc(np.array([[0, -1], [1, 2]]), 9, tmp_path, undirected=False, progress=False)
    with pytest.raises(DatasetError, match="integers"):
        ArrayEdges(np.zeros((2, 3), np.float32))
    assert not list(tmp_path.glob("*.tmp*")) and not (tmp_path / "csc_indptr.npy").exists()


def test_edge_sources_stream_like_the_array(tmp_path):
    n = 60
    e = messy_edges(n, 500, seed=2)
    rp, rx = csc_reference(e, n, True)
    sources = []
    for i, (save, arr) in enumerate([(np.savez_compressed, e), (np.savez, e),
                                     (np.savez_compressed, e.T.copy()),
                                     (np.savez_compressed, np.asfortranarray(e)),
                                     (np.savez, np.asfortranarray(e.T))]):
        p = tmp_path / f"d{i}.npz"
        save(p, edge_index=arr.astype(np.int32 if i == 1 else np.int64))
        sources.append(NpzEdges(p, "edge_index"))
    np.save(tmp_path / "e.npy", e.T.copy())
    sources.append(npy_edges(tmp_path / "e.npy"))
    with gzip.open(tmp_path / "edge.csv.gz", "wt") as f:
        np.savetxt(f, e.T, delimiter=",", fmt="%d")
    sources.append(CSVEdges(tmp_path / "edge.csv.gz"))
    for src in sources:
        _, ip, ix, _ = built(tmp_path, src, n, True, chunk_edges=37, bucket_entries=111)
        assert np.array_equal(ip, rp) and np.array_equal(ix, rx), src.name
    # A deflated [2, E] member is read through two streams, never loaded whole.
    chunks = list(sources[0].chunks(64))
    assert max(len(s) for s, _ in chunks) == 64
    assert np.array_equal(np.concatenate([s for s, _ in chunks]), e[0])
    assert np.array_equal(np.concatenate([d for _, d in chunks]), e[1])


def test_completed_build_is_reused_and_tied_to_the_source(tmp_path, monkeypatch):
    p = tmp_path / "e.npy"
    np.save(p, messy_edges(30, 200))
    folder = tmp_path / "c"
    build_csc(npy_edges(p), 30, folder, undirected=True, progress=False)
    calls = []
    orig = CSC._buckets
    monkeypatch.setattr(CSC, "_buckets", lambda *a: calls.append(1) or orig(*a))
    build_csc(npy_edges(p), 30, folder, undirected=True, progress=False)
    assert calls == []  # the phase marker matched
    e2 = messy_edges(30, 200, seed=9)
    np.save(p, e2)  # same shape, new edges: a new identity
    build_csc(npy_edges(p), 30, folder, undirected=True, progress=False)
    assert calls == [1]
    rp, rx = csc_reference(e2, 30, True)
    assert np.array_equal(open_csc(folder)[1], rx)


def test_memory_budget_knob(monkeypatch):
    assert memory_budget("4GB") == 4 << 30 and memory_budget(64 << 20) == 64 << 20
    assert memory_budget("1.5 GiB") == 3 << 29
    monkeypatch.setenv("IBP_PREP_MEMORY", "512MB")
    assert memory_budget() == 512 << 20
    monkeypatch.delenv("IBP_PREP_MEMORY")
    assert memory_budget() == DC.DEFAULT_MEMORY_BUDGET
    for bad in ("lots", "1KB", -5, 1.5):
        with pytest.raises(DatasetError, match="memory_budget"):
            memory_budget(bad)
    # The budget sets the chunk and bucket sizes, whatever the graph's size.
    assert CSC._budget_sizes(1 << 30) == ((1 << 30) // 128, (1 << 30) // 40)


# ---- atomic files (issue 11 item 6) -------------------------------------------------------------
def test_save_npy_and_json_are_atomic_between_threads(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(DC.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    target, meta = tmp_path / "a.npy", tmp_path / "m.json"
    errors = []

    def work(i):
        try:
            for j in range(6):
                DC._save_npy(target, np.full(5000, i * 100 + j, np.int64))
                DC._save_json(meta, {"i": i, "j": j, "pad": "x" * 5000})
        except BaseException as e:  # pragma: no cover - the failure being tested
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    a = np.load(target)
    assert len(set(a.tolist())) == 1 and json.loads(meta.read_text())["pad"] == "x" * 5000
    assert not list(tmp_path.glob("*.tmp*"))
    assert len(synced) >= 2 * 8 * 6  # each file fsynced before its rename
    names = {DC._tmp(target).name for _ in range(100)}
    assert len(names) == 100


# ---- caches tied to the identity of their sources (issue 11 item 7) ----------------------------
def _igb(tmp_path, x, y, e):
    base = tmp_path / "igb" / "tiny" / "processed"
    (base / "paper").mkdir(parents=True, exist_ok=True)
    (base / "paper__cites__paper").mkdir(exist_ok=True)
    np.save(base / "paper" / "node_feat.npy", x)
    np.save(base / "paper" / "node_label_19.npy", y.astype(np.float32))
    np.save(base / "paper__cites__paper" / "edge_index.npy", e.T.copy())
    return base / "paper" / "node_feat.npy"


def test_features_used_in_place_are_recompressed_when_they_change(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((200, 16)) < 0.2).astype(np.float32)
    y, e = rng.integers(0, 19, 200), rng.integers(0, 200, (2, 800))
    feat = _igb(tmp_path, x, y, e)
    ds = IGB(tmp_path / "cache", size="tiny", root=tmp_path / "igb")
    g = ds.prepare(progress=False)
    assert g.features.path == feat  # mapped in place
    ids = torch.arange(200)
    assert torch.equal(IBPStore(g).gather(ids), torch.from_numpy(x))
    first = g.compressed(progress=False)
    assert g.compressed(progress=False) == first and file_identity(first)["inode"] == \
        file_identity(g.compressed(progress=False))["inode"]  # reused while unchanged

    x2 = (rng.random((200, 16)) < 0.2).astype(np.float32)  # same shape, new values
    _igb(tmp_path, x2, y, e)
    # The same GraphData notices through the identity recorded beside the .ibp file.
    assert torch.equal(IBPStore(g).gather(ids), torch.from_numpy(x2))
    # A new prepare() notices through meta.json's record of the inputs, and rebuilds.
    g2 = ds.prepare(progress=False)
    assert torch.equal(IBPStore(g2).gather(ids), torch.from_numpy(x2))
    assert torch.equal(RawStore(g2).gather(ids), torch.from_numpy(x2))
    y3 = (y + 1) % 19
    _igb(tmp_path, x2, y3, e)
    assert torch.equal(ds.prepare(progress=False).y, torch.from_numpy(y3))


# ---- resume after a kill ---------------------------------------------------------------------
KILL_SCRIPT = r"""
import os, signal, sys
import ibp_gnn.datasets.csc as CSC
from ibp_gnn.datasets import SyntheticPapers

orig = CSC._npy_header
def header(*a):  # the CSC's third pass starts: spill files written, nothing published
    os.kill(os.getpid(), signal.SIGKILL)
CSC._npy_header = header
SyntheticPapers(sys.argv[1], root=sys.argv[2], scale=float(sys.argv[3]),
                labeled_fraction=0.3).prepare(progress=False)
"""


def test_resume_after_kill_in_a_subprocess(tmp_path):
    scale = 2e-5  # 2,221 nodes, 32,314 edges
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               IBP_PREP_MEMORY="16MB")
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "cache"),
                        str(tmp_path / "raw"), str(scale)], env=env, capture_output=True,
                       timeout=300)
    assert r.returncode == -9, r.stderr.decode()[-2000:]
    ds = SyntheticPapers(tmp_path / "cache", root=tmp_path / "raw", scale=scale,
                         labeled_fraction=0.3)
    folder = ds.cache_folder
    left = sorted(p.name for p in folder.iterdir())
    assert "meta.json" not in left and "phase-unpack-features.json" in left
    assert any(".tmp" in name for name in left)  # the killed build's work folder
    unpacked = file_identity(folder / "features.npy")

    g = ds.prepare(progress=False)
    assert file_identity(folder / "features.npy") == unpacked  # the finished phase is kept
    assert not list(folder.glob("*.tmp*"))
    npz = ds.dataset_dir / "raw" / "data.npz"
    with np.load(npz) as z:
        rp, rx = csc_reference(z["edge_index"], g.num_nodes, True)
        assert np.array_equal(g.features.open(), z["node_feat"])
    assert np.array_equal(g.indptr, rp) and np.array_equal(g.indices, rx)


# ---- synthetic-papers ---------------------------------------------------------------------------
def test_synthetic_papers_in_ogb_layout(tmp_path):
    from ogb.nodeproppred import NodePropPredDataset

    ds = SyntheticPapers(tmp_path / "cache", root=tmp_path / "raw", scale=3e-5,
                         labeled_fraction=0.2)
    g = ds.prepare(progress=False)
    d = ds.dataset_dir
    assert g.num_nodes == 3332 and g.num_classes == 172 and g.num_features == 128
    # The folder is what ogb's own reader expects.
    (d / "processed").mkdir()
    ref = NodePropPredDataset(name="ogbn-papers100M", root=str(d.parent))
    graph, labels = ref[0]
    assert np.array_equal(graph["node_feat"], g.features.open())
    assert graph["node_feat"].dtype == np.float32
    lab = labels[:, 0]
    assert np.array_equal(np.where(np.isnan(lab), -1, lab).astype(np.int64), g.y.numpy())
    split = ref.get_idx_split()
    for ours, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        assert np.array_equal(g.split[ours].numpy(), split[theirs]) and len(split[theirs])
    rp, rx = csc_reference(graph["edge_index"], g.num_nodes, True)
    assert np.array_equal(g.indptr, rp) and np.array_equal(g.indices, rx)
    # Power-law degrees and class structure; features like embeddings, not noise.
    deg = np.diff(g.indptr)
    assert deg.max() > 10 * deg.mean()
    x = g.features.open()
    exps = ((x.view(np.uint32) >> 23) & 0xFF).ravel()
    p = np.bincount(exps) / exps.size
    p = p[p > 0]
    assert 2.0 < -(p * np.log2(p)).sum() < 3.5
    sv = np.linalg.svd(x - x.mean(0), compute_uv=False)
    assert sv[:16].sum() ** 2 / (sv ** 2).sum() > 0.5 * 16  # low-rank plus noise
    ratio = ibp_gnn.load(g.compressed(progress=False)).ratio
    assert 1.0 < ratio < 1.5  # dense fp32 embeddings: ~1.1-1.2x lossless
    # Regenerated deterministically; memory-mapped CSC, int32 indices.
    again = SyntheticPapers(tmp_path / "c2", root=tmp_path / "raw2", scale=3e-5,
                            labeled_fraction=0.2).prepare(progress=False)
    assert np.array_equal(again.indices, g.indices) and isinstance(g.indices, np.memmap)
    assert g.indices.dtype == np.int32


def test_train_on_tiny_synthetic_papers(tmp_path):
    from hydra import compose, initialize_config_dir

    from ibp_gnn.train import train

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'out'}",
            "dataset=synthetic-papers", "dataset.scale=4e-5", "dataset.labeled_fraction=0.3",
            "dataset.compress_raw=false", "dataset.memory_budget=32MB", "store.verify=background",
            "trainer.epochs=1", "trainer.progress=false", "model.hidden=16",
            "loader.batch_size=256", "loader.fanouts=[5,5]", "trainer.limit_eval_batches=2"])
    m = train(cfg)
    assert m["status"] == "ok" and m["dataset"] == "synthetic-papers"
    assert m["num_nodes"] == 4442 and m["num_features"] == 128
    assert m["epochs"][0]["steps"] == len(m["batch_losses"]) > 0
    assert np.isfinite(m["final_loss"])

    # Bit rot in the cached .ibp (same size, inode and mtime: the cache still trusts it)
    # is caught by the background CRC check before the first epoch ends.
    (ibp,) = (tmp_path / "data" / "prepared").glob("synthetic-papers-*/features.ibp-*.ibp")
    st = ibp.stat()
    with open(ibp, "r+b") as f:
        f.seek(st.st_size - 7)
        b = f.read(1)
        f.seek(st.st_size - 7)
        f.write(bytes([b[0] ^ 0x10]))
    os.utime(ibp, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ibp_gnn.ChecksumError, match="background check"):
        train(cfg)


def test_training_views_the_cached_csc_and_verifies_in_the_background(tmp_path):
    from ibp_gnn.sampler import NeighborSampler

    ds = SyntheticPapers(tmp_path / "cache", root=tmp_path / "raw", scale=2e-5,
                         labeled_fraction=0.3, compress_raw=False)
    g = ds.prepare(progress=False)
    assert g.features.path.name == "data.npz"  # a stored member is mapped in place
    fs, gs = g.to_remote()
    sampler = NeighborSampler((fs, gs), [4, 4], seed=0)
    # One copy of the graph: the sampler reads the memory maps themselves, unpermuted.
    assert sampler.graph.indices.data_ptr() == g.indices.ctypes.data
    assert sampler.graph.indptr.data_ptr() == g.indptr.ctypes.data
    assert sampler.edge_permutation is None

    path = g.compressed(progress=False)
    store = IBPStore(path, verify="background")
    assert store.check_verified() is True
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # a payload bit flips on disk
    bad = tmp_path / "bad.ibp"
    bad.write_bytes(bytes(raw))
    store = IBPStore(bad, verify="background")  # returns before the CRCs are read
    with pytest.raises(ibp_gnn.ChecksumError, match="background check.*bad.ibp"):
        store.check_verified()
    with pytest.raises(ValueError, match="store.verify"):
        IBPStore(path, verify="later")
