"""Datasets read from files: Planetoid (Cora, CiteSeer), IGB homogeneous, and a
user's own .npz file or folder of .npy files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ._cache import SPLITS, DatasetError, PathLike, _save_npy
from .base import Dataset, GraphData, _labels, _write_cache
from .csc import npy_edges
from .features import FeatureSource

# ---- Planetoid (Cora, CiteSeer) -----------------------------------------------------------------
class Planetoid(Dataset):
    """Cora / CiteSeer / PubMed from the Planetoid files (``ind.<name>.*``) in
    `root` (default: ``../shared/datasets/<name>`` beside the checkout), read by
    ``torch_geometric.io.read_planetoid_data``, with the public split."""

    def __init__(self, cache_dir: PathLike, name: str = "cora", root: Optional[PathLike] = None,
                 memory_budget=None):
        super().__init__(cache_dir, memory_budget)
        self.name = name.lower()
        self.root = root

    def folder(self) -> Path:
        if self.root is not None:
            return Path(os.path.expanduser(str(self.root)))
        from ..testing import shared_dir

        shared = shared_dir()
        if shared is None:
            raise DatasetError(f"dataset {self.name}: no Planetoid files: ../shared/datasets is "
                               f"absent; set dataset.root to a folder holding ind.{self.name}.*")
        return shared / self.name

    def source(self) -> dict:
        return {"kind": "planetoid", "name": self.name, "root": str(self.folder().resolve())}

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        from torch_geometric.io import read_planetoid_data

        src = self.folder()
        if not (src / f"ind.{self.name}.graph").is_file():
            raise DatasetError(f"dataset {self.name}: {src}/ind.{self.name}.graph not found; "
                               f"set dataset.root to a folder holding the Planetoid files")
        try:
            d = read_planetoid_data(str(src), self.name)
        except FileNotFoundError as e:
            raise DatasetError(f"dataset {self.name}: incomplete Planetoid files in "
                               f"{src}: {e}") from e
        features = FeatureSource.from_npy(_save_npy(folder / "features.npy",
                                                     d.x.numpy().astype(np.float32)))
        split = {s: torch.nonzero(getattr(d, f"{s}_mask")).view(-1) for s in SPLITS}
        return _write_cache(folder, self.source(), self.name, int(d.y.max()) + 1, d.edge_index,
                            d.y, split, features, progress=progress, budget=self.budget)


# ---- IGB (Illinois Graph Benchmark), homogeneous ------------------------------------------------
IGB_NODES = {"tiny": 100_000, "small": 1_000_000, "medium": 10_000_000, "large": 100_000_000,
             "full": 269_346_174}
IGB_LABELED_FULL = {19: 227_130_858, 2983: 157_675_969}


class IGB(Dataset):
    """IGB homogeneous (paper nodes, paper-cites-paper), read from the layout
    that IGB's downloader writes: ``<root>/<size>/processed/paper/node_feat.npy``
    (1024-d float32; headerless for large/full), ``node_label_19.npy`` or
    ``node_label_2K.npy`` and ``paper__cites__paper/edge_index.npy`` ([E, 2]).
    Split as IGB's own loader does: the first 60 % / next 20 % / rest of the
    (labeled) nodes. Downloading is left to IGB's tools (not on PyPI)."""

    def __init__(self, cache_dir: PathLike, size: str = "tiny",
                 root: PathLike = "~/.cache/ibp_gnn/igb", num_classes: int = 19,
                 undirected: bool = True, memory_budget=None):
        super().__init__(cache_dir, memory_budget)
        if size not in IGB_NODES:
            raise DatasetError(f"dataset.size must be one of {list(IGB_NODES)}, got {size!r}")
        if num_classes not in (19, 2983):
            raise DatasetError(f"dataset.num_classes must be 19 or 2983, got {num_classes!r}")
        self.size, self.num_classes, self.undirected = size, int(num_classes), bool(undirected)
        self.root = Path(os.path.expanduser(str(root)))
        self.name = f"igb-{size}"

    def source(self) -> dict:
        return {"kind": "igb", "size": self.size, "root": str(self.root.resolve()),
                "num_classes": self.num_classes, "undirected": self.undirected}

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        base = self.root / self.size / "processed"
        feat = base / "paper" / "node_feat.npy"
        if not feat.is_file():
            raise DatasetError(
                f"dataset {self.name}: {feat} not found. IGB is not downloaded by ibp_gnn: run "
                f"`git clone https://github.com/IllinoisGraphBenchmark/IGB-Datasets && "
                f"pip install ./IGB-Datasets && python -m igb.download --path {self.root} "
                f"--dataset_type homogeneous --dataset_size {self.size}` (large/full: IGB's "
                f"download_igb*.sh scripts), then rerun")
        n = IGB_NODES[self.size]
        if self.size in ("large", "full"):
            features = FeatureSource(feat, (n, 1024), np.float32, 0)
        else:
            features = FeatureSource.from_npy(feat)
            n = features.shape[0]
        label_file = base / "paper" / ("node_label_19.npy" if self.num_classes == 19
                                       else "node_label_2K.npy")
        if self.size in ("large", "full"):
            y = np.memmap(label_file, dtype=np.float32, mode="r", shape=(n,))
        else:
            y = np.load(label_file, mmap_mode="r")
        y = _labels(y)
        edge_file = base / "paper__cites__paper" / "edge_index.npy"
        edges = npy_edges(edge_file)  # [E, 2], memory-mapped and streamed in chunks
        labeled = IGB_LABELED_FULL[self.num_classes] if self.size == "full" else n
        a, b = int(labeled * 0.6), int(labeled * 0.6) + int(labeled * 0.2)
        split = {"train": np.arange(a), "val": np.arange(a, b), "test": np.arange(b, labeled)}
        return _write_cache(folder, self.source(), self.name, self.num_classes, edges, y,
                            split, features, undirected=self.undirected, progress=progress,
                            budget=self.budget, inputs=[edge_file, label_file])


# ---- a user's own files -------------------------------------------------------------------------
def _csr(d, prefix: str):
    import scipy.sparse as sp

    return sp.csr_matrix((d[f"{prefix}_data"], d[f"{prefix}_indices"], d[f"{prefix}_indptr"]),
                         shape=tuple(d[f"{prefix}_shape"]))


class NPZ(Dataset):
    """One .npz file holding a whole (small) dataset, in one of three layouts:

    * ``x``, ``edge_index`` ([2, E]), ``y`` and optionally ``train_idx`` /
      ``val_idx`` / ``test_idx`` or ``train_mask`` / ``val_mask`` / ``test_mask``;
    * GNN-benchmark (``attr_*`` / ``adj_*`` CSR parts, ``labels``);
    * heterophilous-graphs (``node_features``, ``edges`` [E, 2], ``node_labels``,
      ``train_masks`` ... [splits, N]: split `split_index` is used).

    Without a split, nodes are split at random by `split` fractions.
    """

    def __init__(self, cache_dir: PathLike, path: PathLike, name: Optional[str] = None,
                 split: Sequence[float] = (0.6, 0.2, 0.2), split_index: int = 0,
                 undirected: bool = True, seed: int = 0, memory_budget=None):
        super().__init__(cache_dir, memory_budget)
        self.path = Path(os.path.expanduser(str(path)))
        self.name = name or self.path.stem
        self.split_fractions, self.split_index = [float(s) for s in split], int(split_index)
        self.undirected, self.seed = bool(undirected), int(seed)

    def source(self) -> dict:
        st = self.path.stat() if self.path.is_file() else None
        return {"kind": "npz", "path": str(self.path.resolve()),
                "size": st.st_size if st else None, "mtime": st.st_mtime if st else None,
                "split": self.split_fractions, "split_index": self.split_index,
                "undirected": self.undirected, "seed": self.seed}

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        if not self.path.is_file():
            raise DatasetError(f"dataset.path={str(self.path)!r} does not exist")
        d = np.load(self.path, allow_pickle=False)
        keys = set(d.files)
        split = None
        if {"x", "edge_index", "y"} <= keys:
            x, edge_index, y = d["x"], d["edge_index"], d["y"]
            if {"train_idx", "val_idx", "test_idx"} <= keys:
                split = {s: d[f"{s}_idx"] for s in SPLITS}
            elif {"train_mask", "val_mask", "test_mask"} <= keys:
                split = {s: np.flatnonzero(d[f"{s}_mask"]) for s in SPLITS}
        elif {"attr_data", "adj_data", "labels"} <= keys:
            x = _csr(d, "attr").toarray()
            adj = _csr(d, "adj").tocoo()
            edge_index, y = np.stack([adj.row, adj.col]), d["labels"]
        elif {"node_features", "edges", "node_labels"} <= keys:
            x, edge_index, y = d["node_features"], d["edges"].T, d["node_labels"]
            if "train_masks" in keys:
                i = self.split_index
                split = {s: np.flatnonzero(d[f"{s}_masks"][i]) for s in SPLITS}
        else:
            raise DatasetError(f"dataset.path={str(self.path)!r}: unknown npz layout with keys "
                               f"{sorted(keys)}; expected x/edge_index/y, GNN-benchmark "
                               f"attr_*/adj_*/labels, or node_features/edges/node_labels")
        x = np.ascontiguousarray(x)
        if x.ndim != 2:
            raise DatasetError(f"dataset.path={str(self.path)!r}: features must be 2-D, "
                               f"got shape {x.shape}")
        n = x.shape[0]
        edge_index = np.asarray(edge_index, dtype=np.int64)
        y = _labels(y)
        return self._write_labeled(folder, x, edge_index, y, split, progress)


class LocalFolder(Dataset):
    """A folder of .npy files, for data of any size: ``features.npy`` [N, F]
    (memory-mapped in place, never copied), ``edge_index.npy`` ([2, E] or
    [E, 2]), ``labels.npy`` [N] (negative or NaN = unlabeled), and optionally
    ``train_idx.npy``, ``val_idx.npy``, ``test_idx.npy``."""

    def __init__(self, cache_dir: PathLike, path: PathLike, name: Optional[str] = None,
                 split: Sequence[float] = (0.6, 0.2, 0.2), undirected: bool = True,
                 seed: int = 0, memory_budget=None):
        super().__init__(cache_dir, memory_budget)
        self.path = Path(os.path.expanduser(str(path)))
        self.name = name or self.path.name
        self.split_fractions = [float(s) for s in split]
        self.undirected, self.seed = bool(undirected), int(seed)

    def source(self) -> dict:
        files = {}
        for f in ("features.npy", "edge_index.npy", "labels.npy", "train_idx.npy",
                  "val_idx.npy", "test_idx.npy"):
            p = self.path / f
            if p.is_file():
                files[f] = [p.stat().st_size, p.stat().st_mtime]
        return {"kind": "local", "path": str(self.path.resolve()), "files": files,
                "split": self.split_fractions, "undirected": self.undirected, "seed": self.seed}

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        for f in ("features.npy", "edge_index.npy", "labels.npy"):
            if not (self.path / f).is_file():
                raise DatasetError(f"dataset.path={str(self.path)!r} lacks {f} (a local dataset "
                                   "needs features.npy, edge_index.npy, labels.npy)")
        features = FeatureSource.from_npy(self.path / "features.npy")
        n = features.shape[0]
        edges = npy_edges(self.path / "edge_index.npy")  # memory-mapped, streamed in chunks
        y = _labels(np.load(self.path / "labels.npy"))
        if all((self.path / f"{s}_idx.npy").is_file() for s in ("train", "val", "test")):
            split = {s: np.load(self.path / f"{s}_idx.npy") for s in SPLITS}
        else:
            split = None
        return self._write_labeled(folder, features, edges, y, split, progress,
                                   inputs=[self.path / "edge_index.npy", self.path / "labels.npy"])
