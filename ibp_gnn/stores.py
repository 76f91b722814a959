"""Feature stores for the training loop: one small interface, ``gather(ids)``
-> the rows ``x[ids]`` on the store's device, with two implementations that
return bit-identical rows:

* :class:`IBPStore` -- the features compressed with Invariant Bit Packing
  (``ibp_gnn.CompressedTensor``), memory-mapped from the cached .ibp file;
* :class:`RawStore` -- the uncompressed features, memory-mapped from the
  cached .npy file (``x[ids]``).

Both memory-map their file by default, so the processes of one node (DDP
ranks, sweep jobs) share one copy of it: the OS page cache.

Each store also reports ``fetch_nbytes(ids)``, the bytes a gather reads from
host memory (IBP: the compressed rows' bytes; raw: rows x row bytes), and its
``ratio`` (raw bytes / bytes held in host memory).

They index like the feature tensor (``store[idx]``, ``.shape``, ``.size()``,
``.dtype``, ``.device``, ``len()``; ``ibp_gnn._tensorlike``), so inference code
written for ``x_all[batch.n_id]`` runs on them; ``store.to(device)`` is a store
over the same host data that returns rows on `device`.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ._tensorlike import TensorLike
from .data import FeatureSource, GraphData

CODEC_MODES = ("auto", "paper")


def _device(device) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"store.device={str(device)!r} but torch.cuda.is_available() is False "
                           "(no GPU or a CPU build of torch); use store.device=cpu")
    if d.type not in ("cpu", "cuda"):
        raise ValueError(f"store.device must be 'cpu' or 'cuda[:N]', got {str(device)!r}")
    return d


class FeatureStoreBase(TensorLike):
    """Rows of a node feature matrix by node id."""

    kind = "base"
    _op_name = "FeatureStore"

    def _take(self, ids: torch.Tensor) -> torch.Tensor:
        return self.gather(ids)

    def _on(self, device: torch.device) -> "FeatureStoreBase":
        other = copy.copy(self)
        other.device = device
        if device.type == "cuda":
            other._pin()
        return other

    def _pin(self) -> None:
        raise NotImplementedError

    def __init__(self, device: Union[str, torch.device] = "cpu"):
        self.device = _device(device)

    @property
    def shape(self) -> torch.Size:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        raise NotImplementedError

    @property
    def raw_nbytes(self) -> int:
        itemsize = torch.empty(0, dtype=self.dtype).element_size()
        return int(self.shape[0]) * int(self.shape[1]) * itemsize

    @property
    def nbytes(self) -> int:
        """Bytes held in host memory."""
        raise NotImplementedError

    @property
    def ratio(self) -> float:
        return self.raw_nbytes / max(1, self.nbytes)

    def gather(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fetch_nbytes(self, ids: torch.Tensor) -> int:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"store": self.kind, "device": str(self.device), "shape": list(self.shape),
                "dtype": str(self.dtype).replace("torch.", ""), "nbytes": self.nbytes,
                "raw_nbytes": self.raw_nbytes, "ratio": self.ratio}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(shape={tuple(self.shape)}, dtype={self.dtype}, "
                f"ratio={self.ratio:.2f}, device={self.device})")


class RawStore(FeatureStoreBase):
    """Uncompressed features: ``x[ids]``.

    x: a GraphData (its cached features), a FeatureSource, a numpy array or a
    tensor. mmap=False reads the whole matrix into memory; pin=True (GPU
    runs) copies it into page-locked memory so host-to-device copies are
    asynchronous.
    """

    kind = "raw"

    def __init__(self, x, *, device: Union[str, torch.device] = "cpu", pin: bool = False,
                 mmap: bool = True, progress: bool = False):
        super().__init__(device)
        if isinstance(x, GraphData):
            x = x.features
        if isinstance(x, FeatureSource):
            arr = x.open()
            if not mmap:
                arr = np.array(arr)
        elif isinstance(x, torch.Tensor):
            arr = x.contiguous().numpy()
        elif isinstance(x, np.ndarray):
            arr = x
        else:
            raise TypeError(f"RawStore: x must be GraphData, FeatureSource, numpy array or "
                            f"tensor, got {type(x).__name__}")
        if arr.ndim != 2:
            raise ValueError(f"RawStore: features must be 2-D, got shape {arr.shape}")
        self._x = arr
        self._pinned = None
        if pin:
            if not torch.cuda.is_available():
                raise RuntimeError("store.pin=true needs a CUDA build of torch and a GPU")
            self._pinned = torch.from_numpy(np.ascontiguousarray(arr)).pin_memory()
        self._dtype = torch.from_numpy(np.zeros(0, arr.dtype)).dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._x.shape)

    def _pin(self) -> None:
        if self._pinned is None:
            self._pinned = torch.from_numpy(np.ascontiguousarray(self._x)).pin_memory()

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def nbytes(self) -> int:
        return int(self._x.nbytes)

    def gather(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.cpu()
        if self._pinned is not None:
            out = self._pinned.index_select(0, ids)
        else:
            out = torch.from_numpy(np.ascontiguousarray(self._x[ids.numpy()]))
        if self.device.type == "cuda":
            out = out.pin_memory().to(self.device, non_blocking=True)
        return out

    def fetch_nbytes(self, ids: torch.Tensor) -> int:
        return int(ids.numel()) * int(self._x.shape[1]) * self._x.dtype.itemsize


class IBPStore(FeatureStoreBase):
    """Features compressed with Invariant Bit Packing; ``gather`` decodes only
    the requested rows (CPU threads, or the CUDA kernel reading the
    compressed rows zero-copy from pinned host memory when device is cuda).

    x: a GraphData (its cached .ibp file, compressed on first use in `mode`),
    a path to an .ibp file, a CompressedTensor, or a numpy array / tensor
    (compressed in memory). layout: compress's row layout (auto, sectors or
    packed) for the features it compresses. mmap=True maps the file (shared by the processes
    of a node through the page cache); pin=True pins the payload for GPU
    zero-copy reads. cache (bytes, "auto" or None) / cache_hot / cache_* /
    transfer: a compressed cache of hot rows and how misses travel
    (``ibp_gnn.cache.cached_feature``).

    verify: when the checks that read the whole file run (``ibp_gnn.load``'s
    verify=; the CRC-32s and the per-row structure read every byte, ~1 s/GB):
    True ("full") before the store is returned; "background" returns at once
    and runs them in a thread over the store's own mapping while training
    starts, gathers checking the rows they read until it has passed (a failure
    is raised by the next gather, and by :meth:`check_verified`, which
    ``train()`` calls at the end of the first epoch); False checks the
    structure only, at once; "lazy" each row when first gathered, no CRCs.
    """

    kind = "ibp"

    def __init__(self, x, *, mode: str = "auto", device: Union[str, torch.device] = "cpu",
                 pin: bool = False, mmap: bool = True, verify: bool = True,
                 threads: Optional[int] = None, progress: bool = False, cache=None,
                 cache_hot: str = "presample", cache_fanouts=(15, 10, 5),
                 cache_batch_size: int = 1024, cache_batches: int = 64,
                 transfer: str = "zero_copy", layout: str = "auto"):
        import ibp_gnn
        from ibp_gnn._tensor import LAYOUTS

        super().__init__(device)
        graph = x if isinstance(x, GraphData) else None
        if mode not in CODEC_MODES:
            raise ValueError(f"store.mode must be one of {list(CODEC_MODES)}, got {mode!r}")
        if layout != "auto" and layout not in LAYOUTS:
            raise ValueError(f"store.layout must be one of {['auto', *LAYOUTS]}, got {layout!r}")
        if verify not in (True, False, "full", "background", "lazy"):
            raise ValueError("store.verify must be true ('full'), false, 'background' or "
                             f"'lazy', got {verify!r}")
        self.path: Optional[Path] = None
        if isinstance(x, GraphData):
            x = x.compressed(mode, progress=progress, layout=layout)
        if isinstance(x, (str, os.PathLike)):
            self.path = Path(x)
            ct = ibp_gnn.load(self.path, mmap=mmap, verify=verify)
        elif isinstance(x, ibp_gnn.CompressedTensor):
            ct = x
        elif isinstance(x, (np.ndarray, torch.Tensor)):
            ct = ibp_gnn.compress(x, mode=mode, progress=progress, layout=layout)
        else:
            raise TypeError(f"IBPStore: x must be GraphData, an .ibp path, CompressedTensor, "
                            f"numpy array or tensor, got {type(x).__name__}")
        self.ct = ct
        self.threads = threads
        if pin:  # GPU runs: the kernel reads the compressed rows zero-copy from here
            ct.pin_memory()
        self.cached = None
        if cache is not None or transfer != "zero_copy":
            from .cache import cached_feature

            self.cached = cached_feature(
                ct, graph, cache=cache, cache_hot=cache_hot, cache_fanouts=list(cache_fanouts),
                cache_batch_size=cache_batch_size, cache_batches=cache_batches,
                transfer=transfer, device=self.device, threads=threads)

    def check_verified(self, wait: bool = True) -> bool:
        """Whether the background check (verify="background": CRCs and every
        row's structure) has passed; raises its error if it failed. wait=True
        blocks until it is done."""
        return self.ct.check_verified(wait)

    @property
    def shape(self) -> torch.Size:
        return self.ct.shape

    def _pin(self) -> None:
        self.ct.pin_memory()

    @property
    def dtype(self) -> torch.dtype:
        return self.ct.dtype

    @property
    def nbytes(self) -> int:
        return int(self.ct.nbytes)

    @property
    def raw_nbytes(self) -> int:
        return int(self.ct.raw_nbytes)

    def check_files(self) -> None:
        """Raises ibp_gnn.FileChangedError when the memory-mapped .ibp file changed
        since it was loaded (a few stat calls: meant for the start of an epoch)."""
        self.ct.check_file()

    def gather(self, ids: torch.Tensor) -> torch.Tensor:
        if self.cached is not None:
            return self.cached.gather(ids.cpu())
        if self.device.type == "cuda":
            return self.ct.gather(ids.cpu(), device=self.device)
        return self.ct.gather(ids.cpu(), threads=self.threads)

    def fetch_nbytes(self, ids: torch.Tensor) -> int:
        if self.cached is not None:  # the rows the cache misses
            ids = ids.cpu().long()
            return self.ct.fetch_nbytes(ids[self.cached._slot[ids] < 0])
        return self.ct.fetch_nbytes(ids.cpu())

    def cache_stats(self) -> dict:
        """Hit rate and bus bytes (32-byte sectors) since the last call, and the
        sectors a raw gather would have read, summed over torch.distributed
        ranks; {} without a cache."""
        return {} if self.cached is None else self.cached.take_counters()

    def describe(self) -> dict:
        d = super().describe()
        d.update(format_version=self.ct.format_version, mode=self.ct.mode,
                 layout="sectors" if self.ct._fields.get("layout") else "packed",
                 path=str(self.path) if self.path else None)
        if self.cached is not None:
            d["cache"] = self.cached.describe()
        return d
