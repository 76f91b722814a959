"""``IBPGraphStore``: the PyG ``GraphStore`` of ``ibp_gnn.pyg`` (re-exported there)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch_geometric.data import EdgeAttr, GraphStore
from torch_geometric.data.graph_store import EdgeLayout
from torch_geometric.utils import index_sort

from ._tensor import index_1d as _index_1d

__all__ = ["IBPGraphStore"]


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
