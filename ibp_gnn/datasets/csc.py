"""Out-of-core CSC construction: a graph's edges, streamed in chunks from their
source, become the memory-mapped CSC that training samples in place.

Cache files (both ``.npy``, memory-mapped read-only by training):

* ``csc_indptr.npy``  -- int64 [N + 1]; the in-neighbours of node v are
  ``indices[indptr[v]:indptr[v + 1]]`` (messages flow neighbour -> v);
* ``csc_indices.npy`` -- int32 when N < 2^31, else int64; each node's
  neighbours in ascending order.

``build_csc`` is a counting build that reads its source twice (then its own spill
files once); its peak memory is set by a budget
(``memory_budget``), not by the number of edges:

1. count: stream the edges once, check their ids, count each node's entries
   (an upper bound before deduplication) and cut the nodes into destination
   ranges ("buckets") of at most ~budget/40 entries;
2. partition: stream the edges again; each chunk's entries (both directions of
   an undirected graph, self loops dropped) go, as int64 keys
   ``(dst - bucket start) * N + src``, to one spill file per bucket;
3. sort: one bucket at a time, in destination order: read its keys, sort them
   (numpy's sort, no hash set), drop repeats (undirected graphs), and append
   the sources to ``csc_indices`` and the per-node counts to ``csc_indptr``.

Disk use besides the CSC: 8 bytes per directed entry of spill files, each
removed once its bucket is written. The result equals the in-memory reference
(``csc_reference``) bit for bit. Each phase shows a progress bar in edges per
second; the CSC is published atomically with a phase marker, so a preparation
killed later (or during it) redoes only what it had not finished.
"""
from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

from ._cache import (DatasetError, PathLike, _log, _progress, _publish,
                     _read_phase, _tmp, _write_phase, file_identity, memory_budget)

CSC_VERSION = 1
INDPTR_FILE = "csc_indptr.npy"
INDICES_FILE = "csc_indices.npy"
_HEADER_BYTES = 128  # .npy v1.0 header of a 1-D array, padded to 64-byte alignment
_KEY_LIMIT = 3_037_000_499  # N * N must fit in int64 keys


def index_dtype(num_nodes: int) -> np.dtype:
    """int32 when every node id fits, else int64."""
    return np.dtype(np.int32) if num_nodes <= np.iinfo(np.int32).max else np.dtype(np.int64)


# ---- edge sources -----------------------------------------------------------------------------
class EdgeSource:
    """Edges (src -> dst) read in chunks. ``chunks(n)`` yields (src, dst) int64
    arrays of at most n edges each; ``identity()`` changes when the source does."""

    num_edges: int = 0
    name: str = "edges"

    def chunks(self, n: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def identity(self) -> dict:
        raise NotImplementedError

    def open(self, workdir: Path, progress: bool) -> "EdgeSource":
        """A source that can be read several times (sources read once, like a
        csv stream, copy themselves to `workdir`)."""
        return self


class ArrayEdges(EdgeSource):
    """Edges in an array or memory map: [2, E] (rows src, dst) or, with
    ``layout="pairs"``, [E, 2]."""

    def __init__(self, edges, layout: str = "rows", name: str = "edges",
                 identity: Optional[dict] = None):
        if isinstance(edges, (tuple, list)) and len(edges) == 2:
            src, dst = edges
        else:
            a = edges.numpy() if hasattr(edges, "numpy") and not isinstance(edges, np.ndarray) \
                else edges
            a = np.asarray(a) if not isinstance(a, np.ndarray) else a
            if a.ndim != 2 or (2 not in a.shape):
                raise DatasetError(f"{name}: edges must have shape [2, E] or [E, 2], got "
                                   f"{tuple(a.shape)}")
            if layout == "rows" and a.shape[0] != 2:
                layout = "pairs"
            src, dst = (a[0], a[1]) if layout == "rows" else (a[:, 0], a[:, 1])
        src = src.numpy() if hasattr(src, "numpy") and not isinstance(src, np.ndarray) else src
        dst = dst.numpy() if hasattr(dst, "numpy") and not isinstance(dst, np.ndarray) else dst
        src, dst = np.asarray(src), np.asarray(dst)
        if src.shape != dst.shape or src.ndim != 1:
            raise DatasetError(f"{name}: src and dst must be 1-D and of one length, got "
                               f"{src.shape} and {dst.shape}")
        for what, a in (("src", src), ("dst", dst)):
            if a.dtype.kind not in "iu":
                raise DatasetError(f"{name}: edge {what} ids must be integers, got {a.dtype}")
        self.src, self.dst = src, dst
        self.num_edges = int(src.shape[0])
        self.name = name
        self._identity = identity

    def chunks(self, n: int):
        for a in range(0, self.num_edges, n):
            b = min(self.num_edges, a + n)
            yield (np.asarray(self.src[a:b], dtype=np.int64),
                   np.asarray(self.dst[a:b], dtype=np.int64))

    def identity(self) -> dict:
        if self._identity is not None:
            return self._identity
        # In-memory edges: a hash of a sample of them and their count.
        import hashlib

        h = hashlib.sha1()
        step = max(1, self.num_edges // 4096)
        h.update(np.ascontiguousarray(self.src[::step], dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.dst[::step], dtype=np.int64).tobytes())
        return {"array": h.hexdigest(), "num_edges": self.num_edges}


def npy_edges(path: PathLike, name: Optional[str] = None) -> ArrayEdges:
    """Edges of an .npy file ([2, E] or [E, 2]), memory-mapped."""
    path = Path(path)
    a = np.load(path, mmap_mode="r")
    layout = "rows" if a.ndim == 2 and a.shape[0] == 2 else "pairs"
    return ArrayEdges(a, layout, name=name or str(path), identity={"file": file_identity(path)})


class NpzEdges(EdgeSource):
    """Member `key` ([2, E] or [E, 2]) of an .npz: memory-mapped when stored
    uncompressed; when deflated, streamed through two decompressors (one per
    row of a [2, E] array), so no copy of it is ever whole in memory."""

    def __init__(self, npz: PathLike, key: str = "edge_index"):
        from .features import _npz_member

        self.npz, self.key = Path(npz), key
        self.name = f"{self.npz}:{key}"
        self.info, self.offset, (shape, fortran, dtype) = _npz_member(self.npz, key)
        if len(shape) != 2 or 2 not in shape:
            raise DatasetError(f"{self.name}: edges must be a [2, E] or [E, 2] array, "
                               f"got shape {shape}")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "iu":
            raise DatasetError(f"{self.name}: edge ids must be integers, got {self.dtype}")
        self.num_edges = int(shape[1] if shape[0] == 2 else shape[0])
        # In the file: all sources then all destinations ("rows"), or (src, dst) pairs.
        # A Fortran-order [2, E] array is stored as pairs, a Fortran [E, 2] one as rows.
        self.rows = (shape[0] == 2) != bool(fortran)
        self.shape = (2, self.num_edges) if self.rows else (self.num_edges, 2)

    def identity(self) -> dict:
        return {"file": file_identity(self.npz), "member": self.key}

    def _stream(self, z: zipfile.ZipFile):
        f = z.open(self.info)
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0)
         else np.lib.format.read_array_header_2_0)(f)
        return f

    def _read(self, f, count: int) -> np.ndarray:
        buf = np.empty(count, self.dtype)
        view = memoryview(buf.view(np.uint8))
        got = 0
        while got < buf.nbytes:
            more = f.readinto(view[got:])
            if not more:
                raise DatasetError(f"{self.name}: the member is shorter than its header says")
            got += more
        return buf

    def chunks(self, n: int):
        if self.offset is not None:  # stored: a memory map
            a = np.memmap(self.npz, dtype=self.dtype, mode="r", offset=self.offset,
                          shape=self.shape) if self.num_edges else np.zeros(self.shape,
                                                                             self.dtype)
            yield from ArrayEdges(a, "rows" if self.rows else "pairs", self.name).chunks(n)
            return
        E = self.num_edges
        with zipfile.ZipFile(self.npz) as z:
            if not self.rows:
                with self._stream(z) as f:
                    for a in range(0, E, n):
                        pairs = self._read(f, 2 * (min(E, a + n) - a)).reshape(-1, 2)
                        yield pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
                return
            with self._stream(z) as fs, self._stream(z) as fd:
                skip = E * self.dtype.itemsize  # the dst row starts after the src row
                step = 64 << 20
                while skip:
                    got = len(fd.read(min(step, skip)))
                    if not got:
                        raise DatasetError(f"{self.name}: the member is shorter than its "
                                           "header says")
                    skip -= got
                for a in range(0, E, n):
                    m = min(E, a + n) - a
                    yield (self._read(fs, m).astype(np.int64, copy=False),
                           self._read(fd, m).astype(np.int64, copy=False))


class CSVEdges(EdgeSource):
    """A (gzipped) csv of ``src,dst`` rows, as OGB's ``edge.csv.gz``. It is
    parsed once, in chunks, into an int64 [E, 2] file in the work folder that
    the later passes memory-map."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.name = str(self.path)

    def identity(self) -> dict:
        return {"file": file_identity(self.path)}

    def open(self, workdir: Path, progress: bool) -> EdgeSource:
        import pandas as pd

        out = Path(workdir) / "edges.bin"
        count = 0
        with open(out, "wb") as f, _progress(None, f"parse {self.path.name}", progress,
                                              unit="edge") as bar:
            comp = "gzip" if self.path.suffix == ".gz" else None
            for chunk in pd.read_csv(self.path, compression=comp, header=None,
                                     chunksize=1 << 20, dtype=np.int64):
                v = np.ascontiguousarray(chunk.values, dtype=np.int64)
                if v.ndim != 2 or v.shape[1] != 2:
                    raise DatasetError(f"{self.path}: expected 2 columns (src,dst), got "
                                       f"{v.shape[1]}")
                f.write(memoryview(v).cast("B"))
                count += len(v)
                bar.update(len(v))
        a = (np.memmap(out, dtype=np.int64, mode="r", shape=(count, 2)) if count
             else np.zeros((0, 2), np.int64))
        src = ArrayEdges(a, "pairs", name=self.name, identity=self.identity())
        self.num_edges = count
        return src


def as_edge_source(edges, name: str = "edges") -> EdgeSource:
    if isinstance(edges, EdgeSource):
        return edges
    return ArrayEdges(edges, name=name)


# ---- the in-memory reference ------------------------------------------------------------------
def _undirected(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Both directions of every edge, without duplicates or self loops
    (in memory; the reference the out-of-core build is tested against)."""
    ei = np.concatenate([edge_index, edge_index[::-1]], axis=1).astype(np.int64)
    ei = ei[:, ei[0] != ei[1]]
    key = np.unique(ei[0] * num_nodes + ei[1])
    return np.stack([key // num_nodes, key % num_nodes])


def csc_reference(edge_index, num_nodes: int, undirected: bool) -> Tuple[np.ndarray, np.ndarray]:
    """(indptr int64, indices) of the CSC that ``build_csc`` writes, built in memory."""
    ei = np.asarray(edge_index, dtype=np.int64).reshape(2, -1)
    if undirected:
        ei = _undirected(ei, num_nodes)
    order = np.lexsort((ei[0], ei[1]))
    indptr = np.zeros(num_nodes + 1, np.int64)
    np.cumsum(np.bincount(ei[1], minlength=num_nodes), out=indptr[1:])
    return indptr, ei[0][order].astype(index_dtype(num_nodes))


def csc_to_coo(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """[2, E] int64 edge_index (row = neighbour, col = node) of a CSC."""
    n = len(indptr) - 1
    col = np.repeat(np.arange(n, dtype=np.int64), np.diff(np.asarray(indptr)))
    return np.stack([np.asarray(indices, dtype=np.int64), col])


# ---- the out-of-core build --------------------------------------------------------------------
def _npy_header(dtype: np.dtype, n: int) -> bytes:
    import io

    bio = io.BytesIO()
    np.lib.format.write_array_header_1_0(bio, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": False, "shape": (int(n),)})
    h = bio.getvalue()
    if len(h) != _HEADER_BYTES:  # pragma: no cover - numpy's padding rule changed
        raise DatasetError(f"unexpected .npy header length {len(h)} for shape ({n},)")
    return h


def _budget_sizes(budget: int) -> Tuple[int, int]:
    """(edges per streamed chunk, entries per sort bucket) for a memory budget.
    A chunk holds ~128 bytes per edge at its peak (ids, both directions, bucket
    ids, keys and their order); a bucket ~40 bytes per entry (keys, the repeat
    mask, the deduplicated keys, sources and destinations)."""
    return max(1 << 12, budget // 128), max(1 << 12, budget // 40)


def _buckets(deg: np.ndarray, cap: int) -> np.ndarray:
    """Starts of destination ranges holding at most `cap` entries each (a node
    with more entries gets a range of its own), plus N at the end."""
    n = len(deg)
    cum = np.cumsum(deg, dtype=np.int64)
    starts = [0]
    while starts[-1] < n:
        s = starts[-1]
        before = int(cum[s - 1]) if s else 0
        e = int(np.searchsorted(cum, before + cap, side="right"))
        starts.append(min(n, max(e, s + 1)))
    return np.asarray(starts, dtype=np.int64)


def build_csc(edges, num_nodes: int, folder: PathLike, *, undirected: bool,
              budget=None, progress: bool = True, chunk_edges: Optional[int] = None,
              bucket_entries: Optional[int] = None) -> dict:
    """Writes ``csc_indptr.npy`` and ``csc_indices.npy`` of `edges` into `folder`
    (see the module doc) and returns their description (files, num_edges,
    index dtype, phase timings). A completed build of the same source and
    options is reused. `chunk_edges` / `bucket_entries` override the sizes the
    budget gives (tests use tiny ones to cross many chunk and bucket borders)."""
    folder = Path(folder)
    n = int(num_nodes)
    source = as_edge_source(edges)
    budget = memory_budget(budget)
    key = {"version": CSC_VERSION, "source": source.identity(), "num_nodes": n,
           "undirected": bool(undirected)}
    done = _read_phase(folder, "csc", key)
    if done is not None:
        return done["info"]
    if n > _KEY_LIMIT:
        raise DatasetError(f"{source.name}: {n} nodes is beyond the out-of-core build's limit "
                           f"of {_KEY_LIMIT}")
    chunk, cap = _budget_sizes(budget)
    chunk, cap = int(chunk_edges or chunk), int(bucket_entries or cap)
    if chunk < 1 or cap < 1:
        raise DatasetError(f"build_csc: chunk_edges and bucket_entries must be >= 1, got "
                           f"{chunk_edges!r} and {bucket_entries!r}")
    idx_dtype = index_dtype(n)
    work = _tmp(folder / "csc-work")
    work.mkdir(parents=True)
    timings = {}
    try:
        t = time.perf_counter()
        src_opened = source.open(work, progress)
        if src_opened is not source:
            timings["parse_s"] = time.perf_counter() - t
        source_r = src_opened
        E = source_r.num_edges

        # 1. count
        t = time.perf_counter()
        deg = np.zeros(n, np.int64)
        with _progress(E, "csc 1/3 count", progress, unit="edge") as bar:
            for s, d in source_r.chunks(chunk):
                m = len(s)
                if m:
                    lo, hi = min(int(s.min()), int(d.min())), max(int(s.max()), int(d.max()))
                    if lo < 0 or hi >= n:
                        raise DatasetError(f"{source.name}: edges hold node id "
                                           f"{lo if lo < 0 else hi}, outside [0, {n})")
                if undirected:
                    keep = s != d
                    s, d = s[keep], d[keep]
                    deg += np.bincount(s, minlength=n)
                deg += np.bincount(d, minlength=n)
                bar.update(m)
        starts = _buckets(deg, cap)
        total = int(deg.sum())
        del deg
        nb = len(starts) - 1
        timings["count_s"] = time.perf_counter() - t

        # 2. partition into per-bucket spill files of int64 keys
        t = time.perf_counter()
        files = [open(work / f"bucket-{i}.bin", "wb") for i in range(nb)]
        try:
            with _progress(E, f"csc 2/3 partition ({nb} buckets)", progress,
                           unit="edge") as bar:
                for s, d in source_r.chunks(chunk):
                    m = len(s)
                    if undirected:
                        keep = s != d
                        s, d = s[keep], d[keep]
                        s, d = np.concatenate([s, d]), np.concatenate([d, s])
                    if nb == 1:
                        k = d * n + s
                        files[0].write(memoryview(k).cast("B"))
                    else:
                        b = np.searchsorted(starts, d, side="right") - 1
                        k = (d - starts[b]) * n + s
                        b = b.astype(np.uint16 if nb < 65536 else np.int64)
                        order = np.argsort(b, kind="stable")
                        k = k[order]
                        ends = np.cumsum(np.bincount(b, minlength=nb))
                        del order, b
                        a = 0
                        for i in range(nb):
                            if ends[i] > a:
                                files[i].write(memoryview(k[a:ends[i]]).cast("B"))
                            a = int(ends[i])
                    del s, d, k
                    bar.update(m)
        finally:
            for f in files:
                f.close()
        if src_opened is not source:
            del source_r, src_opened
            (work / "edges.bin").unlink(missing_ok=True)  # a parsed csv: no longer needed
        timings["partition_s"] = time.perf_counter() - t

        # 3. sort each bucket, deduplicate, append to the CSC files
        t = time.perf_counter()
        ip_path, ix_path = folder / INDPTR_FILE, folder / INDICES_FILE
        ip_tmp, ix_tmp = _tmp(ip_path), _tmp(ix_path)
        written = 0
        try:
            with open(ip_tmp, "wb") as fp, open(ix_tmp, "wb") as fx, \
                    _progress(total, "csc 3/3 sort + write", progress, unit="edge") as bar:
                fp.write(_npy_header(np.dtype(np.int64), n + 1))
                fp.write(np.zeros(1, np.int64).tobytes())
                fx.write(b"\0" * _HEADER_BYTES)
                for i in range(nb):
                    bpath = work / f"bucket-{i}.bin"
                    keys = np.fromfile(bpath, dtype=np.int64)
                    bpath.unlink()
                    keys.sort()
                    if undirected and len(keys) > 1:
                        rep = np.empty(len(keys), bool)
                        rep[0] = True
                        np.not_equal(keys[1:], keys[:-1], out=rep[1:])
                        got = len(keys)
                        keys = keys[rep]
                        del rep
                    else:
                        got = len(keys)
                    lo, hi = int(starts[i]), int(starts[i + 1])
                    local = keys // n
                    srcs = (keys - local * n).astype(idx_dtype)
                    del keys
                    counts = np.bincount(local, minlength=hi - lo)
                    del local
                    ptr = np.cumsum(counts, dtype=np.int64)
                    ptr += written
                    fp.write(memoryview(ptr).cast("B"))
                    fx.write(memoryview(srcs).cast("B"))
                    written += len(srcs)
                    del srcs, counts, ptr
                    bar.update(got)
                fx.seek(0)
                fx.write(_npy_header(idx_dtype, written))
            _publish(ix_tmp, ix_path)
            _publish(ip_tmp, ip_path)
        finally:
            ip_tmp.unlink(missing_ok=True)
            ix_tmp.unlink(missing_ok=True)
        timings["sort_s"] = time.perf_counter() - t
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    info = {"indptr": INDPTR_FILE, "indices": INDICES_FILE, "num_edges": written,
            "index_dtype": idx_dtype.str, "buckets": nb, "source_edges": E,
            "budget": budget, "timings": timings}
    _write_phase(folder, "csc", key, [INDPTR_FILE, INDICES_FILE], info=info)
    _log(f"CSC: {E:,} source edges -> {written:,} entries ({idx_dtype} indices, {nb} buckets, "
         f"{sum(timings.values()):.1f}s)", progress)
    return info


def open_csc(folder: PathLike, info: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of a prepared CSC, memory-mapped read-only."""
    folder = Path(folder)
    ip = np.load(folder / INDPTR_FILE, mmap_mode="r")
    ix = np.load(folder / INDICES_FILE, mmap_mode="r") \
        if (folder / INDICES_FILE).stat().st_size > _HEADER_BYTES \
        else np.load(folder / INDICES_FILE)
    return ip, ix
