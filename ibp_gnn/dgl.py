"""DGL drop-in: node features compressed with Invariant Bit Packing for DGL's
classic ``dgl.dataloading`` path and for GraphBolt.

Stock DGL code runs unchanged on a compressed feature put in the graph::

    g.ndata["feat"] = ibp_gnn.compress(g.ndata["feat"])   # or IBPFeatureStorage(...)
    sampler = dgl.dataloading.NeighborSampler([10, 10], prefetch_node_feats=["feat"])

The DataLoader's prefetch of ``feat`` then gathers the batch's rows from the
compressed store (DGL gathers rows with ``torch.index_select``, which compressed
features implement), so do sampled blocks' ``srcdata["feat"]`` and
layer-wise inference's ``g.ndata["feat"][input_nodes]``. Other torch operations
on the whole feature (full-graph message passing on ``g.ndata["feat"]``) raise a
TypeError saying to gather the rows first. For a graph on a GPU, assign
``ct.to("cuda")`` (rows decoded there). ``DataLoader.attach_data`` only serves
samplers that emit ``LazyFeature``s of their own; stock samplers read the
graph's ``ndata``, so put the feature there.

Classic path with explicit fetches (``dgl.dataloading.DataLoader`` + ``NeighborSampler``)::

    import ibp_gnn.dgl as idgl

    feat = idgl.IBPFeatureStorage(g.ndata.pop("feat"))      # or a CompressedTensor / .ibp path
    for input_nodes, output_nodes, blocks in loader:       # with or without use_uva
        idgl.fetch_block_features(blocks, {"feat": feat})   # blocks[0].srcdata["feat"]
        ...

``IBPFeatureStorage`` is a ``dgl.storages.FeatureStorage``: ``fetch(ids, device)``
returns ``x[ids]`` bit for bit on ``device`` (CUDA ids or device: decoded on the
GPU from pinned host memory, as with ``use_uva=True``), so it also serves
``DataLoader.attach_data(name, storage)`` for samplers that emit
``dgl.dataloading.LazyFeature(name, ids)``.

GraphBolt: :class:`IBPFeature` is a ``dgl.graphbolt.Feature`` (``read``,
``read_async``, ``read_async_num_stages``, ``size``, ``count``, ``update``,
``metadata``), usable in ``gb.BasicFeatureStore`` and under
``gb.gpu_cached_feature``.

DGL versions: DGL 2.1.0 (the newest on PyPI for Python 3.11) ships its GraphBolt
library only for torch 2.0 - 2.2.1, and ``import dgl`` fails at other torch
versions. :func:`import_dgl` with ``without_graphbolt=True`` imports DGL's core,
``dgl.nn`` and ``dgl.dataloading`` anyway by registering an empty
``dgl.graphbolt`` module first -- only when asked: this module never changes
``sys.modules`` by itself. DGL is imported on first use, not with this module.
"""
from __future__ import annotations

import copy
import os
import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Optional

import numpy as np
import torch

from ._tensor import CompressedTensor, compress, load
from ._tensorlike import TensorLike

__all__ = ["IBPFeature", "IBPFeatureStorage", "fetch_block_features", "import_dgl"]

_PLACEHOLDER_DOC = ("Empty stand-in registered by ibp_gnn.dgl.import_dgl(without_graphbolt=True): "
                    "DGL's GraphBolt library does not load with this torch version.")


# ---- importing DGL -----------------------------------------------------------------------------
def _graphbolt_is_placeholder() -> bool:
    gb = sys.modules.get("dgl.graphbolt")
    return gb is not None and getattr(gb, "__doc__", None) == _PLACEHOLDER_DOC


def import_dgl(*, without_graphbolt: bool = False) -> types.ModuleType:
    """Import and return ``dgl``.

    without_graphbolt=True: if ``import dgl`` fails because DGL's GraphBolt
    library does not exist for this torch version, register an empty
    ``dgl.graphbolt`` module and import DGL again; DGL's core, ``dgl.nn`` and
    ``dgl.dataloading`` then work, GraphBolt does not. Call it before anything
    else imports dgl.
    """
    if "dgl" in sys.modules:
        return sys.modules["dgl"]
    try:
        import dgl
        return dgl
    except Exception as e:  # noqa: BLE001 - DGL raises FileNotFoundError/ImportError/OSError
        first = e
    if not without_graphbolt or "graphbolt" not in str(first):
        raise ImportError(_import_message(first)) from first
    # Forget what the failed import left behind, then import DGL without GraphBolt.
    for name in [m for m in sys.modules if m == "dgl" or m.startswith("dgl.")]:
        del sys.modules[name]
    sys.modules["dgl.graphbolt"] = types.ModuleType("dgl.graphbolt", _PLACEHOLDER_DOC)
    try:
        import dgl
    except Exception as e:  # noqa: BLE001
        del sys.modules["dgl.graphbolt"]
        raise ImportError(f"ibp_gnn.dgl.import_dgl: dgl does not import even without "
                          f"GraphBolt: {type(e).__name__}: {e}") from e
    return dgl


def _import_message(e: BaseException) -> str:
    msg = f"ibp_gnn.dgl: `import dgl` failed: {type(e).__name__}: {e}."
    if "graphbolt" in str(e):
        msg += (f" DGL ships its GraphBolt library for a few torch versions only (2.0 - 2.2.1 "
                f"for dgl 2.1.0; this is torch {torch.__version__}). To use DGL's core, dgl.nn "
                "and dgl.dataloading without GraphBolt, call "
                "ibp_gnn.dgl.import_dgl(without_graphbolt=True) before anything imports dgl.")
    elif isinstance(e, ModuleNotFoundError):
        msg += " Install it with `pip install dgl` (DGL 2.1 also needs pydantic and torchdata<0.10)."
    return msg


def _dgl() -> types.ModuleType:
    if "dgl" in sys.modules:
        return sys.modules["dgl"]
    try:
        import dgl
    except Exception as e:  # noqa: BLE001
        raise ImportError(_import_message(e)) from e
    return dgl


def _graphbolt() -> types.ModuleType:
    _dgl()
    if _graphbolt_is_placeholder():
        raise ImportError(
            "ibp_gnn.dgl.IBPFeature needs DGL's GraphBolt, but dgl was imported without it "
            "(ibp_gnn.dgl.import_dgl(without_graphbolt=True)): DGL's GraphBolt library does "
            f"not exist for torch {torch.__version__}. Use IBPFeatureStorage with "
            "dgl.dataloading instead, or a torch version DGL ships GraphBolt for.")
    try:
        import dgl.graphbolt as gb
        gb.Feature  # noqa: B018
    except Exception as e:  # noqa: BLE001
        raise ImportError(f"ibp_gnn.dgl.IBPFeature needs dgl.graphbolt, which does not load: "
                          f"{type(e).__name__}: {e}") from e
    return gb


# ---- the rows behind both adapters ---------------------------------------------------------------
def _as_compressed(features, *, mode: str, threads: Optional[int], mmap: bool, op: str
                   ) -> CompressedTensor:
    if isinstance(features, CompressedTensor):
        return features
    if isinstance(features, (str, os.PathLike)):
        return load(features, mmap=mmap)
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(np.ascontiguousarray(features))
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{op}: features must be a torch.Tensor, numpy.ndarray, CompressedTensor "
                        f"or the path of a saved one, got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{op}: features must be 2-D (rows x columns), got shape "
                         f"{tuple(features.shape)}")
    return compress(features.detach().cpu().contiguous(), mode=mode, threads=threads)


def _device(device, op: str) -> torch.device:
    d = torch.device(device)
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{op}: device {d} requested, but torch.cuda.is_available() is "
                               "False")
        if d.index is None:
            d = torch.device("cuda", torch.cuda.current_device())
    elif d.type != "cpu":
        raise ValueError(f"{op}: device must be cpu or cuda, got {d}")
    return d


class _CompressedRows:
    """A CompressedTensor gathered by id onto a device, with byte counters."""

    def __init__(self, features, *, mode: str = "auto", threads: Optional[int] = None,
                 mmap: bool = True, op: str):
        self._op = op
        self.ct = _as_compressed(features, mode=mode, threads=threads, mmap=mmap, op=op)
        self.mode = mode
        self.threads = threads
        self.mmap = mmap
        self.cached = None  # ibp_gnn.cache.CachedFeature in front of ct (set_cache)
        self.reset_counters()

    def set_cache(self, hot=None, *, budget=0, device="cpu", transfer: str = "auto"):
        """A compressed cache of rows `hot` (most valuable first) within `budget`
        bytes on `device` in front of the rows (``ibp_gnn.cache.CachedFeature``);
        fetches then decode there and count only the misses as bytes read."""
        from .cache import CachedFeature

        self.cached = CachedFeature(self.ct, hot, budget=budget, device=device,
                                    transfer=transfer, threads=self.threads)
        return self.cached

    def _refresh_cache(self) -> None:
        """After self.ct was replaced: the same rows cached from the new tensor."""
        c = self.cached
        if c is not None:
            self.set_cache(None if c.whole else c.cached_ids, budget=c.budget, device=c.device,
                           transfer=c.transfer)

    def check_files(self) -> None:
        """Raises ibp_gnn.FileChangedError when the memory-mapped .ibp file changed
        since it was loaded (ibp_gnn.Prefetcher calls it when an epoch starts)."""
        self.ct.check_file()

    def reset_counters(self) -> None:
        """Zero ``bytes_read`` (host bytes the gathers read) and ``raw_bytes_read``
        (what they would read uncompressed)."""
        self.bytes_read = 0
        self.raw_bytes_read = 0

    @property
    def shape(self) -> torch.Size:
        return self.ct.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.ct.dtype

    def _ids(self, ids) -> torch.Tensor:
        if isinstance(ids, np.ndarray):
            ids = torch.from_numpy(np.ascontiguousarray(ids))
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"{self._op}: ids must be a torch.Tensor or numpy.ndarray, got "
                            f"{type(ids).__name__}")
        if ids.dtype not in (torch.int64, torch.int32):
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise TypeError(f"{self._op}: ids must hold integer node ids, got {ids.dtype}")
            ids = ids.to(torch.int64)
        if ids.dim() != 1:
            raise ValueError(f"{self._op}: ids must be 1-D, got shape {tuple(ids.shape)}")
        return ids.contiguous()

    def gather(self, ids, device=None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rows ``ids`` on `device` (default: the device of ids). CUDA ids or device:
        decoded on the GPU (the payload is pinned on first use)."""
        ids = self._ids(ids)
        target = _device(device if device is not None else ids.device, self._op)
        n = ids.numel()
        if n:
            row_bytes = self.ct.raw_nbytes // max(1, self.ct.shape[0])
            # fetch_nbytes also range-checks the ids, on the CPU: counters move only after it
            host = ids if ids.device.type == "cpu" else ids.cpu()
            if self.cached is not None:  # the misses (the cache range-checks them all)
                self.ct._check_range(host, self._op)
                host = host[self.cached._slot[host.long()] < 0]
            fetched = self.ct.fetch_nbytes(host)
            self.raw_bytes_read += n * row_bytes
            self.bytes_read += fetched
        if self.cached is not None:
            if target == self.cached._out_device():
                return self.cached.gather(ids, out)
            rows = self.cached.gather(ids).to(target)
            return rows if out is None else out.copy_(rows)
        if target.type == "cuda":
            self.ct.pin_memory()
            return self.ct.gather(ids, out, device=target, check=False)
        return self.ct.gather(ids if ids.device.type == "cpu" else ids.cpu(), out,
                              threads=self.threads)


# ---- classic dgl.dataloading -----------------------------------------------------------------------
class _StorageImpl(_CompressedRows, TensorLike):
    """See ``IBPFeatureStorage``."""

    _op_name = "IBPFeatureStorage"

    def __init__(self, features, *, mode: str = "auto", threads: Optional[int] = None,
                 mmap: bool = True, device="cpu"):
        super().__init__(features, mode=mode, threads=threads, mmap=mmap,
                         op="IBPFeatureStorage")
        self.device = _device(device, "IBPFeatureStorage")
        if self.device.type == "cuda":
            self.ct.pin_memory()

    # tensor protocol (ibp_gnn._tensorlike): g.ndata["feat"] = storage, feat[input_nodes]
    def _take(self, ids: torch.Tensor) -> torch.Tensor:
        return self.gather(ids, self.device)

    def _on(self, device: torch.device):
        other = copy.copy(self)
        other.device = device
        other.reset_counters()
        if device.type == "cuda":
            other.ct.pin_memory()
        return other

    def requires_ddp(self) -> bool:
        return False

    def fetch(self, indices, device, pin_memory: bool = False, **kwargs) -> torch.Tensor:
        """``x[indices]`` on `device`, bit for bit (DGL's FeatureStorage.fetch).
        pin_memory=True returns CPU rows in page-locked memory."""
        target = _device(device, "IBPFeatureStorage.fetch")
        if target.type == "cpu" and pin_memory and torch.cuda.is_available():
            ids = self._ids(indices)
            out = torch.empty((ids.numel(), self.ct.shape[1]), dtype=self.ct.dtype,
                              pin_memory=True)
            return self.gather(ids, target, out)
        return self.gather(indices, target)

    def __repr__(self) -> str:
        return f"IBPFeatureStorage({self.ct!r})"


def fetch_block_features(blocks, storages: Dict[str, Any], device=None, *,
                         labels: Optional[Dict[str, Any]] = None):
    """Sets ``blocks[0].srcdata[name] = storage.fetch(blocks[0].srcdata[dgl.NID], device)``
    for each ``name: storage`` of `storages` (and, for ``labels``,
    ``blocks[-1].dstdata[name]`` from the output nodes). `device` defaults to the
    blocks' device (with ``use_uva=True`` the ids are on the GPU and the rows are
    decoded there). Returns `blocks`; usable as a Prefetcher ``transform`` via
    ``lambda batch: (*batch[:2], fetch_block_features(batch[2], storages))``."""
    dgl = _dgl()
    if not isinstance(storages, dict):
        raise TypeError("fetch_block_features: storages must be a dict name -> storage, got "
                        f"{type(storages).__name__}")
    first, last = blocks[0], blocks[-1]
    if device is None:
        device = first.device
    src = first.srcdata[dgl.NID]
    for name, storage in storages.items():
        first.srcdata[name] = storage.fetch(src, device)
    if labels:
        dst = last.dstdata[dgl.NID]
        for name, storage in labels.items():
            last.dstdata[name] = (storage.fetch(dst, device) if hasattr(storage, "fetch")
                                  else storage[dst.to(storage.device)].to(device))
    return blocks


# ---- GraphBolt --------------------------------------------------------------------------------------
_POOL: Optional[ThreadPoolExecutor] = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ibp_gnn-read_async")
        return _POOL


class _Ready:
    def __init__(self, fn):
        self._fn = fn

    def wait(self):
        fn, self._fn = self._fn, None
        return fn()


class _FeatureImpl(_CompressedRows):
    """See ``IBPFeature``."""

    def __init__(self, features, metadata: Optional[dict] = None, *, mode: str = "auto",
                 threads: Optional[int] = None, mmap: bool = True):
        super().__init__(features, mode=mode, threads=threads, mmap=mmap, op="IBPFeature")
        self._metadata = dict(metadata) if metadata else {}

    def read(self, ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rows ``ids`` (all rows when None), bit for bit. CPU ids: decoded by CPU
        threads, returned on the CPU; CUDA ids: decoded on their GPU."""
        if ids is None:
            return self.ct.decompress(threads=self.threads)
        return self.gather(ids)

    def read_async(self, ids: torch.Tensor):
        """A generator of ``read_async_num_stages(ids.device)`` (= 1) stages whose
        last yields a future; ``future.wait()`` returns ``read(ids)``. CPU ids: the
        decode runs in a background thread. CUDA ids: it is issued on a side
        stream that waits for the current stream; ``wait()`` makes the current
        stream wait for it (no host sync)."""
        ids = self._ids(ids)
        if ids.device.type != "cuda":
            fut = _pool().submit(self.gather, ids)
            yield _Ready(fut.result)
            return
        device = ids.device
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            values = self.gather(ids)
            done = torch.cuda.Event()
            done.record(side)
        ids.record_stream(side)

        def finish():
            current.wait_event(done)
            values.record_stream(current)
            return values

        yield _Ready(finish)

    def read_async_num_stages(self, ids_device: torch.device) -> int:
        return 1

    def size(self) -> torch.Size:
        """The shape of one row (GraphBolt's convention)."""
        return torch.Size(self.ct.shape[1:])

    def count(self) -> int:
        """The number of rows."""
        return int(self.ct.shape[0])

    def update(self, value: torch.Tensor, ids: Optional[torch.Tensor] = None) -> None:
        """Replaces the rows ``ids`` (all rows when None) by `value`. The data is
        compressed, so this re-compresses the whole tensor: O(rows), meant for
        occasional updates."""
        op = "IBPFeature.update"
        if ids is None:
            self.ct = _as_compressed(value, mode=self.mode, threads=self.threads,
                                     mmap=self.mmap, op=op)
            self._refresh_cache()
            return
        ids = self._ids(ids).cpu()
        rows = int(self.ct.shape[0])
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= rows):
            bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
            raise IndexError(f"{op}: ids holds id {bad}, out of range for {rows} rows")
        value = torch.as_tensor(value).cpu()
        if value.shape != (ids.numel(),) + tuple(self.ct.shape[1:]):
            raise ValueError(f"{op}: value has shape {tuple(value.shape)}, expected "
                             f"{(ids.numel(),) + tuple(self.ct.shape[1:])}")
        if value.dtype != self.ct.dtype:
            raise TypeError(f"{op}: value has dtype {value.dtype}, the feature {self.ct.dtype}")
        full = self.ct.decompress(threads=self.threads)
        full[ids] = value
        pinned = self.ct.is_pinned()
        self.ct = compress(full, mode=self.ct.mode, threads=self.threads)
        if pinned:
            self.ct.pin_memory()
        self._refresh_cache()

    def metadata(self) -> dict:
        return dict(self._metadata)

    def pin_memory_(self):
        """Pins the compressed payload (for CUDA reads) in place; returns self."""
        self.ct.pin_memory()
        return self

    def is_pinned(self) -> bool:
        return self.ct.is_pinned()

    def __repr__(self) -> str:
        return f"IBPFeature({self.ct!r})"


_CLASSES: Dict[str, type] = {}
_DOCS = {
    "IBPFeatureStorage": """A ``dgl.storages.FeatureStorage`` over node features compressed
    with IBP: ``fetch(ids, device)`` returns ``x[ids]`` bit for bit on `device`.

    features: a tensor or numpy array (compressed here with `mode`), a
    CompressedTensor, or the path of a saved one (memory-mapped when `mmap`).
    ``bytes_read`` / ``raw_bytes_read`` count what fetches read from host memory.
    It also indexes like a tensor (``storage[ids]``, ``.shape``, ``.dtype``,
    ``.device``: where ``storage[ids]`` decodes, `device`; ``.to(device)``), so
    ``g.ndata["feat"] = storage`` serves DGL's stock samplers and prefetching.
    """,
    "IBPFeature": """A GraphBolt ``Feature`` over node features compressed with IBP:
    ``read(ids)`` returns ``x[ids]`` bit for bit (on the GPU for CUDA ids),
    ``read_async`` overlaps the decode, ``size()`` is the row shape, ``count()``
    the number of rows, ``metadata()`` the dict given here.

    features: a tensor or numpy array (compressed here with `mode`), a
    CompressedTensor, or the path of a saved one (memory-mapped when `mmap`).
    """,
}


def __getattr__(name: str):
    """Builds IBPFeatureStorage / IBPFeature on first use, on DGL's base classes
    (importing DGL then, not with this module)."""
    if name not in _DOCS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _CLASSES:
        if name == "IBPFeatureStorage":
            bases = (_StorageImpl, _dgl().storages.FeatureStorage)
        else:
            bases = (_FeatureImpl, _graphbolt().Feature)
        cls = type(name, bases, {"__doc__": _DOCS[name], "__module__": __name__,
                                 "__qualname__": name})
        _CLASSES[name] = cls
    return _CLASSES[name]
