"""Dataset preparation: OGB datasets in ogb's own on-disk layout (written here,
offline), their conversion, cache and codec-version keys, interrupted runs,
and the other sources (MAG240M, IGB, npz, local folders, synthetic)."""
import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn
import ibp_gnn.data as D
import ibp_gnn.datasets.base as DB
import ibp_gnn.datasets.ogb as DO
from ibp_gnn.stores import IBPStore, RawStore

pytest.importorskip("ogb")

ROOT = Path(__file__).resolve().parent.parent


def _csv_gz(path: Path, rows, fmt="%d"):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(rows)
    if a.ndim == 1:
        a = a[:, None]
    with gzip.open(path, "wt") as f:
        np.savetxt(f, a, delimiter=",", fmt=fmt)


def tiny_graph(n=300, f=24, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    e = rng.integers(0, n, (2, 4 * n))
    e = e[:, e[0] != e[1]]
    x = np.round(rng.standard_normal((n, f)), 4).astype(np.float32)
    x[:, : f // 2] = (rng.random((n, f // 2)) < 0.1)  # a sparse, compressible half
    x[np.arange(n), f // 2 + y % (f // 2)] += 2.0  # some label signal
    return x, e, y


def write_ogb_csv_zip(root: Path, name="ogbn-arxiv", n=300, f=24):
    """The zip ogb downloads for a csv-format dataset (arxiv.zip -> arxiv/raw/..., split/...)
    placed where ogb's download_url looks first (root/arxiv.zip)."""
    meta = D.ogb_meta(name)
    x, e, y = tiny_graph(n, f, int(meta["num classes"]))
    src = root / "_build" / meta["download_name"]
    raw = src / "raw"
    _csv_gz(raw / "edge.csv.gz", e.T)
    _csv_gz(raw / "num-node-list.csv.gz", [n])
    _csv_gz(raw / "num-edge-list.csv.gz", [e.shape[1]])
    _csv_gz(raw / "node-feat.csv.gz", x, fmt="%.9g")  # round-trips float32
    _csv_gz(raw / "node-label.csv.gz", y)
    _csv_gz(raw / "node_year.csv.gz", np.full(n, 2020))
    perm = np.random.default_rng(1).permutation(n)
    split = src / "split" / meta["split"]
    for part, ids in (("train", perm[: n // 2]), ("valid", perm[n // 2: 3 * n // 4]),
                      ("test", perm[3 * n // 4:])):
        _csv_gz(split / f"{part}.csv.gz", np.sort(ids))
    (src / f"RELEASE_v{meta['version']}.txt").write_text("tiny test copy\n")
    zpath = root / Path(meta["url"]).name
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(src.rglob("*")):
            z.write(p, p.relative_to(src.parent))
    return x, e, y, perm


def write_ogb_binary_zip(root: Path, name="ogbn-papers100M", n=400, f=16, compressed=True):
    """papers100M-bin.zip: raw/data.npz (+ node-label.npz with NaN for unlabeled nodes)."""
    meta = D.ogb_meta(name)
    x, e, y = tiny_graph(n, f, 7, seed=3)
    src = root / "_build" / meta["download_name"]
    raw = src / "raw"
    raw.mkdir(parents=True)
    save = np.savez_compressed if compressed else np.savez
    save(raw / "data.npz", edge_index=e, num_nodes_list=np.array([n]),
         num_edges_list=np.array([e.shape[1]]), node_feat=x, node_year=np.full((n, 1), 2020))
    label = y.astype(np.float32)[:, None]
    label[::3] = np.nan  # unlabeled nodes
    np.savez_compressed(raw / "node-label.npz", node_label=label)
    labeled = np.flatnonzero(~np.isnan(label[:, 0]))
    perm = np.random.default_rng(2).permutation(labeled)
    k = len(perm)
    split = src / "split" / meta["split"]
    for part, ids in (("train", perm[: k // 2]), ("valid", perm[k // 2: 3 * k // 4]),
                      ("test", perm[3 * k // 4:])):
        _csv_gz(split / f"{part}.csv.gz", np.sort(ids))
    (src / f"RELEASE_v{meta['version']}.txt").write_text("tiny\n")
    with zipfile.ZipFile(root / Path(meta["url"]).name, "w") as z:
        for p in sorted(src.rglob("*")):
            z.write(p, p.relative_to(src.parent))
    return x, e, label[:, 0]


def _compose(overrides, tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.data_dir={tmp_path / 'data'}",
                                           f"paths.output_dir={tmp_path / 'out'}",
                                           "trainer.progress=false"] + list(overrides))


def test_ogb_csv_layout_converts_caches_and_trains(tmp_path, monkeypatch):
    ogb_root = tmp_path / "ogb"
    ogb_root.mkdir()
    x, e, y, _ = write_ogb_csv_zip(ogb_root)
    ds = D.OGBNodeDataset(tmp_path / "cache", name="ogbn-arxiv", root=ogb_root)
    g = ds.prepare(progress=False)

    # ogb's download_url took the zip from the folder, extract_zip unpacked it, and the
    # dataset folder is where NodePropPredDataset expects it.
    assert (ogb_root / "ogbn_arxiv" / "raw" / "edge.csv.gz").is_file()
    assert not (ogb_root / "arxiv.zip").exists()
    assert g.num_nodes == 300 and g.num_classes == 40
    assert np.array_equal(g.features.open(), x)
    assert torch.equal(g.y, torch.from_numpy(y))
    # Undirected: both directions of every original edge.
    pairs = set(map(tuple, g.edge_index.T.tolist()))
    assert all((a, b) in pairs and (b, a) in pairs for a, b in e.T.tolist())

    # The same folder read by ogb's own NodePropPredDataset gives the same data.
    from ogb.nodeproppred import NodePropPredDataset

    (ogb_root / "ogbn_arxiv" / "processed").mkdir(exist_ok=True)
    ref = NodePropPredDataset(name="ogbn-arxiv", root=str(ogb_root))
    graph, labels = ref[0]
    assert np.array_equal(graph["node_feat"], g.features.open())
    assert np.array_equal(labels[:, 0], g.y.numpy())
    assert np.array_equal(graph["edge_index"], e)
    ref_split = ref.get_idx_split()
    for ours, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        assert np.array_equal(g.split[ours].numpy(), ref_split[theirs])

    # Compressed once, bit-exact; the second prepare and compress read the cache only.
    path = g.compressed("auto", progress=False)
    ct = ibp_gnn.load(path, mmap=True)
    assert torch.equal(ct.decompress(), torch.from_numpy(x))

    def boom(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(DO, "_csv_features", boom)
    monkeypatch.setattr(DB, "build_csc", boom)
    monkeypatch.setattr(ibp_gnn, "compress_file", boom)
    g2 = ds.prepare(progress=False)
    assert g2.compressed("auto", progress=False) == path
    monkeypatch.undo()

    # A new codec format version compresses again (and drops the old file).
    monkeypatch.setattr(DB, "FORMAT_VERSION", ibp_gnn.FORMAT_VERSION + 1)
    new = g2.compressed("auto", progress=False)
    assert new != path and new.is_file() and not path.exists()
    monkeypatch.undo()

    # Training through train(cfg) on the prepared data (cache hit).
    from ibp_gnn.train import train

    cfg = _compose(["dataset=ogbn-arxiv", f"dataset.root={ogb_root}",
                    f"dataset.cache_dir={tmp_path / 'cache'}", "trainer.epochs=1",
                    "loader.batch_size=64", "model.hidden=32"], tmp_path)
    m = train(cfg)
    assert m["dataset"] == "ogbn-arxiv" and m["status"] == "ok" and m["store_ratio"] > 1.0
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_ogb_binary_layout_streams_npz(tmp_path):
    ogb_root = tmp_path / "ogb"
    ogb_root.mkdir()
    x, e, label = write_ogb_binary_zip(ogb_root)
    g = D.OGBNodeDataset(tmp_path / "cache", name="ogbn-papers100M", root=ogb_root,
                         undirected=False).prepare(progress=False)
    assert np.array_equal(g.features.open(), x)
    assert g.features.path.name == "features.npy"  # compressed npz member: unpacked in chunks
    # Directed: the CSC holds every edge as given (repeats too), each node's sources sorted.
    ip, ix = D.csc_reference(e, 400, undirected=False)
    assert np.array_equal(g.indptr, ip) and np.array_equal(g.indices, ix)
    assert g.indices.dtype == np.int32 and isinstance(g.indptr, np.memmap)
    assert sorted(map(tuple, g.edge_index.T.tolist())) == sorted(map(tuple, e.T.tolist()))
    assert (g.y[::3] == -1).all() and (g.y[1::3] >= 0).all()
    assert all((g.y[ids] >= 0).all() for ids in g.split.values())
    assert g.num_classes == 172


def test_uncompressed_npz_member_is_mapped_in_place(tmp_path):
    x = np.arange(60, dtype=np.float32).reshape(12, 5)
    npz = tmp_path / "data.npz"
    np.savez(npz, node_feat=x, other=np.zeros(3))
    src = D._npz_features(npz, "node_feat", tmp_path / "unused.npy", progress=False)
    assert src.path == npz and not (tmp_path / "unused.npy").exists()
    assert np.array_equal(src.open(), x)
    np.savez_compressed(npz, node_feat=x)
    src = D._npz_features(npz, "node_feat", tmp_path / "f.npy", progress=False)
    assert src.path == tmp_path / "f.npy" and np.array_equal(src.open(), x)


def test_missing_ogb_download_names_the_fix(tmp_path):
    ds = D.OGBNodeDataset(tmp_path / "cache", name="ogbn-arxiv", root=tmp_path / "ogb",
                          download=False)
    with pytest.raises(D.DatasetError, match="dataset.download"):
        ds.prepare(progress=False)
    with pytest.raises(D.DatasetError, match="ogbn-arxiv"):
        D.ogb_meta("ogbn-nope")


def test_interrupted_preparation_is_not_trusted(tmp_path, monkeypatch):
    ogb_root = tmp_path / "ogb"
    ogb_root.mkdir()
    write_ogb_csv_zip(ogb_root)
    ds = D.OGBNodeDataset(tmp_path / "cache", name="ogbn-arxiv", root=ogb_root)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(D.OGBNodeDataset, "_split", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ds.prepare(progress=False)
    folder = ds.cache_folder
    assert (folder / "features.npy").is_file() and not (folder / "meta.json").exists()
    (folder / "csc_indices.npy.tmp999").write_bytes(b"half a file")  # as if killed mid-write
    monkeypatch.undo()
    assert D._read_cache(folder, ds.source()) is None
    g = ds.prepare(progress=False)
    assert not list(folder.glob("*.tmp*"))
    assert D._read_cache(folder, json.loads(json.dumps(ds.source()))) is not None

    # An interrupted compression leaves no .ibp file and no temporary file.
    import ibp_gnn._encode as T

    monkeypatch.setattr(T, "_write_head", interrupted)
    with pytest.raises(KeyboardInterrupt):
        g.compressed("paper", progress=False)
    assert not g.ibp_path("paper").exists() and not list(folder.glob("*.tmp*"))
    monkeypatch.undo()
    assert g.compressed("paper", progress=False).is_file()

    # A truncated cache file is noticed through its recorded size.
    with open(folder / "y.npy", "ab") as f:
        f.write(b"x")
    assert D._read_cache(folder, json.loads(json.dumps(ds.source()))) is None


def test_mag240m_layout(tmp_path):
    d = tmp_path / "lsc" / "mag240m_kddcup2021"
    n, f = 120, 16
    x, e, y = tiny_graph(n, f, 153, seed=5)
    (d / "processed" / "paper").mkdir(parents=True)
    (d / "processed" / "paper___cites___paper").mkdir()
    np.save(d / "processed" / "paper" / "node_feat.npy", x.astype(np.float16))
    label = y.astype(np.float32)
    label[::2] = np.nan
    np.save(d / "processed" / "paper" / "node_label.npy", label)
    np.save(d / "processed" / "paper___cites___paper" / "edge_index.npy", e)
    torch.save({"paper": n, "author": 0, "institution": 0, "num_classes": 153}, d / "meta.pt")
    lab = np.flatnonzero(~np.isnan(label))
    torch.save({"train": torch.from_numpy(lab[:40]), "valid": torch.from_numpy(lab[40:]),
                "test": torch.from_numpy(np.arange(0, n, 2))}, d / "split_dict.pt")
    (d / "RELEASE_v1.txt").write_text("")
    g = D.MAG240M(tmp_path / "cache", root=tmp_path / "lsc").prepare(progress=False)
    assert g.features.path == d / "processed" / "paper" / "node_feat.npy"  # mapped in place
    assert g.features.dtype == np.float16 and g.num_classes == 153
    assert len(g.split["val"]) + len(g.split["test"]) == n // 2 - 40
    store = IBPStore(g)
    ids = torch.tensor([0, 5, 119, 5])
    assert torch.equal(store.gather(ids).view(torch.int16),
                       RawStore(g).gather(ids).view(torch.int16))


def test_igb_layout_and_missing_download(tmp_path):
    with pytest.raises(D.DatasetError, match="igb.download"):
        D.IGB(tmp_path / "cache", size="tiny", root=tmp_path / "igb").prepare(progress=False)
    with pytest.raises(D.DatasetError, match="dataset.size"):
        D.IGB(tmp_path / "cache", size="huge")
    base = tmp_path / "igb" / "tiny" / "processed"
    (base / "paper").mkdir(parents=True)
    (base / "paper__cites__paper").mkdir()
    x, e, y = tiny_graph(200, 32, 19, seed=7)
    np.save(base / "paper" / "node_feat.npy", x)
    np.save(base / "paper" / "node_label_19.npy", y.astype(np.float32))
    np.save(base / "paper__cites__paper" / "edge_index.npy", e.T.copy())
    g = D.IGB(tmp_path / "cache", size="tiny", root=tmp_path / "igb").prepare(progress=False)
    assert g.num_nodes == 200 and g.num_classes == 19
    assert [len(g.split[s]) for s in ("train", "val", "test")] == [120, 40, 40]
    assert torch.equal(g.y, torch.from_numpy(y))


def test_npz_and_local_folder(tmp_path):
    x, e, y = tiny_graph(150, 20, 4, seed=9)
    np.savez(tmp_path / "mine.npz", x=x, edge_index=e, y=y, train_idx=np.arange(0, 50),
             val_idx=np.arange(50, 100), test_idx=np.arange(100, 150))
    g = D.NPZ(tmp_path / "cache", path=tmp_path / "mine.npz").prepare(progress=False)
    assert g.name == "mine" and np.array_equal(g.features.open(), x)
    assert g.split["val"].tolist() == list(range(50, 100))

    folder = tmp_path / "local"
    folder.mkdir()
    np.save(folder / "features.npy", x)
    np.save(folder / "edge_index.npy", e.T.copy())  # [E, 2] is accepted
    labels = y.astype(np.float32)
    labels[:10] = np.nan
    np.save(folder / "labels.npy", labels)
    g = D.LocalFolder(tmp_path / "cache", path=folder).prepare(progress=False)
    assert g.features.path == folder / "features.npy"  # never copied
    assert sum(len(v) for v in g.split.values()) == 140
    with pytest.raises(D.DatasetError, match="labels.npy"):
        (folder / "labels.npy").unlink()
        D.LocalFolder(tmp_path / "cache2", path=folder).prepare(progress=False)


def test_shared_npz_layouts(tmp_path):
    from ibp_gnn.testing import shared_dir

    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared/datasets is absent (real graphs for this test)")
    g = D.NPZ(tmp_path / "c", path=shared / "cora_ml" / "cora_ml.npz").prepare(progress=False)
    assert (g.num_nodes, g.num_features, g.num_classes) == (2995, 2879, 7)
    actor = shared / "heterophilous_npz" / "actor.npz"
    g = D.NPZ(tmp_path / "c", path=actor).prepare(progress=False)
    assert (g.num_nodes, g.num_features) == (7600, 932) and len(g.split["train"]) > 0


def test_synthetic_is_deterministic_cached_and_has_structure(tmp_path):
    ds = D.Synthetic(tmp_path, num_nodes=3000, num_features=64, feature_kind="dense", seed=3)
    g = ds.prepare(progress=False)
    g2 = D.Synthetic(tmp_path / "other", num_nodes=3000, num_features=64, feature_kind="dense",
                     seed=3).prepare(progress=False)
    assert np.array_equal(g.indptr, g2.indptr) and np.array_equal(g.indices, g2.indices)
    assert np.array_equal(g.features.open(), g2.features.open())
    deg = torch.bincount(g.edge_index[1], minlength=g.num_nodes).float()
    assert deg.max() > 8 * deg.mean()  # heavy-tailed degrees
    homophily = (g.y[g.edge_index[0]] == g.y[g.edge_index[1]]).float().mean()
    assert homophily > 0.4  # far above 1/num_classes
    bow = D.Synthetic(tmp_path, num_nodes=500, num_features=128).prepare(progress=False)
    xb = bow.features.open()
    assert set(np.unique(xb)) <= {0.0, 1.0}
    assert ibp_gnn.load(bow.compressed(progress=False)).ratio > 4
    assert D.Synthetic(tmp_path, num_nodes=500, num_features=128).cache_folder == bow.cache_dir


def test_sorted_query_searchsorted_equals_numpy():
    """The generators' cache-friendly searchsorted returns numpy's answer for every
    query: ties, both ends, out-of-range values, short and long query arrays."""
    from ibp_gnn.datasets.synthetic import _searchsorted

    rng = np.random.default_rng(5)
    a = np.cumsum(rng.integers(0, 3, 50_000)).astype(np.float64)  # repeated values: ties
    for m in (0, 1, 100, 4096, 70_000):
        q = np.concatenate([rng.random(m) * (a[-1] + 2) - 1, a[rng.integers(0, len(a), m)]])
        got = _searchsorted(a, q)
        assert got.dtype == np.intp and np.array_equal(got, np.searchsorted(a, q))
