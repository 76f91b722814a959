"""PyG drop-in: node tensors compressed with Invariant Bit Packing behind PyG's
remote-backend interface, so ``NeighborLoader`` / ``LinkNeighborLoader`` /
``NodeLoader`` gather each batch's rows from the compressed store.

::

    from torch_geometric.loader import NeighborLoader
    from ibp_gnn.pyg import from_data
    from ibp_gnn.sampler import NeighborSampler

    feature_store, graph_store = from_data(data, device="cpu")   # or "cuda"
    loader = NeighborLoader((feature_store, graph_store), num_neighbors=[15, 10],
                            input_nodes=train_idx, batch_size=1024, filter_per_worker=False,
                            neighbor_sampler=NeighborSampler((feature_store, graph_store),
                                                             [15, 10]))

(Without ``neighbor_sampler=``, PyG builds its own sampler, which needs pyg-lib
or torch-sparse.) Every batch's ``x`` is bit-identical to ``data.x[batch.n_id]``.

* :class:`IBPFeatureStore` -- a ``torch_geometric.data.FeatureStore``. Each tensor
  put into it is either compressed (a 2-D tensor of a codec dtype; a
  ``CompressedTensor`` or the path of a saved one is taken as is) or kept raw
  (labels, masks, small or incompressible tensors); its repr says which and why.
  ``multi_get_tensor`` -- what PyG's loaders call once per batch -- checks each
  distinct index once and gathers every requested tensor with it.
* :class:`IBPGraphStore` -- a ``torch_geometric.data.GraphStore`` keeping each
  edge type in host memory in the layout it was put in (COO, CSC or CSR, torch
  tensors or numpy arrays / memory maps, viewed without a copy). Other layouts are
  derived once, with their edge permutation, and kept.
* :func:`from_data` -- both stores from a ``Data`` or ``HeteroData``.

Where the rows are decoded follows the store's ``device``: ``"cpu"`` decodes with
CPU threads (it works inside DataLoader worker processes); ``"cuda"`` decodes on
the GPU, reading only the compressed bytes of the requested rows from pinned host
memory. CUDA cannot run in forked worker processes, so a CUDA store must gather in
the main process: pass ``filter_per_worker=False`` to the loader (or use
``num_workers=0``); a CUDA store used inside a worker raises an error saying so.

Each store counts the bytes its gathers read from host memory (``bytes_read``;
``raw_bytes_read`` is what the same gathers would read uncompressed);
:class:`ibp_gnn.prefetch.Prefetcher` reports them per epoch.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import EdgeAttr, FeatureStore, GraphStore, TensorAttr
from torch_geometric.data.graph_store import EdgeLayout
from torch_geometric.utils import index_sort

from ._tensor import CompressedTensor, compress, load
from ._tensor import index_1d as _index_1d

__all__ = ["IBPFeatureStore", "IBPGraphStore", "from_data"]

COMPRESS_POLICIES = ("auto", "always", "never")
DEFAULT_MIN_BYTES = 1 << 20
# On a CPU store, "auto" keeps a tensor raw when compression saves less than
# this: the CPU decode of a dense row costs more than the bytes saved.
DEFAULT_MIN_RATIO = 1.1


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0
_CODEC_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
                 torch.int16, torch.int32, torch.int64)


def _store_device(device, op: str) -> torch.device:
    d = torch.device(device)
    if d.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: device must be 'cpu' or 'cuda[:N]', got {str(device)!r}")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{op}: device={str(device)!r} but torch.cuda.is_available() is "
                               "False (no GPU, or a CPU build of torch); use device='cpu'")
        if d.index is None:
            d = torch.device("cuda", torch.cuda.current_device())
    return d


def _key_name(key: Tuple[Any, Any]) -> str:
    group, attr = key
    return attr if group is None else f"{group}.{attr}" if isinstance(group, str) \
        else f"{'__'.join(group)}.{attr}"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass
class _Entry:
    """One tensor of the store: compressed (``ct``) or raw (``raw``)."""
    ct: Optional[CompressedTensor]
    raw: Optional[torch.Tensor]
    reason: str
    cached: Any = None  # ibp_gnn.cache.CachedFeature in front of ct (set_cache)

    @property
    def compressed(self) -> bool:
        return self.ct is not None

    @property
    def shape(self) -> torch.Size:
        return self.ct.shape if self.ct is not None else self.raw.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.ct.dtype if self.ct is not None else self.raw.dtype

    @property
    def row_bytes(self) -> int:
        n = self.shape[0]
        return (self.raw_nbytes // n) if n else 0

    @property
    def raw_nbytes(self) -> int:
        if self.ct is not None:
            return int(self.ct.raw_nbytes)
        return self.raw.numel() * self.raw.element_size()

    @property
    def nbytes(self) -> int:
        return int(self.ct.nbytes) if self.ct is not None else self.raw_nbytes

    def describe(self) -> str:
        dims = "x".join(str(s) for s in self.shape)
        dtype = str(self.dtype).replace("torch.", "")
        if self.compressed:
            return (f"compressed {dims} {dtype}, ratio {self.ct.ratio:.2f} "
                    f"({_fmt_bytes(self.raw_nbytes)} -> {_fmt_bytes(self.nbytes)}; {self.reason})")
        return f"raw {dims} {dtype} ({_fmt_bytes(self.nbytes)}; {self.reason})"


class IBPFeatureStore(FeatureStore):
    """A PyG ``FeatureStore`` holding node tensors compressed with IBP in host memory.

    Tensors are keyed by ``(group_name, attr_name)`` (``group_name`` is the node
    type, or None for a homogeneous graph) and always stored whole
    (``index=None``). ``put_tensor`` accepts a tensor or numpy array, a
    ``CompressedTensor`` or the path of a saved one (``.ibp``, memory-mapped when
    ``mmap=True``).

    compress: which tensors to compress. "auto" (default): 2-D tensors of a codec
        dtype holding at least ``min_bytes`` bytes, kept raw if compression does
        not shrink them or, on a CPU store, shrinks them less than ``min_ratio``
        times (decoding would cost more than it saves) unless the raw tensor is
        larger than ``memory_limit`` bytes (default: half the physical memory); "always": every 2-D tensor of a codec dtype; "never":
        none (an uncompressed baseline with the same code path). Other tensors
        (1-D labels, bool masks, ...) stay raw. The repr lists each decision.
    device: where gathered rows are returned. "cuda" decodes on the GPU from pinned
        host memory (compressed payloads are pinned when put) and must gather in
        the main process.
    mode: the codec's mask selection ("auto" or "paper"), for tensors compressed here.
    threads: CPU decode threads (default ``torch.get_num_threads()``).
    count_bytes: keep ``bytes_read`` / ``raw_bytes_read`` up to date (with ids on a
        GPU this copies them to the host once per gather).
    """

    def __init__(self, device: Union[str, torch.device] = "cpu", *, compress: str = "auto",
                 mode: str = "auto", min_bytes: int = DEFAULT_MIN_BYTES,
                 threads: Optional[int] = None, mmap: bool = True, count_bytes: bool = True,
                 min_ratio: float = DEFAULT_MIN_RATIO, memory_limit: Optional[int] = None):
        super().__init__()
        op = "IBPFeatureStore"
        if compress not in COMPRESS_POLICIES:
            raise ValueError(f"{op}: compress must be one of {list(COMPRESS_POLICIES)}, "
                             f"got {compress!r}")
        if mode not in ("auto", "paper"):
            raise ValueError(f"{op}: mode must be 'auto' or 'paper', got {mode!r}")
        if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 0:
            raise ValueError(f"{op}: min_bytes must be an int >= 0, got {min_bytes!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ValueError(f"{op}: threads must be a positive int or None, got {threads!r}")
        if isinstance(min_ratio, bool) or not isinstance(min_ratio, (int, float)) or \
                not min_ratio >= 0:
            raise ValueError(f"{op}: min_ratio must be a number >= 0, got {min_ratio!r}")
        if memory_limit is not None and (isinstance(memory_limit, bool) or
                                         not isinstance(memory_limit, int) or memory_limit < 0):
            raise ValueError(f"{op}: memory_limit must be an int >= 0 or None, got "
                             f"{memory_limit!r}")
        self.min_ratio = float(min_ratio)
        self.memory_limit = _physical_memory() // 2 if memory_limit is None else memory_limit
        self.device = _store_device(device, op)
        self.compress_policy = compress
        self.mode = mode
        self.min_bytes = min_bytes
        self.threads = threads
        self.mmap = mmap
        self.count_bytes = count_bytes
        self._entries: Dict[Tuple[Any, Any], _Entry] = {}
        self.reset_counters()

    # ---- counters ------------------------------------------------------------------------
    def check_files(self) -> None:
        """Raises ibp_gnn.FileChangedError when the .ibp file under a memory-mapped
        tensor changed since it was loaded (a few stat calls; ibp_gnn.Prefetcher
        calls it when an epoch starts)."""
        for e in self._entries.values():
            if e.compressed:
                e.ct.check_file()

    def reset_counters(self) -> None:
        """Zero ``bytes_read``, ``raw_bytes_read`` and ``rows_read``."""
        self.bytes_read = 0
        self.raw_bytes_read = 0
        self.rows_read = 0

    # ---- description -----------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes the stored tensors occupy in host memory."""
        return sum(e.nbytes for e in self._entries.values())

    @property
    def raw_nbytes(self) -> int:
        """Bytes the stored tensors would occupy uncompressed."""
        return sum(e.raw_nbytes for e in self._entries.values())

    def is_compressed(self, *args, **kwargs) -> bool:
        """Whether the tensor named by ``(group_name, attr_name)`` is stored compressed."""
        return self._entry(self._attr(*args, **kwargs), "is_compressed").compressed

    def describe(self) -> Dict[str, dict]:
        """Per tensor: whether it is compressed, shape, dtype, bytes and the reason."""
        out = {}
        for key, e in self._entries.items():
            out[_key_name(key)] = {
                "compressed": e.compressed, "shape": tuple(e.shape),
                "dtype": str(e.dtype).replace("torch.", ""), "nbytes": e.nbytes,
                "raw_nbytes": e.raw_nbytes, "reason": e.reason}
        return out

    def __repr__(self) -> str:
        head = (f"IBPFeatureStore(device={self.device}, compress={self.compress_policy!r}, "
                f"{len(self._entries)} tensors, {_fmt_bytes(self.nbytes)} held for "
                f"{_fmt_bytes(self.raw_nbytes)} raw")
        if not self._entries:
            return head + ")"
        lines = [f"  {_key_name(k)}: {e.describe()}" for k, e in self._entries.items()]
        return head + ":\n" + "\n".join(lines) + "\n)"

    # ---- put ------------------------------------------------------------------------------
    def _attr(self, *args, **kwargs) -> TensorAttr:
        attr = self._tensor_attr_cls.cast(*args, **kwargs)
        for field in ("group_name", "attr_name"):
            if not attr.is_set(field):
                setattr(attr, field, None)
        return attr

    def _put_tensor(self, tensor, attr: TensorAttr) -> bool:
        key = (attr.group_name, attr.attr_name)
        name = _key_name(key)
        index = attr.index
        if not (index is None or (isinstance(index, slice) and index == slice(None))):
            raise ValueError(f"IBPFeatureStore.put_tensor({name!r}): index must be None (the "
                             "whole tensor): compressed tensors are written whole; to change "
                             "rows, put the complete tensor again")
        self._entries[key] = self._make_entry(tensor, name)
        return True

    def _make_entry(self, value, name: str) -> _Entry:
        op = f"IBPFeatureStore.put_tensor({name!r})"
        if isinstance(value, (str, os.PathLike)):
            ct = load(value, mmap=self.mmap)
            return self._placed(_Entry(ct, None, f"loaded from {os.fspath(value)}"))
        if isinstance(value, CompressedTensor):
            return self._placed(_Entry(value, None, "given compressed"))
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{op}: expected a torch.Tensor, numpy.ndarray, CompressedTensor "
                            f"or the path of a saved one, got {type(value).__name__}")
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        policy = self.compress_policy
        if policy == "never":
            return self._placed(_Entry(None, t, "compress='never'"))
        if t.dim() != 2:
            return self._placed(_Entry(None, t, f"{t.dim()}-D: only 2-D tensors are compressed"))
        if t.dtype not in _CODEC_DTYPES:
            return self._placed(_Entry(None, t, f"dtype {t.dtype} is not supported by the codec"))
        raw_nbytes = t.numel() * t.element_size()
        if policy == "auto" and raw_nbytes < self.min_bytes:
            return self._placed(_Entry(None, t, f"{_fmt_bytes(raw_nbytes)} < min_bytes="
                                                f"{self.min_bytes}"))
        ct = compress(t, mode=self.mode, threads=self.threads)
        if policy == "auto" and ct.ratio <= 1.0:
            return self._placed(_Entry(None, t, f"compression would not shrink it "
                                                f"(ratio {ct.ratio:.2f})"))
        if policy == "auto" and self.device.type == "cpu" and ct.ratio < self.min_ratio:
            if raw_nbytes <= self.memory_limit:
                return self._placed(_Entry(None, t, f"kept raw: ratio {ct.ratio:.2f} < min_ratio="
                                                    f"{self.min_ratio:g} on a CPU store (decoding "
                                                    "would cost more than it saves)"))
            return self._placed(_Entry(ct, None, f"compress={policy!r}, mode={self.mode!r}: "
                                                 f"ratio {ct.ratio:.2f} < min_ratio="
                                                 f"{self.min_ratio:g}, compressed anyway: "
                                                 f"{_fmt_bytes(raw_nbytes)} raw > memory_limit="
                                                 f"{_fmt_bytes(self.memory_limit)}"))
        return self._placed(_Entry(ct, None, f"compress={policy!r}, mode={self.mode!r}"))

    def _placed(self, e: _Entry) -> _Entry:
        """Pins what a CUDA store reads from host memory."""
        if self.device.type == "cuda":
            if e.ct is not None:
                e.ct.pin_memory()
            elif e.raw.numel():
                e.raw = e.raw.pin_memory()
        return e

    def set_cache(self, attr_name, group_name=None, *, hot=None, budget=0,
                  transfer: str = "auto"):
        """Puts a compressed cache of rows `hot` (most valuable first, e.g.
        ``ibp_gnn.cache.presample_hot_rows``) within `budget` bytes on the store's
        device in front of a compressed tensor (``ibp_gnn.cache.CachedFeature``),
        misses travelling by `transfer`; returns it (its counters report hits and
        bus bytes)."""
        from .cache import CachedFeature

        e = self._entry(self._attr(group_name, attr_name), "set_cache")
        if not e.compressed:
            raise ValueError(f"IBPFeatureStore.set_cache: {_key_name((group_name, attr_name))!r} "
                             f"is stored raw ({e.reason}); only compressed tensors are cached")
        e.cached = CachedFeature(e.ct, hot, budget=budget, device=self.device, transfer=transfer,
                                 threads=self.threads)
        return e.cached

    # ---- get ------------------------------------------------------------------------------
    def _entry(self, attr: TensorAttr, op: str) -> _Entry:
        key = (attr.group_name, attr.attr_name)
        e = self._entries.get(key)
        if e is None:
            known = ", ".join(repr(_key_name(k)) for k in self._entries) or "none"
            raise KeyError(f"IBPFeatureStore.{op}: no tensor {_key_name(key)!r} "
                           f"(group_name={attr.group_name!r}, attr_name={attr.attr_name!r}); "
                           f"stored: {known}")
        return e

    def _check_process(self, op: str) -> None:
        if self.device.type == "cuda" and torch.utils.data.get_worker_info() is not None:
            raise RuntimeError(
                f"IBPFeatureStore.{op}: this store decodes on {self.device}, but it was called "
                "in a DataLoader worker process, where CUDA cannot run (it is not usable in "
                "forked subprocesses). Gather in the main process: pass "
                "filter_per_worker=False to the loader (or use num_workers=0), or use a "
                "store with device='cpu' in the workers.")

    @staticmethod
    def _ids(index, rows: int, name: str, op: str):
        """(ids tensor or None for all rows, scalar?) for a TensorAttr index."""
        if index is None:
            return None, False
        if isinstance(index, slice):
            return torch.arange(rows)[index], False
        if isinstance(index, (torch.Tensor, np.ndarray)) and index.ndim == 0 \
                and index.dtype not in (torch.bool, np.bool_) \
                and not (index.dtype.is_floating_point if isinstance(index, torch.Tensor)
                         else index.dtype.kind not in "iu"):
            index = int(index.item())  # a 0-d integer index selects one row, as an int does
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index)
            if not -rows <= i < rows:
                raise IndexError(f"IBPFeatureStore.{op}({name!r}): index {i} is out of range "
                                 f"for {rows} rows")
            return torch.tensor([i % rows]), True
        if isinstance(index, (list, tuple, range)):
            index = torch.as_tensor(list(index), dtype=torch.int64)
        elif isinstance(index, np.ndarray):
            index = torch.from_numpy(np.ascontiguousarray(index))
        if not isinstance(index, torch.Tensor):
            raise TypeError(f"IBPFeatureStore.{op}({name!r}): index must be a tensor, numpy "
                            f"array, slice, int or None, got {type(index).__name__}")
        if index.dtype == torch.bool:
            if index.shape != (rows,):
                raise IndexError(f"IBPFeatureStore.{op}({name!r}): a boolean index must have "
                                 f"shape ({rows},), got {tuple(index.shape)}")
            index = index.nonzero().view(-1)
        if index.is_floating_point() or index.is_complex():
            raise TypeError(f"IBPFeatureStore.{op}({name!r}): index must hold integer ids, "
                            f"got {index.dtype}")
        if index.dim() != 1:
            raise ValueError(f"IBPFeatureStore.{op}({name!r}): index must be 1-D, got shape "
                             f"{tuple(index.shape)}")
        if index.dtype not in (torch.int64, torch.int32):
            index = index.to(torch.int64)
        return index.contiguous(), False

    @staticmethod
    def _check_range(ids: torch.Tensor, rows: int, name: str, op: str) -> None:
        if ids.numel() == 0:
            return
        lo, hi = torch.aminmax(ids)
        lo, hi = int(lo), int(hi)  # one synchronisation when ids are on a GPU
        if lo < 0 or hi >= rows:
            bad = lo if lo < 0 else hi
            raise IndexError(f"IBPFeatureStore.{op}({name!r}): index holds id {bad}, out of "
                             f"range for {rows} rows")

    def _gather(self, e: _Entry, ids: Optional[torch.Tensor], ids_dev: Optional[torch.Tensor],
                ids_cpu) -> torch.Tensor:
        """Rows `ids` of one entry on the store's device. `ids_dev` is `ids` already on
        the store's device (None: not moved yet); `ids_cpu` a callable giving them on
        the CPU (copied at most once per distinct index)."""
        dev = self.device
        if ids is None:  # the whole tensor
            out = e.ct.decompress(threads=self.threads) if e.compressed else e.raw
            return out.to(dev) if dev.type != "cpu" else out
        n = ids.numel()
        if self.count_bytes and n:
            self.rows_read += n
            self.raw_bytes_read += n * e.row_bytes
            self.bytes_read += (e.ct.fetch_nbytes(ids_cpu()) if e.compressed
                                else n * e.row_bytes)
        if e.cached is not None:
            return e.cached.gather(ids_dev if ids_dev is not None else ids_cpu())
        if e.compressed:
            if dev.type == "cuda":
                return e.ct.gather(ids_dev if ids_dev is not None else ids_cpu(), device=dev,
                                   check=False)
            return e.ct.gather(ids_cpu(), threads=self.threads)
        if dev.type != "cuda":
            return e.raw.index_select(0, ids_cpu())
        # Rows gathered on the CPU into page-locked memory, then copied asynchronously
        # (torch's pinned allocator keeps the buffer until the copy has run).
        host = torch.empty((n,) + tuple(e.shape[1:]), dtype=e.dtype, pin_memory=True)
        torch.index_select(e.raw, 0, ids_cpu(), out=host)
        return host.to(dev, non_blocking=True)

    def _get_tensor(self, attr: TensorAttr) -> torch.Tensor:
        return self._multi_get_tensor([attr], op="get_tensor")[0]

    def _multi_get_tensor(self, attrs: List[TensorAttr], op: str = "multi_get_tensor"
                          ) -> List[torch.Tensor]:
        """All requested tensors of a batch. Each distinct index object (PyG passes
        one per node type) is converted, range-checked and moved to the device once."""
        self._check_process(op)
        prepared: Dict[int, tuple] = {}
        out = []
        for attr in attrs:
            e = self._entry(attr, op)
            name = _key_name((attr.group_name, attr.attr_name))
            rows = e.shape[0]
            slot = (id(attr.index), rows)
            if slot not in prepared:
                ids, scalar = self._ids(attr.index, rows, name, op)
                if ids is not None and not scalar:
                    self._check_range(ids, rows, name, op)
                prepared[slot] = (ids, scalar, {})
            ids, scalar, cache = prepared[slot]

            def ids_cpu(ids=ids, cache=cache):
                if "cpu" not in cache:
                    cache["cpu"] = ids if ids.device.type == "cpu" else ids.cpu()
                return cache["cpu"]

            ids_dev = None
            if ids is not None and self.device.type == "cuda":
                if "dev" not in cache:
                    cache["dev"] = (ids if ids.device == self.device
                                    else ids.pin_memory().to(self.device, non_blocking=True))
                ids_dev = cache["dev"]
            t = self._gather(e, ids, ids_dev, ids_cpu)
            out.append(t[0] if scalar else t)
        return out

    def _get_tensor_size(self, attr: TensorAttr) -> Optional[Tuple[int, ...]]:
        e = self._entries.get((attr.group_name, attr.attr_name))
        if e is None:
            return None
        if attr.index is None or not attr.is_set("index"):
            return tuple(e.shape)
        name = _key_name((attr.group_name, attr.attr_name))
        ids, scalar = self._ids(attr.index, e.shape[0], name, "size")
        if ids is not None and not scalar:
            self._check_range(ids, e.shape[0], name, "size")
        return tuple(e.shape[1:]) if scalar else (ids.numel(),) + tuple(e.shape[1:])

    def _remove_tensor(self, attr: TensorAttr) -> bool:
        return self._entries.pop((attr.group_name, attr.attr_name), None) is not None

    def get_all_tensor_attrs(self) -> List[TensorAttr]:
        return [self._tensor_attr_cls.cast(group, name) for group, name in self._entries]


# ---- graph store ----------------------------------------------------------------------------
def _ptr(counts: torch.Tensor, n: int) -> torch.Tensor:
    ptr = torch.zeros(n + 1, dtype=torch.int64)
    if counts.numel():
        ptr[1:] = torch.cumsum(torch.bincount(counts, minlength=n), 0)
    return ptr


def _expand(ptr: torch.Tensor) -> torch.Tensor:
    n = ptr.numel() - 1
    return torch.repeat_interleave(torch.arange(n), (ptr[1:] - ptr[:-1]).to(torch.int64))


class IBPGraphStore(GraphStore):
    """A PyG ``GraphStore`` with each edge type's structure in host memory.

    Put edges in any layout (``put_edge_index((row, col), edge_type=...,
    layout="coo", size=(num_src, num_dst))``; CSC is ``(row, colptr)``, CSR
    ``(rowptr, col)``), as torch tensors or numpy arrays (memory maps of files
    written by a dataset pipeline are viewed in place, not copied). ``size`` is inferred when omitted (PyG's homogeneous samplers need
    it). ``coo()``, ``csr()`` and ``csc()`` derive a missing layout once, with the
    permutation from its edge positions to the edge ids of the stored layout, and
    keep it, so every loader built on the store reuses it. The conversion sorts
    with PyG's ``index_sort``, so a CSC derived from COO is the one PyG's ``Data``
    path builds, and samplers draw the same neighbours from both.
    """

    def __init__(self):
        super().__init__()
        self._stored: Dict[Tuple[Any, str], Tuple[Tuple[torch.Tensor, torch.Tensor], EdgeAttr]] = {}
        self._derived: Dict[Tuple[Any, str], Tuple[torch.Tensor, torch.Tensor,
                                                    Optional[torch.Tensor]]] = {}

    def __repr__(self) -> str:
        parts = []
        for (et, layout), ((a, b), attr) in self._stored.items():
            n = a.numel() if layout != "csr" else b.numel()
            name = "None" if et is None else "__".join(et) if isinstance(et, tuple) else str(et)
            parts.append(f"{name}: {layout} {n} edges, size={attr.size}")
        return f"IBPGraphStore({'; '.join(parts)})"

    @property
    def nbytes(self) -> int:
        """Bytes of the stored and derived structures."""
        total = 0
        for (a, b), _ in self._stored.values():
            total += a.numel() * a.element_size() + b.numel() * b.element_size()
        for a, b, p in self._derived.values():
            total += sum(t.numel() * t.element_size() for t in (a, b, p) if t is not None)
        return total

    def _put_edge_index(self, edge_index, edge_attr: EdgeAttr) -> bool:
        layout = EdgeLayout(edge_attr.layout).value
        op = f"IBPGraphStore.put_edge_index(edge_type={edge_attr.edge_type!r}, layout={layout!r})"
        if isinstance(edge_index, torch.Tensor) and edge_index.dim() == 2 and edge_index.size(0) == 2:
            edge_index = (edge_index[0], edge_index[1])
        if not isinstance(edge_index, (tuple, list)) or len(edge_index) != 2:
            raise TypeError(f"{op}: edge_index must be a pair (row, col) of 1-D index tensors "
                            f"or arrays, got {type(edge_index).__name__}")
        names = {"coo": ("row", "col"), "csc": ("row", "colptr"), "csr": ("rowptr", "col")}[layout]
        a = _index_1d(edge_index[0], names[0], op)
        b = _index_1d(edge_index[1], names[1], op)
        size = edge_attr.size
        for what, t in ((names[0], a), (names[1], b)):
            if t.numel() and int(t.min()) < 0:
                raise ValueError(f"{op}: {what} holds negative id {int(t.min())}; node ids and "
                                 "pointers must be >= 0")
        if layout == "coo":
            if a.numel() != b.numel():
                raise ValueError(f"{op}: row and col have {a.numel()} and {b.numel()} entries")
            inferred = ((int(a.max()) + 1 if a.numel() else 0),
                        (int(b.max()) + 1 if b.numel() else 0))
        else:
            ptr, idx = (b, a) if layout == "csc" else (a, b)
            if ptr.numel() < 1 or int(ptr[0]) != 0 or int(ptr[-1]) != idx.numel():
                raise ValueError(f"{op}: {names[1] if layout == 'csc' else names[0]} must start "
                                 f"at 0 and end at the number of edges ({idx.numel()})")
            n_idx = int(idx.max()) + 1 if idx.numel() else 0
            inferred = (n_idx, ptr.numel() - 1) if layout == "csc" else (ptr.numel() - 1, n_idx)
        if size is None:
            size = inferred
        else:
            size = (int(size[0]), int(size[1]))
            if layout != "csr" and inferred[0] > size[0] or layout != "csc" and inferred[1] > size[1]:
                raise ValueError(f"{op}: edges reach node ids up to {inferred} - 1, beyond "
                                 f"size={size}")
            if (layout == "csc" and inferred[1] != size[1]) or (layout == "csr" and inferred[0] != size[0]):
                raise ValueError(f"{op}: the pointer array describes "
                                 f"{inferred[1] if layout == 'csc' else inferred[0]} nodes, "
                                 f"size={size}")
        attr = EdgeAttr(edge_attr.edge_type, layout, is_sorted=edge_attr.is_sorted, size=size)
        self._stored[(edge_attr.edge_type, layout)] = ((a, b), attr)
        for k in [k for k in self._derived if k[0] == edge_attr.edge_type]:
            del self._derived[k]
        return True

    def put_csc(self, indptr, indices, *, size: Tuple[int, int], edge_type=None,
                check: bool = True) -> None:
        """Stores a CSC (``indices`` of the in-neighbours of node v at
        ``indptr[v]:indptr[v + 1]``) viewed in place: numpy memory maps of a
        prepared dataset are never copied, and samplers use the layout as is
        (no edge permutation). ``check=False`` trusts the ids of ``indices``
        (e.g. a cache written by ``ibp_gnn.datasets.build_csc``) and skips
        their O(E) scan; the pointer array's ends and length are always checked."""
        op = f"IBPGraphStore.put_csc(edge_type={edge_type!r})"
        ptr = _index_1d(indptr, "indptr", op)
        idx = _index_1d(indices, "indices", op)
        size = (int(size[0]), int(size[1]))
        if ptr.numel() != size[1] + 1:
            raise ValueError(f"{op}: indptr has {ptr.numel()} entries, size={size} needs "
                             f"{size[1] + 1}")
        if int(ptr[0]) != 0 or int(ptr[-1]) != idx.numel():
            raise ValueError(f"{op}: indptr must start at 0 and end at the number of edges "
                             f"({idx.numel()}), got {int(ptr[0])} .. {int(ptr[-1])}")
        if check:
            self.put_edge_index((idx, ptr), edge_type=edge_type, layout="csc", size=size)
            return
        attr = EdgeAttr(edge_type, "csc", is_sorted=True, size=size)
        self._stored[(edge_type, "csc")] = ((idx, ptr), attr)
        for k in [k for k in self._derived if k[0] == edge_type]:
            del self._derived[k]

    def _get_edge_index(self, edge_attr: EdgeAttr):
        hit = self._stored.get((edge_attr.edge_type, EdgeLayout(edge_attr.layout).value))
        return hit[0] if hit is not None else None

    def _remove_edge_index(self, edge_attr: EdgeAttr) -> bool:
        key = (edge_attr.edge_type, EdgeLayout(edge_attr.layout).value)
        for k in [k for k in self._derived if k[0] == edge_attr.edge_type]:
            del self._derived[k]
        return self._stored.pop(key, None) is not None

    def get_all_edge_attrs(self) -> List[EdgeAttr]:
        return [EdgeAttr(a.edge_type, a.layout, a.is_sorted, a.size)
                for _, a in self._stored.values()]

    # ---- layouts -----------------------------------------------------------------------------
    def coo(self, edge_types: Optional[List[Any]] = None, store: bool = False):
        return self._layouts("coo", edge_types)

    def csr(self, edge_types: Optional[List[Any]] = None, store: bool = False):
        return self._layouts("csr", edge_types)

    def csc(self, edge_types: Optional[List[Any]] = None, store: bool = False):
        return self._layouts("csc", edge_types)

    def _layouts(self, layout: str, edge_types):
        types = list(dict.fromkeys(et for et, _ in self._stored))
        if not types:
            raise ValueError(f"IBPGraphStore.{layout}: the store holds no edges")
        if not all(et is not None for et in types):  # homogeneous: tensors, as PyG's stores
            return self._layout(types[0], layout)
        if edge_types is not None:
            missing = [et for et in edge_types if et not in types]
            if missing:
                raise ValueError(f"IBPGraphStore.{layout}: edge types {missing} are not in the "
                                 f"store (it holds {types})")
            types = [et for et in types if et in edge_types]
        rows, cols, perms = {}, {}, {}
        for et in types:
            rows[et], cols[et], perms[et] = self._layout(et, layout)
        return rows, cols, perms

    def _layout(self, edge_type, layout: str):
        """(a, b, perm) of one edge type in `layout`; perm maps positions in it to
        edge ids of the stored layout (None: the same order)."""
        if (edge_type, layout) in self._stored:
            (a, b), _ = self._stored[(edge_type, layout)]
            return a, b, None
        if (edge_type, layout) in self._derived:
            return self._derived[(edge_type, layout)]
        for src in ("coo", "csc", "csr"):
            if (edge_type, src) in self._stored:
                break
        (a, b), attr = self._stored[(edge_type, src)]
        num_src, num_dst = attr.size
        if src == "coo":
            row, col, sorted_by_dst = a.to(torch.int64), b.to(torch.int64), attr.is_sorted
        elif src == "csc":
            row, col, sorted_by_dst = a.to(torch.int64), _expand(b), True
        else:
            row, col, sorted_by_dst = _expand(a), b.to(torch.int64), False
        if layout == "coo":
            out = (row, col, None)
        elif layout == "csc":
            if sorted_by_dst:
                out = (row, _ptr(col, num_dst), None)
            else:
                sorted_col, perm = index_sort(col, max_value=num_dst)
                out = (row[perm], _ptr(sorted_col, num_dst), perm)
        else:
            sorted_row, perm = index_sort(row, max_value=num_src)
            out = (_ptr(sorted_row, num_src), col[perm], perm)
        self._derived[(edge_type, layout)] = out
        return out


# ---- from PyG data -----------------------------------------------------------------------------
def from_data(data, device: Union[str, torch.device] = "cpu", **store_kwargs
              ) -> Tuple[IBPFeatureStore, IBPGraphStore]:
    """(IBPFeatureStore, IBPGraphStore) holding a ``Data`` or ``HeteroData``.

    Every node-level tensor (``x``, ``y``, masks, ...) of every node type goes to
    the feature store (compressed or raw as ``store_kwargs['compress']`` decides,
    see :class:`IBPFeatureStore`); every edge type's ``edge_index`` goes to the
    graph store in COO with its size. Edge-level tensors (``edge_attr``, ...) are
    left out with a warning: PyG's loaders over a (FeatureStore, GraphStore) pair
    fetch node tensors only.
    """
    from torch_geometric.data import Data, HeteroData

    fs = IBPFeatureStore(device, **store_kwargs)
    gs = IBPGraphStore()
    skipped = []
    if isinstance(data, HeteroData):
        for nt in data.node_types:
            store = data[nt]
            for key, value in store.items():
                if isinstance(value, torch.Tensor) and store.is_node_attr(key):
                    fs.put_tensor(value, group_name=nt, attr_name=key, index=None)
        for et in data.edge_types:
            store = data[et]
            if "edge_index" not in store:
                raise ValueError(f"from_data: edge type {et} has no edge_index")
            src, _, dst = et
            gs.put_edge_index(store.edge_index, edge_type=et, layout="coo",
                              size=(data[src].num_nodes, data[dst].num_nodes))
            skipped += [f"{et}.{k}" for k, v in store.items()
                        if k != "edge_index" and isinstance(v, torch.Tensor)]
        missing = [nt for nt in data.node_types
                   if not any(g == nt for g, _ in fs._entries)]
        if missing:
            raise ValueError(f"from_data: node types {missing} have no node-level tensor; PyG's "
                             "samplers learn node types and counts from the feature store, so "
                             "give each at least one (e.g. data[nt].x or data[nt].n_id)")
    elif isinstance(data, Data):
        if data.edge_index is None:
            raise ValueError("from_data: data has no edge_index")
        n = data.num_nodes
        for key, value in data.items():
            if key == "edge_index" or not isinstance(value, torch.Tensor):
                continue
            if data.is_node_attr(key):
                fs.put_tensor(value, group_name=None, attr_name=key, index=None)
            else:
                skipped.append(key)
        gs.put_edge_index(data.edge_index, edge_type=None, layout="coo", size=(n, n))
    else:
        raise TypeError(f"from_data: data must be a torch_geometric Data or HeteroData, got "
                        f"{type(data).__name__}")
    if skipped:
        warnings.warn(f"from_data: edge-level tensors {skipped} are not stored: PyG's loaders "
                      "over a (FeatureStore, GraphStore) pair fetch node tensors only",
                      stacklevel=2)
    return fs, gs
