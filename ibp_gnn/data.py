"""Datasets for training: a registry of sources (synthetic, Planetoid, OGB,
MAG240M, IGB, a user's npz file or folder), each prepared once into a cache
folder that every later run (and every sweep job) memory-maps.

A prepared dataset is a :class:`GraphData`: the graph and labels as tensors,
the raw features as a memory-mappable :class:`FeatureSource` (an .npy file,
or a region of a file such as an uncompressed .npz member), and
:meth:`GraphData.compressed` giving the .ibp file of those features,
compressed on first use by ``ibp_gnn.compress_file`` in one streaming pass.

Cache rules (``<cache>/<name>-<hash of the source options>/``):

* every file is written under a temporary name and renamed when complete;
  ``meta.json`` is written last and lists the files with their sizes, so an
  interrupted preparation leaves nothing a later run trusts;
* the .ibp file's name carries the codec's ``FORMAT_VERSION`` and mode, so a
  new codec version compresses again (older .ibp files are removed);
* a per-folder lock (``fcntl.flock``) makes concurrent jobs wait for one
  another instead of preparing the same data twice.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._C import FORMAT_VERSION

CACHE_VERSION = 1  # bump when the layout of the cache folder changes
SPLITS = ("train", "val", "test")
PathLike = Union[str, os.PathLike]


class DatasetError(RuntimeError):
    """A dataset that cannot be found, read or prepared; the message says why and what to run."""


def _progress(total: Optional[int], desc: str, enabled: bool, unit: str = "row"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled,
                dynamic_ncols=True, leave=False)


def _log(msg: str, enabled: bool = True) -> None:
    if enabled:
        print(f"[ibp_gnn.data] {msg}", flush=True)


# ---- features -----------------------------------------------------------------------------------
@dataclass
class FeatureSource:
    """A 2-D C-order feature matrix stored contiguously in a file at `offset`."""
    path: Path
    shape: Tuple[int, int]
    dtype: np.dtype
    offset: int = 0

    def __post_init__(self):
        self.path = Path(self.path)
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        self.dtype = np.dtype(self.dtype)

    @classmethod
    def from_npy(cls, path: PathLike) -> "FeatureSource":
        path = Path(path)
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            offset = f.tell()
        if len(shape) != 2 or fortran:
            raise DatasetError(f"{path}: features must be a 2-D C-order array, got shape {shape}"
                               f"{' in Fortran order' if fortran else ''}")
        return cls(path, shape, dtype, offset)

    @property
    def row_bytes(self) -> int:
        return self.shape[1] * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def open(self) -> np.ndarray:
        """The matrix, memory-mapped read-only (the OS page cache is the one
        copy that every process mapping the file shares)."""
        if self.shape[0] == 0:
            return np.zeros(self.shape, self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=self.shape)

    def to_json(self) -> dict:
        return {"path": str(self.path), "shape": list(self.shape), "dtype": self.dtype.str,
                "offset": self.offset}

    @classmethod
    def from_json(cls, d: dict) -> "FeatureSource":
        return cls(Path(d["path"]), tuple(d["shape"]), np.dtype(d["dtype"]), int(d["offset"]))


@dataclass
class GraphData:
    """A prepared node-classification dataset."""
    name: str
    num_nodes: int
    num_classes: int
    edge_index: torch.Tensor          # [2, E] int64; messages flow edge_index[0] -> edge_index[1]
    y: torch.Tensor                   # [N] int64, -1 where unlabeled
    split: Dict[str, torch.Tensor]    # train/val/test -> int64 node ids
    features: FeatureSource
    cache_dir: Path
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

    def ibp_path(self, mode: str = "auto") -> Path:
        return self.cache_dir / f"features.ibp-v{FORMAT_VERSION}-{mode}.ibp"

    def compressed(self, mode: str = "auto", *, progress: bool = True,
                   chunk_bytes: int = 64 << 20) -> Path:
        """The .ibp file of the features in `mode`, compressed now if the cache
        lacks it (one streaming pass over the memory-mapped features)."""
        from . import compress_file

        path = self.ibp_path(mode)
        if path.is_file():
            return path
        with _locked(self.cache_dir):
            if path.is_file():
                return path
            _remove_stale(self.cache_dir)
            for old in self.cache_dir.glob(f"features.ibp-v*-{mode}.ibp"):
                _log(f"removing {old.name}: written by another codec version "
                     f"(this one writes v{FORMAT_VERSION})", progress)
                old.unlink()
            src = self.features
            _log(f"compressing {src.shape[0]}x{src.shape[1]} {src.dtype} features "
                 f"({src.nbytes / 2**20:.1f} MiB) -> {path}", progress)
            t = time.perf_counter()
            compress_file(src.open(), path, mode=mode, chunk_bytes=chunk_bytes, progress=progress)
            _log(f"compressed in {time.perf_counter() - t:.1f}s", progress)
        return path

    def to_pyg(self):
        """A torch_geometric Data with the graph and labels but no features:
        the training loop gathers features from its store by ``batch.n_id``."""
        from torch_geometric.data import Data

        return Data(edge_index=self.edge_index, y=self.y, num_nodes=self.num_nodes)


# ---- cache folder -------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def _remove_stale(folder: Path) -> None:
    """Temporary files left by an interrupted preparation (called under the lock)."""
    for p in folder.glob("*.tmp*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _save_npy(path: Path, a) -> Path:
    if isinstance(a, torch.Tensor):
        a = a.numpy()
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(a))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _save_json(path: Path, obj) -> None:
    tmp = _tmp(path)
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _read_cache(folder: Path, source: dict) -> Optional[dict]:
    """meta.json of a complete cache made from `source`, else None."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return None
    if meta.get("cache_version") != CACHE_VERSION or meta.get("source") != source:
        return None
    for name, size in meta.get("files", {}).items():
        p = Path(name) if os.path.isabs(name) else folder / name
        if not p.is_file() or p.stat().st_size != size:
            return None
    return meta


def _graph_from_cache(folder: Path, meta: dict) -> GraphData:
    def load(name):
        return torch.from_numpy(np.load(folder / name))

    features = FeatureSource.from_json(meta["features"])
    if not features.path.is_absolute():
        features.path = folder / features.path
    return GraphData(name=meta["name"], num_nodes=meta["num_nodes"],
                     num_classes=meta["num_classes"], edge_index=load("edge_index.npy"),
                     y=load("y.npy"), split={s: load(f"split_{s}.npy") for s in SPLITS},
                     features=features, cache_dir=folder, info=meta.get("info", {}))


def _write_cache(folder: Path, source: dict, name: str, num_classes: int, edge_index, y,
                 split: Dict[str, Any], features: FeatureSource, info: Optional[dict] = None
                 ) -> GraphData:
    """Writes the graph files, then meta.json (the completion marker)."""
    edge_index = torch.as_tensor(np.asarray(edge_index), dtype=torch.int64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64).reshape(-1)
    n = int(features.shape[0])
    if y.numel() != n:
        raise DatasetError(f"{name}: {y.numel()} labels for {n} feature rows")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise DatasetError(f"{name}: edge_index must have shape [2, E], got "
                           f"{tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
        raise DatasetError(f"{name}: edge_index holds node ids outside [0, {n})")
    files = {"edge_index.npy": edge_index, "y.npy": y}
    for s in SPLITS:
        files[f"split_{s}.npy"] = torch.from_numpy(np.array(split[s], dtype=np.int64).reshape(-1))
    sizes = {}
    for fname, arr in files.items():
        sizes[fname] = _save_npy(folder / fname, arr).stat().st_size
    fpath = features.path
    rel = fpath.parent.resolve() == folder.resolve()
    sizes[fpath.name if rel else str(fpath)] = fpath.stat().st_size
    fjson = features.to_json()
    if rel:
        fjson["path"] = fpath.name
    meta = {"cache_version": CACHE_VERSION, "source": source, "name": name, "num_nodes": n,
            "num_classes": int(num_classes), "num_edges": int(edge_index.shape[1]),
            "features": fjson, "files": sizes, "info": info or {},
            "prepared_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    _save_json(folder / "meta.json", meta)
    return _graph_from_cache(folder, meta)


def _split_random(n_or_ids, fractions: Sequence[float], seed: int) -> Dict[str, np.ndarray]:
    ids = np.arange(n_or_ids) if np.isscalar(n_or_ids) else np.asarray(n_or_ids)
    perm = np.random.default_rng(seed).permutation(ids)
    a = int(round(fractions[0] * len(ids)))
    b = a + int(round(fractions[1] * len(ids)))
    return {"train": np.sort(perm[:a]), "val": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


def _undirected(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Both directions of every edge, without duplicates or self loops."""
    ei = np.concatenate([edge_index, edge_index[::-1]], axis=1).astype(np.int64)
    ei = ei[:, ei[0] != ei[1]]
    key = np.unique(ei[0] * num_nodes + ei[1])
    return np.stack([key // num_nodes, key % num_nodes])


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
    :meth:`prepare` returns the cached :class:`GraphData`, preparing it first."""

    name: str = "dataset"

    def __init__(self, cache_dir: PathLike):
        self.cache_root = Path(os.path.expanduser(str(cache_dir)))

    def source(self) -> dict:
        """The options that determine the prepared data (the cache key)."""
        raise NotImplementedError

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        raise NotImplementedError

    @property
    def cache_folder(self) -> Path:
        return self.cache_root / f"{self.name}-{_key(self.source())}"

    def prepare(self, *, progress: bool = True) -> GraphData:
        folder = self.cache_folder
        source = json.loads(json.dumps(self.source(), default=str))
        meta = _read_cache(folder, source)
        if meta is not None:
            return _graph_from_cache(folder, meta)
        with _locked(folder):
            meta = _read_cache(folder, source)  # another job may have finished meanwhile
            if meta is not None:
                return _graph_from_cache(folder, meta)
            _remove_stale(folder)
            (folder / "meta.json").unlink(missing_ok=True)
            _log(f"preparing {self.name} in {folder}", progress)
            t = time.perf_counter()
            data = self._prepare(folder, progress)
            _log(f"prepared {self.name} in {time.perf_counter() - t:.1f}s", progress)
            return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source()})"


# ---- synthetic ----------------------------------------------------------------------------------
FEATURE_KINDS = ("dense", "bow")


class Synthetic(Dataset):
    """A degree-corrected stochastic block model: power-law degrees, `num_classes`
    communities (the labels) with a fraction `p_in` of edges inside a
    community, and features drawn from a class-dependent distribution:

    * ``dense``: float32 embeddings, ``signal * centroid[y] + N(0, 1)``;
    * ``bow``: binary bag-of-words, `words_per_node` words per node, each from
      the class's topic with probability `signal`, else from a Zipf background.

    A node's label is its community: it shows in its features (weakly, with
    the default `signal`) and in its neighbourhood (edges mostly stay inside
    a community), so a GNN that aggregates neighbours beats a per-node model.
    Features are generated in chunks straight into an .npy file, so large
    sizes need no more memory than the graph.
    """

    name = "synthetic"

    def __init__(self, cache_dir: PathLike, num_nodes: int = 20000, num_classes: int = 8,
                 avg_degree: float = 10.0, power_law_exponent: float = 2.5, p_in: float = 0.5,
                 feature_kind: str = "bow", num_features: int = 512, signal: float = 0.1,
                 words_per_node: int = 20, split: Sequence[float] = (0.5, 0.2, 0.3),
                 seed: int = 0, name: str = "synthetic"):
        super().__init__(cache_dir)
        self.name = name
        self.num_nodes, self.num_classes = int(num_nodes), int(num_classes)
        self.avg_degree, self.p_in = float(avg_degree), float(p_in)
        self.exponent = float(power_law_exponent)
        self.feature_kind, self.num_features = feature_kind, int(num_features)
        self.signal, self.words_per_node = float(signal), int(words_per_node)
        self.split_fractions, self.seed = [float(s) for s in split], int(seed)

    def source(self) -> dict:
        return {"kind": "synthetic", "num_nodes": self.num_nodes, "num_classes": self.num_classes,
                "avg_degree": self.avg_degree, "power_law_exponent": self.exponent,
                "p_in": self.p_in, "feature_kind": self.feature_kind,
                "num_features": self.num_features, "signal": self.signal,
                "words_per_node": self.words_per_node, "split": self.split_fractions,
                "seed": self.seed}

    def graph(self) -> Tuple[np.ndarray, np.ndarray]:
        """(edge_index [2, E] undirected, labels [N])."""
        n, c = self.num_nodes, self.num_classes
        rng = np.random.default_rng(self.seed)
        y = rng.integers(0, c, n)
        # Pareto weights: P(theta > t) ~ t^-(exponent-1), so degrees follow a power law.
        theta = (1.0 - rng.random(n)) ** (-1.0 / (self.exponent - 1.0))
        theta = np.minimum(theta, np.sqrt(n) * 4)
        order = np.argsort(y, kind="stable")
        cw = np.cumsum(theta[order])
        total = cw[-1]
        # community c is order[bounds[c]:bounds[c + 1]]
        bounds = np.searchsorted(y[order], np.arange(c + 1))
        lo = np.where(bounds[:-1] > 0, cw[np.maximum(bounds[:-1] - 1, 0)], 0.0)
        hi = cw[np.maximum(bounds[1:] - 1, 0)]
        m = int(n * self.avg_degree / 2)
        src = order[np.minimum(np.searchsorted(cw, rng.random(m) * total), n - 1)]
        inside = rng.random(m) < self.p_in
        u = rng.random(m)
        cs = y[src]
        pos = np.where(inside, lo[cs] + u * (hi[cs] - lo[cs]), u * total)
        dst = order[np.minimum(np.searchsorted(cw, pos), n - 1)]
        return _undirected(np.stack([src, dst]), n), y

    def _features(self, path: Path, y: np.ndarray, progress: bool) -> FeatureSource:
        n, f = self.num_nodes, self.num_features
        rng = np.random.default_rng(self.seed + 1)
        tmp = _tmp(path)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, f))
        step = max(1, (32 << 20) // max(1, 4 * f))
        if self.feature_kind == "dense":
            centroids = rng.standard_normal((self.num_classes, f)).astype(np.float32)
            centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) / np.sqrt(f) * 4
        else:
            # Zipf background over the vocabulary; each class prefers its own words.
            ranks = rng.permutation(f) + 1.0
            background = 1.0 / ranks
            background /= background.sum()
            topic_size = max(4, f // (2 * self.num_classes))
            topics = [rng.choice(f, topic_size, replace=False) for _ in range(self.num_classes)]
        with _progress(n, "synthetic features", progress) as bar:
            for a in range(0, n, step):
                b = min(n, a + step)
                yy = y[a:b]
                if self.feature_kind == "dense":
                    x = rng.standard_normal((b - a, f)).astype(np.float32)
                    x += self.signal * centroids[yy]
                else:
                    x = np.zeros((b - a, f), np.float32)
                    k = self.words_per_node
                    from_topic = rng.random((b - a, k)) < self.signal
                    bg = rng.choice(f, size=(b - a, k), p=background)
                    tw = np.stack([topics[c] for c in range(self.num_classes)])[
                        yy[:, None], rng.integers(0, topic_size, (b - a, k))]
                    words = np.where(from_topic, tw, bg)
                    x[np.arange(b - a)[:, None], words] = 1.0
                out[a:b] = x
                bar.update(b - a)
        out.flush()
        del out
        os.replace(tmp, path)
        return FeatureSource.from_npy(path)

    def _prepare(self, folder: Path, progress: bool) -> GraphData:
        if self.feature_kind not in FEATURE_KINDS:
            raise DatasetError(f"dataset.feature_kind must be one of {list(FEATURE_KINDS)}, "
                               f"got {self.feature_kind!r}")
        edge_index, y = self.graph()
        features = self._features(folder / "features.npy", y, progress)
        split = _split_random(self.num_nodes, self.split_fractions, self.seed + 2)
        deg = np.bincount(edge_index[1], minlength=self.num_nodes)
        return _write_cache(folder, self.source(), self.name, self.num_classes, edge_index, y,
                            split, features, info={"max_degree": int(deg.max(initial=0)),
                                                   "mean_degree": float(deg.mean())})


# ---- Planetoid (Cora, CiteSeer) -----------------------------------------------------------------
class Planetoid(Dataset):
    """Cora / CiteSeer / PubMed from the Planetoid files (``ind.<name>.*``) in
    `root` (default: ``../shared/datasets/<name>`` beside the checkout), read by
    ``torch_geometric.io.read_planetoid_data``, with the public split."""

    def __init__(self, cache_dir: PathLike, name: str = "cora", root: Optional[PathLike] = None):
        super().__init__(cache_dir)
        self.name = name.lower()
        self.root = root

    def folder(self) -> Path:
        if self.root is not None:
            return Path(os.path.expanduser(str(self.root)))
        from .testing import shared_dir

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
                            d.y, split, features)


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


def _npz_member(npz: Path, key: str):
    """(zip info, data offset or None, npy header) of member `key` of an .npz.
    The offset is where the array's data starts when the member is stored
    uncompressed (np.savez), so it can be memory-mapped in place."""
    with zipfile.ZipFile(npz) as z:
        try:
            info = z.getinfo(f"{key}.npy")
        except KeyError:
            raise DatasetError(f"{npz}: no array {key!r} (has "
                               f"{[n[:-4] for n in z.namelist()]})") from None
        with z.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            header = read(f)
            header_len = f.tell() if info.compress_type == zipfile.ZIP_STORED else None
    if info.compress_type != zipfile.ZIP_STORED:
        return info, None, header
    with open(npz, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
    return info, info.header_offset + 30 + name_len + extra_len + header_len, header


def _npz_features(npz: Path, key: str, out: Path, progress: bool) -> FeatureSource:
    """The 2-D array `key` of an .npz as a FeatureSource: mapped in place when
    stored uncompressed, else decompressed in chunks to the .npy `out`."""
    info, offset, (shape, fortran, dtype) = _npz_member(npz, key)
    if len(shape) != 2 or fortran:
        raise DatasetError(f"{npz}: {key} must be a 2-D C-order array, got shape {shape}")
    if offset is not None:
        return FeatureSource(npz, shape, dtype, offset)
    tmp = _tmp(out)
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    row_bytes = shape[1] * np.dtype(dtype).itemsize
    step = max(1, (64 << 20) // max(1, row_bytes))
    with zipfile.ZipFile(npz) as z, z.open(info) as f, \
            _progress(shape[0], f"unpack {key}", progress) as bar:
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0)
         else np.lib.format.read_array_header_2_0)(f)
        flat = dst.reshape(-1).view(np.uint8) if dst.size else None
        for a in range(0, shape[0], step):
            n = min(step, shape[0] - a)
            buf = flat[a * row_bytes:(a + n) * row_bytes]
            got = f.readinto(memoryview(buf))
            while got < buf.nbytes:
                more = f.readinto(memoryview(buf[got:]))
                if not more:
                    raise DatasetError(f"{npz}: {key} is shorter than its header says")
                got += more
            bar.update(n)
    dst.flush()
    del dst
    os.replace(tmp, out)
    return FeatureSource.from_npy(out)


def _csv_features(src: Path, num_nodes: int, out: Path, progress: bool) -> FeatureSource:
    """node-feat.csv.gz parsed in chunks into the .npy `out` (as ogb parses it:
    float64 then float32, or int64 for integer files)."""
    import pandas as pd

    tmp = _tmp(out)
    dst = None
    row = 0
    with _progress(num_nodes, f"parse {src.name}", progress) as bar:
        for chunk in pd.read_csv(src, compression="gzip", header=None, chunksize=1 << 16):
            v = chunk.values
            v = v.astype(np.int64) if "int" in str(v.dtype) else v.astype(np.float32)
            if dst is None:
                dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=v.dtype,
                                                shape=(num_nodes, v.shape[1]))
            if row + len(v) > num_nodes:
                raise DatasetError(f"{src}: more rows than the {num_nodes} nodes of the graph")
            dst[row:row + len(v)] = v
            row += len(v)
            bar.update(len(v))
    if dst is None or row != num_nodes:
        raise DatasetError(f"{src}: {row} rows for {num_nodes} nodes")
    dst.flush()
    del dst
    os.replace(tmp, out)
    return FeatureSource.from_npy(out)


def _read_csv_gz(path: Path) -> np.ndarray:
    import pandas as pd

    return pd.read_csv(path, compression="gzip", header=None).values


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

    def __init__(self, cache_dir: PathLike, name: str = "ogbn-arxiv",
                 root: PathLike = "~/.cache/ibp_gnn/ogb", undirected: bool = True,
                 download: bool = True):
        super().__init__(cache_dir)
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
        meta = ogb_meta(self.name)
        if meta["is hetero"] == "True":
            raise DatasetError(f"dataset {self.name} is heterogeneous; only homogeneous OGB "
                               "node datasets (ogbn-arxiv, ogbn-products, ogbn-papers100M) "
                               "are supported")
        d = self._ensure_downloaded(meta, progress)
        raw = d / "raw"
        if meta["binary"] == "True":
            npz = raw / "data.npz"
            with np.load(npz) as z:
                edge_index = z["edge_index"].astype(np.int64)
                num_nodes = int(z["num_nodes_list"].sum())
            features = _npz_features(npz, "node_feat", folder / "features.npy", progress)
            with np.load(raw / "node-label.npz") as z:
                y = _labels(z["node_label"])
        else:
            edge_index = _read_csv_gz(raw / "edge.csv.gz").T.astype(np.int64)
            num_nodes = int(_read_csv_gz(raw / "num-node-list.csv.gz").astype(np.int64).sum())
            features = _csv_features(raw / "node-feat.csv.gz", num_nodes,
                                     folder / "features.npy", progress)
            y = _labels(_read_csv_gz(raw / "node-label.csv.gz"))
        if meta["add_inverse_edge"] == "True" or self.undirected:
            edge_index = _undirected(edge_index, num_nodes)
        if features.shape[0] != num_nodes:
            raise DatasetError(f"{d}: {features.shape[0]} feature rows for {num_nodes} nodes")
        return _write_cache(folder, self.source(), self.name, int(meta["num classes"]),
                            edge_index, y, self._split(d, meta), features,
                            info={"ogb_dir": str(d)})


# ---- OGB-LSC MAG240M (paper nodes, paper-cites-paper) -------------------------------------------
class MAG240M(Dataset):
    """MAG240M's paper nodes and citation graph, loaded by ``ogb.lsc.MAG240MDataset``
    (which downloads ~170 GB once). Its 768-d float16 paper features are
    already an .npy: they are memory-mapped in place (no copy) and compressed
    in one pass. The public test labels are hidden, so the validation split is
    halved at random into val and test."""

    name = "mag240m"

    def __init__(self, cache_dir: PathLike, root: PathLike = "~/.cache/ibp_gnn/ogb-lsc",
                 undirected: bool = True, seed: int = 0):
        super().__init__(cache_dir)
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
        edge_index = np.asarray(ds.edge_index("paper", "cites", "paper"), dtype=np.int64)
        if self.undirected:
            edge_index = _undirected(edge_index, n)
        y = _labels(ds.paper_label)
        s = ds.get_idx_split()
        val = np.random.default_rng(self.seed).permutation(np.asarray(s["valid"]))
        split = {"train": np.asarray(s["train"]), "val": np.sort(val[: len(val) // 2]),
                 "test": np.sort(val[len(val) // 2:])}
        return _write_cache(folder, self.source(), self.name, ds.num_classes, edge_index, y,
                            split, features, info={"mag240m_dir": str(ds.dir)})


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
                 undirected: bool = True):
        super().__init__(cache_dir)
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
        edges = np.load(base / "paper__cites__paper" / "edge_index.npy", mmap_mode="r")
        edge_index = np.ascontiguousarray(np.asarray(edges, dtype=np.int64).T)
        if self.undirected:
            edge_index = _undirected(edge_index, n)
        labeled = IGB_LABELED_FULL[self.num_classes] if self.size == "full" else n
        a, b = int(labeled * 0.6), int(labeled * 0.6) + int(labeled * 0.2)
        split = {"train": np.arange(a), "val": np.arange(a, b), "test": np.arange(b, labeled)}
        return _write_cache(folder, self.source(), self.name, self.num_classes, edge_index, y,
                            split, features)


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
                 undirected: bool = True, seed: int = 0):
        super().__init__(cache_dir)
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
        if self.undirected:
            edge_index = _undirected(edge_index, n)
        y = _labels(y)
        if split is None:
            split = _split_random(np.flatnonzero(y >= 0), self.split_fractions, self.seed)
        features = FeatureSource.from_npy(_save_npy(folder / "features.npy", x))
        return _write_cache(folder, self.source(), self.name, int(y.max()) + 1, edge_index, y,
                            split, features)


class LocalFolder(Dataset):
    """A folder of .npy files, for data of any size: ``features.npy`` [N, F]
    (memory-mapped in place, never copied), ``edge_index.npy`` ([2, E] or
    [E, 2]), ``labels.npy`` [N] (negative or NaN = unlabeled), and optionally
    ``train_idx.npy``, ``val_idx.npy``, ``test_idx.npy``."""

    def __init__(self, cache_dir: PathLike, path: PathLike, name: Optional[str] = None,
                 split: Sequence[float] = (0.6, 0.2, 0.2), undirected: bool = True,
                 seed: int = 0):
        super().__init__(cache_dir)
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
        edge_index = np.load(self.path / "edge_index.npy").astype(np.int64)
        if edge_index.ndim == 2 and edge_index.shape[0] != 2 and edge_index.shape[1] == 2:
            edge_index = edge_index.T
        if self.undirected:
            edge_index = _undirected(edge_index, n)
        y = _labels(np.load(self.path / "labels.npy"))
        if all((self.path / f"{s}_idx.npy").is_file() for s in ("train", "val", "test")):
            split = {s: np.load(self.path / f"{s}_idx.npy") for s in SPLITS}
        else:
            split = _split_random(np.flatnonzero(y >= 0), self.split_fractions, self.seed)
        return _write_cache(folder, self.source(), self.name, int(y.max()) + 1, edge_index, y,
                            split, features)
