"""A prepared dataset (:class:`GraphData`), the base class of dataset sources
(:class:`Dataset`) and the writing and reading of a cache folder."""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from .._C import FORMAT_VERSION
from ._cache import (CACHE_VERSION, SPLITS, DatasetError, PathLike, _jsonable, _key, _locked,
                     _log, _read_cache, _remove_stale, _save_json, _save_npy, file_identity,
                     memory_budget)
from .csc import INDICES_FILE, INDPTR_FILE, as_edge_source, build_csc, csc_to_coo, open_csc
from .features import FeatureSource


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A torch view of a (read-only) memory map, never a copy."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(a)


@dataclass
class GraphData:
    """A prepared node-classification dataset. The graph is the cached CSC,
    memory-mapped read-only (``indptr`` int64 [N + 1], ``indices`` int32/int64:
    the in-neighbours of node v are ``indices[indptr[v]:indptr[v + 1]]``)."""
    name: str
    num_nodes: int
    num_classes: int
    indptr: np.ndarray
    indices: np.ndarray
    y: torch.Tensor                   # [N] int64, -1 where unlabeled
    split: Dict[str, torch.Tensor]    # train/val/test -> int64 node ids
    features: FeatureSource
    cache_dir: Path
    info: Dict[str, Any] = field(default_factory=dict)
    _coo: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

    @property
    def num_edges(self) -> int:
        return int(self.indices.shape[0])

    @property
    def edge_index(self) -> torch.Tensor:
        """[2, E] int64 COO (messages flow edge_index[0] -> edge_index[1]) in CSC
        order, built from the CSC on first use: 16 bytes per edge in memory, for
        small graphs and tools that need COO; training samples the CSC itself."""
        if self._coo is None:
            self._coo = torch.from_numpy(csc_to_coo(self.indptr, self.indices))
        return self._coo

    def csc(self):
        """(indptr, indices) as torch tensors viewing the memory maps."""
        return _tensor(self.indptr), _tensor(self.indices)

    def ibp_path(self, mode: str = "auto") -> Path:
        return self.cache_dir / f"features.ibp-v{FORMAT_VERSION}-{mode}.ibp"

    def _ibp_source_path(self, mode: str) -> Path:
        return self.cache_dir / f"{self.ibp_path(mode).name}.source.json"

    def _ibp_current(self, mode: str) -> bool:
        path, side = self.ibp_path(mode), self._ibp_source_path(mode)
        if not path.is_file():
            return False
        try:
            rec = json.loads(side.read_text())
        except (OSError, ValueError):
            return False
        return rec == {"features": _jsonable(self.features.identity()),
                       "ibp": _jsonable(file_identity(path))}

    def compressed(self, mode: str = "auto", *, progress: bool = True,
                   chunk_bytes: int = 64 << 20, layout: str = "auto") -> Path:
        """The .ibp file of the features in `mode`, compressed now if the cache
        lacks it or if it was made from features that have changed since (the
        source file's size, mtime and inode are recorded beside it). A row
        layout other than "auto" (compress's layout=) has files of its own."""
        from .. import compress_file

        codec, mode = mode, (mode if layout == "auto" else f"{mode}-{layout}")

        path = self.ibp_path(mode)
        if self._ibp_current(mode):
            return path
        with _locked(self.cache_dir):
            if self._ibp_current(mode):
                return path
            _remove_stale(self.cache_dir)
            for old in self.cache_dir.glob(f"features.ibp-v*-{mode}.ibp"):
                why = ("written by another codec version (this one writes "
                       f"v{FORMAT_VERSION})" if old != path else
                       "its source features changed since it was written")
                _log(f"removing {old.name}: {why}", progress)
                old.unlink()
            src = self.features
            _log(f"compressing {src.shape[0]}x{src.shape[1]} {src.dtype} features "
                 f"({src.nbytes / 2**20:.1f} MiB) -> {path}", progress)
            before = _jsonable(src.identity())
            t = time.perf_counter()
            compress_file(src.open(), path, mode=codec, chunk_bytes=chunk_bytes, progress=progress,
                          layout=layout)
            _log(f"compressed in {time.perf_counter() - t:.1f}s", progress)
            if _jsonable(src.identity()) != before:
                path.unlink(missing_ok=True)
                raise DatasetError(f"{src.path} changed while it was being compressed; rerun")
            _save_json(self._ibp_source_path(mode),
                       {"features": before, "ibp": _jsonable(file_identity(path))})
        return path

    def graph_store(self):
        """An ``ibp_gnn.pyg.IBPGraphStore`` holding the CSC in place (no copy,
        no edge permutation)."""
        from ..pyg import IBPGraphStore

        gs = IBPGraphStore()
        indptr, indices = self.csc()
        gs.put_csc(indptr, indices, size=(self.num_nodes, self.num_nodes), check=False)
        return gs

    def to_remote(self):
        """(feature store, graph store) for PyG's loaders: the labels in an
        ``IBPFeatureStore`` (node features come from the training store by
        ``batch.n_id``) and the CSC in an ``IBPGraphStore``, viewed in place."""
        from ..pyg import IBPFeatureStore

        fs = IBPFeatureStore("cpu", compress="never")
        fs.put_tensor(self.y, group_name=None, attr_name="y", index=None)
        return fs, self.graph_store()

    def to_pyg(self):
        """A torch_geometric Data with the graph (COO, built from the CSC) and
        labels but no features; for small graphs (training uses :meth:`to_remote`)."""
        from torch_geometric.data import Data

        return Data(edge_index=self.edge_index, y=self.y, num_nodes=self.num_nodes)


# ---- cache folder -------------------------------------------------------------------------------
def _graph_from_cache(folder: Path, meta: dict) -> GraphData:
    def load(name):
        return torch.from_numpy(np.load(folder / name))

    features = FeatureSource.from_json(meta["features"])
    if not features.path.is_absolute():
        features.path = folder / features.path
    indptr, indices = open_csc(folder)
    return GraphData(name=meta["name"], num_nodes=meta["num_nodes"],
                     num_classes=meta["num_classes"], indptr=indptr, indices=indices,
                     y=load("y.npy"), split={s: load(f"split_{s}.npy") for s in SPLITS},
                     features=features, cache_dir=folder, info=meta.get("info", {}))


def _write_cache(folder: Path, source: dict, name: str, num_classes: int, edges, y,
                 split: Dict[str, Any], features: FeatureSource, info: Optional[dict] = None,
                 *, undirected: bool = False, progress: bool = False, budget=None,
                 inputs: Sequence[PathLike] = ()) -> GraphData:
    """Builds the CSC of `edges` (an EdgeSource or a [2, E] array; made
    undirected without duplicates or self loops when `undirected`), writes the
    labels and splits, then meta.json (the completion marker). `inputs` are
    files outside the folder whose identity the cache depends on."""
    y = torch.as_tensor(y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y),
                        dtype=torch.int64).reshape(-1)
    n = int(features.shape[0])
    if y.numel() != n:
        raise DatasetError(f"{name}: {y.numel()} labels for {n} feature rows")
    csc = build_csc(as_edge_source(edges, name), n, folder, undirected=undirected,
                    budget=budget, progress=progress)
    files = {"y.npy": y}
    for s in SPLITS:
        ids = split[s].numpy() if isinstance(split[s], torch.Tensor) else split[s]
        files[f"split_{s}.npy"] = torch.from_numpy(np.array(ids, dtype=np.int64).reshape(-1))
    sizes = {}
    for fname, arr in files.items():
        sizes[fname] = _save_npy(folder / fname, arr).stat().st_size
    for fname in (INDPTR_FILE, INDICES_FILE):
        sizes[fname] = (folder / fname).stat().st_size
    fpath = features.path
    rel = fpath.parent.resolve() == folder.resolve()
    sizes[fpath.name if rel else str(fpath)] = fpath.stat().st_size
    fjson = features.to_json()
    if rel:
        fjson["path"] = fpath.name
    ext = [Path(p) for p in inputs] + ([] if rel else [fpath])
    meta = {"cache_version": CACHE_VERSION, "source": source, "name": name, "num_nodes": n,
            "num_classes": int(num_classes), "num_edges": int(csc["num_edges"]),
            "features": fjson, "files": sizes, "info": {**(info or {}), "csc": csc},
            "inputs": {str(p.resolve()): file_identity(p) for p in ext},
            "prepared_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    _save_json(folder / "meta.json", meta)
    return _graph_from_cache(folder, meta)


def _split_random(n_or_ids, fractions: Sequence[float], seed: int) -> Dict[str, np.ndarray]:
    ids = np.arange(n_or_ids) if np.isscalar(n_or_ids) else np.asarray(n_or_ids)
    perm = np.random.default_rng(seed).permutation(ids)
    a = int(round(fractions[0] * len(ids)))
    b = a + int(round(fractions[1] * len(ids)))
    return {"train": np.sort(perm[:a]), "val": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


def _labels(y) -> np.ndarray:
    """Integer labels with -1 for missing ones (NaN in OGB/MAG float labels)."""
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind == "f":
        out = np.full(y.shape, -1, np.int64)
        ok = ~np.isnan(y)
        out[ok] = y[ok].astype(np.int64)
        return out
    return y.astype(np.int64)


# ---- base class ---------------------------------------------------------------------------------
class Dataset:
    """A source of a node-classification dataset. Instantiating it does no I/O;
    :meth:`prepare` returns the cached :class:`GraphData`, preparing it first.

    memory_budget: bytes (or a size such as ``"4GB"``) the out-of-core phases
    may hold (default ``$IBP_PREP_MEMORY`` or 3 GiB); it does not change the
    prepared data, so it is not part of the cache key."""

    name: str = "dataset"

    def __init__(self, cache_dir: PathLike, memory_budget: Any = None):
        self.cache_root = Path(os.path.expanduser(str(cache_dir)))
        self.memory_budget = memory_budget

    def source(self) -> dict:
        """The options that determine the prepared data (the cache key)."""
        raise NotImplementedError

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        raise NotImplementedError

    @property
    def budget(self) -> int:
        return memory_budget(self.memory_budget)

    @property
    def cache_folder(self) -> Path:
        return self.cache_root / f"{self.name}-{_key(self.source())}"

    def prepare(self, *, progress: bool = True) -> GraphData:
        folder = self.cache_folder
        source = _jsonable(self.source())
        meta = _read_cache(folder, source)
        if meta is not None:
            return _graph_from_cache(folder, meta)
        budget = self.budget  # a bad value fails before any work
        with _locked(folder):
            meta = _read_cache(folder, source)  # another job may have finished meanwhile
            if meta is not None:
                return _graph_from_cache(folder, meta)
            _remove_stale(folder)
            (folder / "meta.json").unlink(missing_ok=True)
            _log(f"preparing {self.name} in {folder} (memory budget {budget / 2**30:.1f} GiB)",
                 progress)
            t = time.perf_counter()
            data = self._prepare(folder, progress)
            _log(f"prepared {self.name} in {time.perf_counter() - t:.1f}s", progress)
            return data

    def _write_labeled(self, folder: Path, features, edges, y: np.ndarray,
                       split: Optional[Dict[str, Any]], progress: bool,
                       inputs: Sequence[PathLike] = ()) -> GraphData:
        """Publishes the cache of a source with per-node labels `y`: `features`
        (a FeatureSource, or an array saved as features.npy), the split given or
        a random one of the labeled nodes (``self.split_fractions``, ``self.seed``)."""
        if split is None:
            split = _split_random(np.flatnonzero(y >= 0), self.split_fractions, self.seed)
        if not isinstance(features, FeatureSource):
            features = FeatureSource.from_npy(_save_npy(folder / "features.npy", features))
        return _write_cache(folder, self.source(), self.name, int(y.max()) + 1, edges, y,
                            split, features, undirected=self.undirected, progress=progress,
                            budget=self.budget, inputs=inputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source()})"

