"""A user's saved PyG ``Data`` (``torch.save(data, "graph.pt")``) as a dataset,
and ``load_pt``: a .pt file read with ``torch.load(weights_only=True)`` with
PyG's data classes allowed (no other pickled code runs)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ._cache import SPLITS, DatasetError, PathLike
from .base import Dataset, GraphData, _labels


def _pyg_safe_globals() -> list:
    try:
        from torch_geometric.data import Data, HeteroData
        from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
        from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage
    except ImportError:
        return []
    return [Data, HeteroData, DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage,
            EdgeStorage]


def load_pt(path: PathLike, what: str) -> Any:
    """torch.load of a tensor, a dict of tensors or a PyG Data; errors name `what`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what}={str(path)!r} does not exist")
    try:
        with torch.serialization.safe_globals(_pyg_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        if "Weights only load failed" in first or "Unsupported global" in str(e):
            first = "it holds Python objects other than tensors and PyG Data"
        raise DatasetError(f"{what}={str(path)!r} cannot be read by torch.load(weights_only=True)"
                           f": {first}") from None


def _array(t: Any, what: str) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        if t.layout != torch.strided:
            t = t.to_dense()
        return t.detach().cpu().numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
    if isinstance(t, np.ndarray):
        return t
    raise DatasetError(f"{what} must be a tensor, got {type(t).__name__}")


class PyGFile(Dataset):
    """A homogeneous PyG ``Data`` saved with ``torch.save``: ``x`` [N, F],
    ``edge_index`` [2, E], ``y`` [N] (negative = unlabeled), and the split from
    ``train_mask``/``val_mask``/``test_mask`` (a [N, k] mask: column
    `split_index`) or ``train_idx``/``val_idx``/``test_idx``; without one, nodes
    are split at random by `split` fractions. A dict with those keys works too."""

    def __init__(self, cache_dir: PathLike, path: PathLike, name: Optional[str] = None,
                 split: Sequence[float] = (0.6, 0.2, 0.2), split_index: int = 0,
                 undirected: bool = True, seed: int = 0, dtype: Optional[str] = None,
                 memory_budget=None):
        super().__init__(cache_dir, memory_budget)
        self.path = Path(os.path.expanduser(str(path)))
        self.name = name or self.path.stem
        self.split_fractions, self.split_index = [float(s) for s in split], int(split_index)
        self.undirected, self.seed = bool(undirected), int(seed)
        self.dtype = dtype

    def source(self) -> dict:
        st = self.path.stat() if self.path.is_file() else None
        return {"kind": "pyg", "path": str(self.path.resolve()), "dtype": self.dtype,
                "size": st.st_size if st else None, "mtime": st.st_mtime if st else None,
                "split": self.split_fractions, "split_index": self.split_index,
                "undirected": self.undirected, "seed": self.seed}

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        obj = load_pt(self.path, "dataset.path")
        where = f"dataset.path={str(self.path)!r}"
        get = obj.get if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
        if type(obj).__name__ == "HeteroData":
            raise DatasetError(f"{where} holds a HeteroData; the app trains on a homogeneous "
                               "Data (convert with data.to_homogeneous())")
        missing = [k for k in ("x", "edge_index", "y") if get(k) is None]
        if missing:
            raise DatasetError(f"{where} lacks {', '.join(missing)} (a Data with x, edge_index "
                               f"and y, got {type(obj).__name__})")
        x = np.ascontiguousarray(_array(get("x"), f"{where}: x"))
        if x.ndim != 2:
            raise DatasetError(f"{where}: x must be 2-D, got shape {x.shape}")
        if self.dtype is not None:
            x = x.astype(self.dtype)
        elif x.dtype == np.float64:
            raise DatasetError(f"{where}: x is float64, which the store does not hold; set "
                               "dataset.dtype=float32 (or float16) to cast it")
        edge_index = _array(get("edge_index"), f"{where}: edge_index").astype(np.int64)
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise DatasetError(f"{where}: edge_index must be [2, E], got {edge_index.shape}")
        y = _labels(_array(get("y"), f"{where}: y"))
        split = None
        if all(get(f"{s}_mask") is not None for s in SPLITS):
            split = {}
            for s in SPLITS:
                m = _array(get(f"{s}_mask"), f"{where}: {s}_mask").astype(bool)
                split[s] = np.flatnonzero(m[:, self.split_index] if m.ndim == 2 else m)
        elif all(get(f"{s}_idx") is not None for s in SPLITS):
            split = {s: _array(get(f"{s}_idx"), f"{where}: {s}_idx") for s in SPLITS}
        return self._write_labeled(folder, x, edge_index, y, split, progress)
