"""PyG drop-in: node tensors compressed with Invariant Bit Packing behind PyG's
remote-backend interface, so ``NeighborLoader`` / ``LinkNeighborLoader`` /
``NodeLoader`` gather each batch's rows from the compressed store.

::

    from ibp_gnn.loader import NeighborLoader     # PyG's loader on ibp_gnn's sampler
    from ibp_gnn.pyg import from_data

    feature_store, graph_store = from_data(data, device="cpu")   # or "cuda"
    loader = NeighborLoader((feature_store, graph_store), num_neighbors=[15, 10],
                            input_nodes=train_idx, batch_size=1024)

(PyG's own ``torch_geometric.loader.NeighborLoader`` works too, given
``neighbor_sampler=ibp_gnn.sampler.NeighborSampler(...)``; without it PyG builds
its own sampler, which needs pyg-lib or torch-sparse.) Every batch's ``x`` is
bit-identical to ``data.x[batch.n_id]``. Edge-level tensors are kept too
(:meth:`IBPFeatureStore.put_edge_tensor`); :func:`attach_edge_features` (which
``ibp_gnn.loader`` applies) gives a batch their rows for ``batch.e_id``.
:func:`compress_data` compresses a ``Data``'s tensors in place instead.

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

import copy
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import FeatureStore, TensorAttr
from torch_geometric.data.feature_store import AttrView

from ._tensor import CompressedTensor, compress, load

__all__ = ["IBPFeatureStore", "IBPGraphStore", "attach_edge_features", "compress_data", "from_data",
           "store_type_order"]

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


def _is_edge_key(key) -> bool:
    return isinstance(key[0], tuple) and len(key[0]) == 2 and key[0][0] == "edge"


def _edge_key_name(key) -> str:
    (_, et), attr = key
    return f"edge {attr}" if et is None else f"edge {'__'.join(et)}.{attr}"


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
        # Edge-level tensors, keyed (edge_type, attr_name); kept out of
        # get_all_tensor_attrs, which PyG's loaders index with node ids.
        self._edge_entries: Dict[Tuple[Any, str], _Entry] = {}
        self.reset_counters()

    # ---- counters ------------------------------------------------------------------------
    def check_files(self) -> None:
        """Raises ibp_gnn.FileChangedError when the .ibp file under a memory-mapped
        tensor changed since it was loaded (a few stat calls; ibp_gnn.Prefetcher
        calls it when an epoch starts)."""
        for e in list(self._entries.values()) + list(self._edge_entries.values()):
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
        return sum(e.nbytes for e in self._all_entries().values())

    @property
    def raw_nbytes(self) -> int:
        """Bytes the stored tensors would occupy uncompressed."""
        return sum(e.raw_nbytes for e in self._all_entries().values())

    def _all_entries(self) -> Dict[Tuple[Any, Any], _Entry]:
        out = dict(self._entries)
        out.update({(("edge", et), name): e for (et, name), e in self._edge_entries.items()})
        return out

    def is_compressed(self, *args, **kwargs) -> bool:
        """Whether the tensor named by ``(group_name, attr_name)`` is stored compressed."""
        return self._entry(self._attr(*args, **kwargs), "is_compressed").compressed

    def describe(self) -> Dict[str, dict]:
        """Per tensor: whether it is compressed, shape, dtype, bytes and the reason."""
        out = {}
        for key, e in self._all_entries().items():
            out[_edge_key_name(key) if _is_edge_key(key) else _key_name(key)] = {
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
        lines = [f"  {_edge_key_name(k) if _is_edge_key(k) else _key_name(k)}: {e.describe()}"
                 for k, e in self._all_entries().items()]
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

    # ---- edge-level tensors -------------------------------------------------------------------
    def put_edge_tensor(self, value, edge_type=None, attr_name: str = "edge_attr") -> None:
        """Stores an edge-level tensor (one row per edge, in the order of the edges
        put in the graph store: what PyG's ``e_id`` indexes), compressed or raw by
        the store's policy. Loaders of ``ibp_gnn.loader`` then give each batch
        ``batch.<attr_name> = value[batch.e_id]`` (per edge type for heterogeneous
        graphs); :func:`attach_edge_features` does it for any PyG loader's batch."""
        if not isinstance(attr_name, str) or not attr_name:
            raise TypeError(f"IBPFeatureStore.put_edge_tensor: attr_name must be a non-empty "
                            f"str, got {attr_name!r}")
        et = tuple(edge_type) if isinstance(edge_type, (tuple, list)) else edge_type
        name = _edge_key_name((("edge", et), attr_name))
        self._edge_entries[(et, attr_name)] = self._make_entry(value, name)

    def edge_tensor_names(self, edge_type=None) -> List[str]:
        """Names of the edge-level tensors stored for `edge_type`."""
        et = tuple(edge_type) if isinstance(edge_type, (tuple, list)) else edge_type
        return [name for (t, name) in self._edge_entries if t == et]

    def get_edge_tensor(self, edge_type=None, attr_name: str = "edge_attr", index=None
                        ) -> torch.Tensor:
        """Rows `index` (edge ids, None: all) of an edge-level tensor, on the store's
        device, counted in ``bytes_read`` like node rows."""
        op = "get_edge_tensor"
        self._check_process(op)
        et = tuple(edge_type) if isinstance(edge_type, (tuple, list)) else edge_type
        key = (et, attr_name)
        name = _edge_key_name((("edge", et), attr_name))
        e = self._edge_entries.get(key)
        if e is None:
            known = ", ".join(repr(_edge_key_name((("edge", t), a)))
                              for t, a in self._edge_entries) or "none"
            raise KeyError(f"IBPFeatureStore.{op}: no edge tensor {name!r}; stored: {known}")
        ids, scalar = self._ids(index, e.shape[0], name, op)
        if ids is not None and not scalar:
            self._check_range(ids, e.shape[0], name, op)
        cache: dict = {}

        def ids_cpu():
            if "cpu" not in cache:
                cache["cpu"] = ids if ids.device.type == "cpu" else ids.cpu()
            return cache["cpu"]

        ids_dev = ids if ids is not None and ids.device == self.device else None
        t = self._gather(e, ids, ids_dev, ids_cpu)
        return t[0] if scalar else t

    # ---- tensor-like views ------------------------------------------------------------------
    def view(self, *args, **kwargs) -> AttrView:
        """PyG's view of the store (``store[group, attr]``); once it names a stored
        tensor it also indexes like that tensor (``view[idx]``, ``.shape``,
        ``.size()``, ``.dtype``, ``.device``, ``len()``, ``.to(device)``)."""
        return FeatureView(self, self._tensor_attr_cls.cast(*args, **kwargs))

    def to(self, device: Union[str, torch.device]) -> "IBPFeatureStore":
        """A store over the same host tensors returning rows on `device` (self when it
        already does); its byte counters start at zero."""
        d = _store_device(device, "IBPFeatureStore.to")
        if d == self.device:
            return self
        other = copy.copy(self)
        other.device = d
        other.reset_counters()
        for e in self._entries.values():
            other._placed(e)
        return other

    def tensor(self, attr_name: str = "x", group_name=None) -> "FeatureView":
        """The stored tensor `attr_name` (of node type `group_name`) as a tensor-like
        view: ``fs.tensor("x")[batch.n_id]`` is ``data.x[batch.n_id]``."""
        view = self.view(group_name, attr_name)
        self._entry(view._attr, "tensor")
        return view


# The view, the graph store and the Data helpers live beside this module; their names are this module's.
from .pyg_view import FeatureView  # noqa: E402
from .pyg_graph import IBPGraphStore  # noqa: E402
from .pyg_data import (attach_edge_features, compress_data, from_data,  # noqa: E402
                       store_type_order)
