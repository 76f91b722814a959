"""OGB node property prediction datasets (in ogb's own on-disk layout) and
OGB-LSC MAG240M's paper citation graph."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ._cache import DatasetError, PathLike, _log
from .base import Dataset, GraphData, _labels, _write_cache
from .csc import CSVEdges, NpzEdges, npy_edges
from .features import FeatureSource, _csv_features, _npz_features, _read_csv_gz

# ---- OGB node property prediction ---------------------------------------------------------------
def ogb_meta(name: str) -> dict:
    """The row of ogb's master.csv for `name` (what NodePropPredDataset reads)."""
    import pandas as pd
    import ogb.nodeproppred

    master = pd.read_csv(Path(ogb.nodeproppred.__file__).parent / "master.csv", index_col=0,
                         keep_default_na=False)
    if name not in master:
        raise DatasetError(f"dataset.name={name!r} is not an OGB node dataset; ogb knows "
                           f"{list(master.keys())}")
    return dict(master[name])


class OGBNodeDataset(Dataset):
    """An OGB node property prediction dataset (ogbn-arxiv, ogbn-products,
    ogbn-papers100M), downloaded by ogb's own code into `root` exactly as
    ``ogb.nodeproppred.NodePropPredDataset`` lays it out (so a folder that
    ogb already downloaded is reused), then converted into the cache:

    * metadata from ogb's master.csv; download and extraction by
      ``ogb.utils.url.download_url`` / ``extract_zip`` (tqdm progress); the
      split by ``NodePropPredDataset.get_idx_split``;
    * edges and labels read as ogb reads them; the features streamed, never
      whole in memory: a binary dataset's ``data.npz`` member is memory-mapped
      in place when stored uncompressed, else unpacked in chunks to an .npy;
      ``node-feat.csv.gz`` is parsed in chunks to an .npy. Compression then
      reads that memory map once (``GraphData.compressed``).

    ``NodePropPredDataset`` itself is not instantiated: it loads the whole
    feature matrix into memory and saves a second copy with torch.save.
    """

    ogb_name: Optional[str] = None  # the OGB dataset whose layout is read (default: name)

    def __init__(self, cache_dir: PathLike, name: str = "ogbn-arxiv",
                 root: PathLike = "~/.cache/ibp_gnn/ogb", undirected: bool = True,
                 download: bool = True, memory_budget=None):
        super().__init__(cache_dir, memory_budget)
        self.name = name
        self.root = Path(os.path.expanduser(str(root)))
        self.undirected = bool(undirected)
        self.download = bool(download)

    @property
    def dataset_dir(self) -> Path:
        return self.root / "_".join(self.name.split("-"))

    def source(self) -> dict:
        return {"kind": "ogb", "name": self.name, "root": str(self.root.resolve()),
                "undirected": self.undirected}

    def _ensure_downloaded(self, meta: dict, progress: bool) -> Path:
        from ogb.utils.url import download_url, extract_zip

        d = self.dataset_dir
        needed = d / "raw" / ("data.npz" if meta["binary"] == "True" else "edge.csv.gz")
        if needed.is_file():
            return d
        if not self.download:
            raise DatasetError(f"dataset {self.name}: {needed} not found and dataset.download is "
                               "false; run with dataset.download=true (network needed) or put "
                               f"ogb's extracted folder at {d}")
        url = meta["url"]
        _log(f"downloading {url} with ogb into {self.root} (once; then cached)", progress)
        try:
            zip_path = download_url(url, str(self.root), log=progress)
        except Exception as e:
            raise DatasetError(f"dataset {self.name}: download of {url} failed ({e}); with no "
                               f"network, place {Path(url).name} in {self.root} or the extracted "
                               f"folder at {d}") from e
        staging = self.root / f"extract.tmp{os.getpid()}"
        try:
            extract_zip(zip_path, str(staging), log=progress)
            extracted = staging / meta["download_name"]
            if not extracted.is_dir():
                raise DatasetError(f"{zip_path} has no folder {meta['download_name']}/")
            if d.exists():
                shutil.rmtree(d)
            os.replace(extracted, d)  # appears complete or not at all
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        Path(zip_path).unlink(missing_ok=True)
        return d

    def _split(self, d: Path, meta: dict) -> Dict[str, np.ndarray]:
        from types import SimpleNamespace

        from ogb.nodeproppred import NodePropPredDataset

        # ogb's own split reader, on the folder laid out as NodePropPredDataset expects.
        ns = SimpleNamespace(root=str(d), meta_info=meta, is_hetero=meta["is hetero"] == "True")
        s = NodePropPredDataset.get_idx_split(ns)
        return {"train": np.asarray(s["train"]), "val": np.asarray(s["valid"]),
                "test": np.asarray(s["test"])}

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        meta = ogb_meta(self.ogb_name or self.name)
        if meta["is hetero"] == "True":
            raise DatasetError(f"dataset {self.name} is heterogeneous; only homogeneous OGB "
                               "node datasets (ogbn-arxiv, ogbn-products, ogbn-papers100M) "
                               "are supported")
        d = self._ensure_downloaded(meta, progress)
        raw = d / "raw"
        if meta["binary"] == "True":
            npz = raw / "data.npz"
            with np.load(npz) as z:
                num_nodes = int(z["num_nodes_list"].sum())
            edges = NpzEdges(npz, "edge_index")
            features = _npz_features(npz, "node_feat", folder / "features.npy", progress)
            with np.load(raw / "node-label.npz") as z:
                y = _labels(z["node_label"])
            inputs = [npz, raw / "node-label.npz"]
        else:
            edges = CSVEdges(raw / "edge.csv.gz")
            num_nodes = int(_read_csv_gz(raw / "num-node-list.csv.gz").astype(np.int64).sum())
            features = _csv_features(raw / "node-feat.csv.gz", num_nodes,
                                     folder / "features.npy", progress)
            y = _labels(_read_csv_gz(raw / "node-label.csv.gz"))
            inputs = [raw / "edge.csv.gz", raw / "node-feat.csv.gz", raw / "node-label.csv.gz"]
        if features.shape[0] != num_nodes:
            raise DatasetError(f"{d}: {features.shape[0]} feature rows for {num_nodes} nodes")
        undirected = meta["add_inverse_edge"] == "True" or self.undirected
        return _write_cache(folder, self.source(), self.name, int(meta["num classes"]),
                            edges, y, self._split(d, meta), features,
                            info={"ogb_dir": str(d)}, undirected=undirected,
                            progress=progress, budget=self.budget, inputs=inputs)


# ---- OGB-LSC MAG240M (paper nodes, paper-cites-paper) -------------------------------------------
class MAG240M(Dataset):
    """MAG240M's paper nodes and citation graph, loaded by ``ogb.lsc.MAG240MDataset``
    (which downloads ~170 GB once). Its 768-d float16 paper features are
    already an .npy: they are memory-mapped in place (no copy) and compressed
    in one pass. The public test labels are hidden, so the validation split is
    halved at random into val and test."""

    name = "mag240m"

    def __init__(self, cache_dir: PathLike, root: PathLike = "~/.cache/ibp_gnn/ogb-lsc",
                 undirected: bool = True, seed: int = 0, memory_budget=None):
        super().__init__(cache_dir, memory_budget)
        self.root = Path(os.path.expanduser(str(root)))
        self.undirected, self.seed = bool(undirected), int(seed)

    def source(self) -> dict:
        return {"kind": "mag240m", "root": str(self.root.resolve()),
                "undirected": self.undirected, "seed": self.seed}

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        from ogb.lsc import MAG240MDataset

        try:
            ds = MAG240MDataset(root=str(self.root))
        except (OSError, EOFError, RuntimeError) as e:
            raise DatasetError(f"dataset mag240m: could not load or download MAG240M into "
                               f"{self.root} ({e}); download it once with "
                               f"`python -c \"from ogb.lsc import MAG240MDataset; "
                               f"MAG240MDataset(root='{self.root}')\"`") from e
        feat_path = Path(ds.dir) / "processed" / "paper" / "node_feat.npy"
        features = FeatureSource.from_npy(feat_path)
        n = ds.num_papers
        edge_file = Path(ds.dir) / "processed" / "paper___cites___paper" / "edge_index.npy"
        edges = npy_edges(edge_file)  # memory-mapped, streamed in chunks
        y = _labels(ds.paper_label)
        s = ds.get_idx_split()
        val = np.random.default_rng(self.seed).permutation(np.asarray(s["valid"]))
        split = {"train": np.asarray(s["train"]), "val": np.sort(val[: len(val) // 2]),
                 "test": np.sort(val[len(val) // 2:])}
        return _write_cache(folder, self.source(), self.name, ds.num_classes, edges, y,
                            split, features, info={"mag240m_dir": str(ds.dir)},
                            undirected=self.undirected, progress=progress, budget=self.budget,
                            inputs=[edge_file])


