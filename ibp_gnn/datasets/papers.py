"""``synthetic-papers``: an ogbn-papers100M-shaped dataset generated offline in
OGB's own raw layout, so preparation runs the OGB code path itself at any
scale (``scale=1`` is the real size: 111M nodes, 1.6B directed edges).

Generated once per (scale, seed, options) into ``<root>/<tag>/ogbn_papers100M``:

* ``raw/data.npz``: ``edge_index`` [2, E] int64, ``node_feat`` [N, 128]
  float32, ``node_year`` [N, 1] int64, ``num_nodes_list``, ``num_edges_list``
  (deflated like OGB's download, or stored with ``compress_raw=false``;
  ``compress_features`` overrides it for ``node_feat`` alone: deflating dense
  floats runs at ~10-60 MB/s, and a stored member is memory-mapped in place);
* ``raw/node-label.npz``: ``node_label`` [N, 1] float32, NaN where unlabeled
  (about 1.4 % of the nodes are labeled, 172 classes, as in papers100M);
* ``split/time/{train,valid,test}.csv.gz``: labeled nodes by year (< 2018,
  2018, >= 2019), as OGB splits papers100M; ``RELEASE_v1.txt``.

The graph is a degree-corrected block model: Pareto node weights give
power-law in- and out-degrees, and a fraction ``p_in`` of the edges stays
inside a node's class. The features behave like averaged word embeddings
rather than noise: a low-rank latent part, a class centroid, per-column scale
and offset, and a little isotropic noise (their float32 exponents carry about
2.6 bits of entropy, as real text embeddings do). Everything is written in
chunks of fixed size straight into the zip members: memory is O(nodes) for
the per-node arrays plus ~300 MB of chunk temporaries, never O(edges) or
O(features), and the data does not depend on the memory budget.
"""
from __future__ import annotations

import gzip
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ._cache import DatasetError, PathLike, _locked, _log, _progress, _tmp
from .ogb import OGBNodeDataset
from .synthetic import community_edges

#: The real ogbn-papers100M (OGB's statistics).
PAPERS100M = {"num_nodes": 111_059_956, "num_edges": 1_615_685_872, "num_features": 128,
              "num_classes": 172, "train": 1_207_179, "valid": 125_265, "test": 214_338}


GEN_EDGE_CHUNK = 1 << 21  # edges per generated chunk (~150 B of temporaries per edge)
GEN_ROW_CHUNK = 1 << 17   # feature rows per generated chunk (~5 arrays of 512 B rows)


def _npy_header(dtype, shape) -> bytes:
    import io

    bio = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
         "shape": tuple(int(s) for s in shape)}
    np.lib.format.write_array_header_1_0(bio, d)
    return bio.getvalue()


def _write(f, a: np.ndarray) -> None:
    f.write(memoryview(np.ascontiguousarray(a)).cast("B"))


class SyntheticPapers(OGBNodeDataset):
    """ogbn-papers100M's shape at `scale` (nodes and edges scale together;
    128-d float32 features, 172 classes), generated into `root` in OGB's raw
    layout and prepared by :class:`OGBNodeDataset`'s code path."""

    ogb_name = "ogbn-papers100M"

    def __init__(self, cache_dir: PathLike, root: PathLike = "~/.cache/ibp_gnn/synthetic-papers",
                 scale: float = 0.001, seed: int = 0, power_law_exponent: float = 2.3,
                 p_in: float = 0.6, labeled_fraction: Optional[float] = None,
                 compress_raw: bool = True, compress_features: Optional[bool] = None,
                 undirected: bool = True,
                 name: str = "synthetic-papers", memory_budget: Any = None):
        super().__init__(cache_dir, name=name, root=root, undirected=undirected, download=False,
                         memory_budget=memory_budget)
        self.scale = float(scale)
        if not 0 < self.scale <= 4:
            raise DatasetError(f"dataset.scale must be in (0, 4] (1 = the real papers100M), "
                               f"got {scale!r}")
        self.seed, self.exponent, self.p_in = int(seed), float(power_law_exponent), float(p_in)
        if self.exponent <= 1.0:
            raise DatasetError(f"dataset.power_law_exponent must be > 1, got {self.exponent}")
        real = (PAPERS100M["train"] + PAPERS100M["valid"] + PAPERS100M["test"]) \
            / PAPERS100M["num_nodes"]
        self.labeled_fraction = real if labeled_fraction is None else float(labeled_fraction)
        if not 0 < self.labeled_fraction <= 1:
            raise DatasetError(f"dataset.labeled_fraction must be in (0, 1], got "
                               f"{labeled_fraction!r}")
        self.compress_raw = bool(compress_raw)
        self.compress_features = (self.compress_raw if compress_features is None
                                  else bool(compress_features))
        self.num_nodes = max(16, int(round(PAPERS100M["num_nodes"] * self.scale)))
        self.num_edges = max(16, int(round(PAPERS100M["num_edges"] * self.scale)))

    @property
    def tag(self) -> str:
        return (f"scale{self.scale:g}-seed{self.seed}-a{self.exponent:g}-p{self.p_in:g}"
                f"-l{self.labeled_fraction:.6g}{'' if self.compress_raw else '-stored'}"
                f"{'' if self.compress_features == self.compress_raw else '-featx'}")

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.tag / "ogbn_papers100M"

    def source(self) -> dict:
        return {"kind": "synthetic-papers", "root": str(self.root.resolve()), "tag": self.tag,
                "undirected": self.undirected}

    def _ensure_downloaded(self, meta: dict, progress: bool) -> Path:
        d = self.dataset_dir
        if (d / "raw" / "data.npz").is_file():
            return d
        with _locked(d.parent):
            if (d / "raw" / "data.npz").is_file():
                return d
            for stale in d.parent.glob("ogbn_papers100M.tmp*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = _tmp(d)
            try:
                self.generate(tmp, meta, progress)
                os.replace(tmp, d)  # the folder appears complete or not at all
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return d

    # ---- generation -------------------------------------------------------------------------
    def _nodes(self):
        """Per-node arrays: class, labeled mask, year."""
        n, c = self.num_nodes, PAPERS100M["num_classes"]
        rng = np.random.default_rng([self.seed, 0])
        # Skewed class sizes, as arXiv subject areas are.
        p = 1.0 / np.arange(1, c + 1) ** 0.9
        y = rng.choice(c, size=n, p=p / p.sum()).astype(np.int16)
        labeled = rng.random(n) < self.labeled_fraction
        # Years: labeled nodes split like papers100M's time split; the others spread wide.
        tr, va, te = PAPERS100M["train"], PAPERS100M["valid"], PAPERS100M["test"]
        u = rng.random(n)
        year = np.where(u < tr / (tr + va + te), 2017 - rng.geometric(0.15, n) + 1,
                        np.where(u < (tr + va) / (tr + va + te), 2018,
                                 2019 + (rng.random(n) < 0.5)))
        other = 2020 - np.minimum(rng.geometric(0.06, n) - 1, 200)
        year = np.where(labeled, year, other).astype(np.int64)
        return y, labeled, year

    def _weights(self, y: np.ndarray):
        n, c = self.num_nodes, PAPERS100M["num_classes"]
        rng = np.random.default_rng([self.seed, 1])
        theta = (1.0 - rng.random(n)) ** (-1.0 / (self.exponent - 1.0))
        theta = np.minimum(theta, np.sqrt(n) * 8)
        order = np.argsort(y, kind="stable")
        cw = np.cumsum(theta[order])
        del theta
        bounds = np.searchsorted(y[order], np.arange(c + 1))
        lo = np.where(bounds[:-1] > 0, cw[np.maximum(bounds[:-1] - 1, 0)], 0.0)
        hi = cw[np.maximum(bounds[1:] - 1, 0)]
        return order, cw, lo, hi

    def _edges(self, k: int, m: int, y, order, cw, lo, hi):
        """Chunk k (m edges) of the edge list: a pure function of (seed, k)."""
        rng = np.random.default_rng([self.seed, 2, k])
        src, dst = community_edges(rng, m, y, order, cw, lo, hi, self.p_in)
        return src.astype(np.int64), dst.astype(np.int64)

    def _feature_model(self):
        f, c, r = PAPERS100M["num_features"], PAPERS100M["num_classes"], 16
        rng = np.random.default_rng([self.seed, 3])
        w = (rng.standard_normal((r, f)) / np.sqrt(r)).astype(np.float32)
        cent = (0.6 * rng.standard_normal((c, f))).astype(np.float32)
        scale = (0.08 * np.exp(0.4 * rng.standard_normal(f))).astype(np.float32)
        bias = (0.02 * rng.standard_normal(f)).astype(np.float32)
        return w, cent, scale, bias

    def _features(self, k: int, a: int, b: int, y, model) -> np.ndarray:
        w, cent, scale, bias = model
        rng = np.random.default_rng([self.seed, 4, k])
        z = rng.standard_normal((b - a, w.shape[0]), dtype=np.float32)
        x = z @ w
        x += cent[y[a:b]]
        x += 0.3 * rng.standard_normal(x.shape, dtype=np.float32)
        x *= scale
        x += bias
        return x

    def generate(self, out: Path, meta: dict, progress: bool) -> None:
        """Writes the raw layout into the folder `out`."""
        n, E, F = self.num_nodes, self.num_edges, PAPERS100M["num_features"]
        raw = out / "raw"
        raw.mkdir(parents=True)
        _log(f"generating {self.name} at scale {self.scale:g}: {n:,} nodes, {E:,} edges, "
             f"{n:,} x {F} float32 features ({n * F * 4 / 2**30:.2f} GiB) -> {out}", progress)
        y, labeled, year = self._nodes()
        order, cw, lo, hi = self._weights(y)
        # Fixed chunk sizes (~300 MB of temporaries each), so the data never depends on
        # the memory budget: chunk k is a pure function of (seed, k).
        edge_chunk, row_chunk = GEN_EDGE_CHUNK, GEN_ROW_CHUNK
        comp = zipfile.ZIP_DEFLATED if self.compress_raw else zipfile.ZIP_STORED
        level = 1 if self.compress_raw else None
        dst_spill = out / "dst.bin"
        with zipfile.ZipFile(raw / "data.npz", "w", compression=comp, compresslevel=level,
                             allowZip64=True) as z:
            with z.open("edge_index.npy", "w", force_zip64=True) as f, \
                    open(dst_spill, "wb") as spill, \
                    _progress(E, "generate edges", progress, unit="edge") as bar:
                f.write(_npy_header(np.int64, (2, E)))
                for k, a in enumerate(range(0, E, edge_chunk)):
                    m = min(E, a + edge_chunk) - a
                    s, d = self._edges(k, m, y, order, cw, lo, hi)
                    _write(f, s)
                    _write(spill, d)
                    bar.update(m)
                spill.close()
                with open(dst_spill, "rb") as back:
                    shutil.copyfileobj(back, f, 16 << 20)
            dst_spill.unlink()
            del order, cw
            model = self._feature_model()
            z.compression = (zipfile.ZIP_DEFLATED if self.compress_features
                             else zipfile.ZIP_STORED)
            z.compresslevel = 1 if self.compress_features else None
            with z.open("node_feat.npy", "w", force_zip64=True) as f, \
                    _progress(n, "generate features", progress) as bar:
                f.write(_npy_header(np.float32, (n, F)))
                for k, a in enumerate(range(0, n, row_chunk)):
                    b = min(n, a + row_chunk)
                    _write(f, self._features(k, a, b, y, model))
                    bar.update(b - a)
            z.compression, z.compresslevel = comp, level
            with z.open("node_year.npy", "w", force_zip64=True) as f:
                f.write(_npy_header(np.int64, (n, 1)))
                _write(f, year)
            for key, v in (("num_nodes_list", np.array([n], np.int64)),
                           ("num_edges_list", np.array([E], np.int64))):
                with z.open(f"{key}.npy", "w") as f:
                    f.write(_npy_header(np.int64, v.shape))
                    _write(f, v)
        label = np.full((n, 1), np.nan, np.float32)
        label[labeled, 0] = y[labeled]
        np.savez_compressed(raw / "node-label.npz", node_label=label)
        del label
        split = out / "split" / meta["split"]
        split.mkdir(parents=True)
        ids = np.flatnonzero(labeled)
        parts = {"train": ids[year[ids] < 2018], "valid": ids[year[ids] == 2018],
                 "test": ids[year[ids] >= 2019]}
        for part, v in parts.items():
            with gzip.open(split / f"{part}.csv.gz", "wt", compresslevel=1) as f:
                np.savetxt(f, v[:, None], fmt="%d")
        if any(len(v) == 0 for v in parts.values()):
            raise DatasetError(f"{self.name}: scale={self.scale:g} with labeled_fraction="
                               f"{self.labeled_fraction:g} leaves an empty split "
                               f"({ {k: len(v) for k, v in parts.items()} }); raise either")
        (out / f"RELEASE_v{meta['version']}.txt").write_text(
            f"synthetic-papers {self.tag} (generated by ibp_gnn, papers100M's raw layout)\n")
