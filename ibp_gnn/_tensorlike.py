"""The part of the ``torch.Tensor`` interface that GNN code uses on a node feature
matrix (``x[idx]``, ``.shape``, ``.size()``, ``.dtype``, ``.device``, ``.to()``,
``len()``), for row stores that decode on demand: ``CompressedTensor``, its
device views, and the per-attribute views of ``ibp_gnn.pyg.IBPFeatureStore``.

Indexing follows torch's rules for the first dimension (an int drops it; a slice,
list, integer or boolean tensor or numpy array selects rows; negative ids count
from the end; an index of shape S gives rows of shape S + row shape) and applies
any further subscripts to the gathered rows, so ``x[idx]`` and ``x[idx, :16]`` give
what they give on the uncompressed tensor, bit for bit. Only the selected rows are
decoded. Rows come back on ``.device``: the device the store decodes on, whatever
the device of the ids (``.to(device)`` gives a view that decodes elsewhere).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import numpy as np
import torch


def _plain_device(device, op: str) -> torch.device:
    try:
        d = torch.device(device)
    except (TypeError, RuntimeError) as e:
        raise TypeError(f"{op}: device must be a torch.device or a string such as 'cpu' or "
                        f"'cuda:0', got {device!r}") from e
    if d.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: rows are decoded on 'cpu' or 'cuda[:N]', got {str(d)!r}")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{op}: device {str(d)!r} asked, but torch.cuda.is_available() is "
                               "False (no GPU, or a CPU build of torch)")
        if d.index is None:
            d = torch.device("cuda", torch.cuda.current_device())
    return d


_TENSOR_NAMES = frozenset(n for n in dir(torch.Tensor) if not n.startswith("_"))


class CompressedOpError(TypeError, AttributeError):
    """A torch operation asked of compressed rows that are not decoded. A TypeError,
    and an AttributeError for a missing tensor method (so ``hasattr`` is False)."""


def _not_decoded(owner: str, what: str) -> CompressedOpError:
    return CompressedOpError(
        f"{owner}: {what} does not run on compressed rows (only x[ids] and "
        "torch.index_select(x, 0, ids) do); gather the rows you need with x[ids] (or "
        "decode all of them with .decompress()) and call it on the tensor that returns. "
        "(A batch of a torch_geometric loader over a Data holding compressed tensors "
        "carries them whole: load it with ibp_gnn.loader's loaders, which gather each "
        "batch's rows.)")


class TensorLike:
    """Mixin: a 2-D (rows x ...) tensor read row by row. Subclasses provide
    ``shape``, ``dtype``, ``device`` and ``_take(ids)``: rows ``ids`` (1-D int64,
    checked to lie in range, on the CPU or on ``device``) on ``device``; and
    ``_on(device)``: the same rows decoded on `device`."""

    _op_name = "TensorLike"

    # ---- description (torch names) -------------------------------------------------------
    def size(self, dim: Optional[int] = None):
        if dim is None:
            return self.shape
        nd = len(self.shape)
        if not -nd <= dim < nd:
            raise IndexError(f"{self._op_name}.size: dim {dim} is out of range for a "
                             f"{nd}-D tensor")
        return self.shape[dim]

    def dim(self) -> int:
        return len(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def __len__(self) -> int:
        return int(self.shape[0])

    # ---- placement ---------------------------------------------------------------------------
    def to(self, *args, **kwargs):
        """``to(device)``: a view of the same rows decoded on `device` (self when it
        already decodes there). Rows are not converted: ``x[idx].to(dtype)`` does
        that after decoding."""
        op = f"{self._op_name}.to"
        kwargs.pop("non_blocking", None)
        kwargs.pop("copy", None)
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"{op}: unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            elif isinstance(a, torch.Tensor):
                device, dtype = a.device, a.dtype
            elif device is None:
                device = a
            else:
                raise TypeError(f"{op}: unexpected argument {a!r}")
        if dtype is not None and dtype != self.dtype:
            raise TypeError(f"{op}: rows are stored as {self.dtype} and decoded bit for bit, "
                            f"not converted to {dtype}; convert the decoded rows instead: "
                            f"x[idx].to({dtype})")
        if device is None:
            return self
        d = _plain_device(device, op)
        return self if d == self.device else self._on(d)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else torch.device("cuda", torch.device(
            device).index if not isinstance(device, int) else device))

    # ---- torch functions ------------------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """``torch.index_select(x, 0, ids)`` (what DGL's and PyG's row gathers call)
        gathers rows as ``x[ids]``; every other torch function raises TypeError
        naming what to do instead, rather than reading the stored bytes."""
        kwargs = dict(kwargs or {})
        # By name: torch_geometric replaces torch.index_select by a wrapper of its own.
        if getattr(func, "__name__", None) == "index_select":
            names = ("input", "dim", "index")
            given = dict(zip(names, args))
            given.update({k: kwargs.pop(k) for k in names if k in kwargs})
            out = kwargs.pop("out", None)
            src, dim, index = given.get("input"), given.get("dim"), given.get("index")
            if isinstance(src, TensorLike) and not kwargs and dim in (0, -len(src.shape)) \
                    and isinstance(index, torch.Tensor) and index.dim() <= 1:
                rows = src[index.reshape(-1)]
                if out is None:
                    return rows
                out.resize_(rows.shape)
                return out.copy_(rows)
        raise _not_decoded(cls._op_name, f"torch.{getattr(func, '__name__', str(func))}")

    def __getattr__(self, name: str):
        """Tensor methods that would need the decoded rows (``x.contiguous()``,
        ``x.sum()``, ...) raise CompressedOpError saying what to do instead."""
        if name in _TENSOR_NAMES:
            raise _not_decoded(type(self)._op_name, f"Tensor.{name}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---- rows ----------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> torch.Tensor:
        rest: Tuple[Any, ...] = ()
        if isinstance(key, tuple):
            if not key:
                key = slice(None)
            else:
                key, rest = key[0], key[1:]
        if key is Ellipsis:
            key, rest = slice(None), (Ellipsis,) + rest
        ids, shape = self._row_ids(key)
        out = self._take(ids)
        if shape is not None:
            out = out.reshape(tuple(shape) + tuple(self.shape[1:]))
        if rest:
            out = out[(slice(None),) * (0 if shape == () else len(shape) if shape is not None
                                        else 1) + rest]
        return out

    def _row_ids(self, key) -> Tuple[torch.Tensor, Optional[Tuple[int, ...]]]:
        """(1-D int64 row ids in range, shape of the index or None for 1-D)."""
        op = f"{self._op_name}.__getitem__"
        rows = len(self)
        if isinstance(key, (bool, np.bool_)):
            raise TypeError(f"{op}: a bool index is not a row id; index with ints, slices or "
                            "index tensors")
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -rows <= i < rows:
                raise IndexError(f"{op}: index {i} is out of range for {rows} rows")
            return torch.tensor([i % rows], dtype=torch.int64), ()
        if isinstance(key, slice):
            return torch.arange(rows, dtype=torch.int64)[key], None
        if isinstance(key, range):
            key = list(key)
        if isinstance(key, list):
            if any(isinstance(k, (bool, np.bool_)) for k in key) and key and all(
                    isinstance(k, (bool, np.bool_)) for k in key):
                key = torch.tensor(key, dtype=torch.bool)
            else:
                try:
                    key = torch.as_tensor(key, dtype=torch.int64)
                except (TypeError, ValueError, RuntimeError) as e:
                    raise TypeError(f"{op}: a list index must hold ints, got {key!r:.80}") from e
        elif isinstance(key, np.ndarray):
            if key.dtype != np.bool_ and key.dtype.kind not in "iu":
                raise TypeError(f"{op}: a numpy index must hold integers or bools, got dtype "
                                f"{key.dtype}")
            key = torch.from_numpy(np.ascontiguousarray(key))
        if not isinstance(key, torch.Tensor):
            raise TypeError(f"{op}: index must be an int, slice, list, range, numpy array or "
                            f"tensor, got {type(key).__name__}")
        if key.dtype == torch.bool:
            if key.shape != (rows,):
                raise IndexError(f"{op}: a boolean index must have shape ({rows},), got "
                                 f"{tuple(key.shape)}")
            return key.nonzero().view(-1), None
        if key.is_floating_point() or key.is_complex():
            raise TypeError(f"{op}: index tensors must hold integers, got {key.dtype}")
        if key.dim() == 0:
            return self._row_ids(int(key))
        shape = None if key.dim() == 1 else tuple(key.shape)
        ids = key.reshape(-1).to(torch.int64)
        if ids.device.type != "cpu" and ids.device != self.device:
            ids = ids.to(self.device) if self.device.type == "cuda" else ids.cpu()
        if ids.numel():
            lo, hi = torch.aminmax(ids)
            lo, hi = int(lo), int(hi)
            if lo < -rows or hi >= rows:
                bad = lo if lo < -rows else hi
                raise IndexError(f"{op}: index holds id {bad}, out of range for {rows} rows")
            if lo < 0:
                ids = torch.where(ids < 0, ids + rows, ids)
        return ids.contiguous(), shape


class CompressedView(TensorLike):
    """The rows of a ``CompressedTensor`` decoded on ``device`` (what
    ``ct.to(device)`` returns): ``view[idx]`` is ``ct.gather(idx, device=device)``.
    A CUDA view pins the payload once, when it is made."""

    _op_name = "CompressedView"

    def __init__(self, ct, device: Union[str, torch.device]):
        self.ct = ct
        self._device = _plain_device(device, "CompressedView")
        if self._device.type == "cuda":
            ct.pin_memory()

    @property
    def shape(self) -> torch.Size:
        return self.ct.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.ct.dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def gather(self, idx, out: Optional[torch.Tensor] = None, *, threads: Optional[int] = None
               ) -> torch.Tensor:
        return self.ct.gather(idx, out, device=self._device, threads=threads)

    def _take(self, ids: torch.Tensor) -> torch.Tensor:
        return self.ct._take_on(ids, self._device)

    def _on(self, device: torch.device):
        return self.ct if device.type == "cpu" else CompressedView(self.ct, device)

    def __repr__(self) -> str:
        return f"CompressedView({self.ct!r}, device={self._device})"
