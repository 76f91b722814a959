"""Uniform multi-hop neighbour sampling without pyg-lib or torch-sparse, on the
CPU (multithreaded, GIL released) or on a GPU reading the graph from pinned
host memory (zero-copy) or from GPU memory.

Three layers, one name per job:

* :class:`CSCGraph` -- a graph's CSC structure, checked once; ``sample`` draws
  a :class:`SampledSubgraph` (layout in ``csrc/sampler/neighbor.h``).
* :class:`NeighborSampler` -- PyG's ``BaseSampler`` with the constructor of
  ``torch_geometric.sampler.NeighborSampler``; use it with PyG's loader::

      from torch_geometric.loader import NeighborLoader
      from ibp_gnn.sampler import NeighborSampler

      sampler = NeighborSampler(data, num_neighbors=[10, 5])
      loader = NeighborLoader(data, num_neighbors=[10, 5], batch_size=256,
                              neighbor_sampler=sampler)

  (``NodeLoader(data, node_sampler=sampler, input_nodes=..., batch_size=...)``
  is the same thing.) ``backend="pyg"`` hands sampling back to pyg-lib /
  torch-sparse.
* :func:`to_dgl_blocks` -- the per-layer src/dst ids and edges DGL blocks
  need, as plain tensors (or ``dgl.Block`` objects with ``as_dgl=True``).

Every pick is a pure function of (seed, hop, local index of the node sampled
from, draw number): the same seed gives the same sample for any thread count,
and the CPU and GPU samplers give identical outputs.
"""
from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import _C

try:  # PyG is only needed for NeighborSampler and SampledSubgraph.to_sampler_output.
    import torch_geometric.sampler as _pyg_sampler
    from torch_geometric.sampler import SamplerOutput
    from torch_geometric.sampler.base import SubgraphType

    _PygNeighborSampler = _pyg_sampler.NeighborSampler
except ImportError:  # pragma: no cover - exercised only without PyG
    _pyg_sampler = None
    SamplerOutput = None

    class _PygNeighborSampler:  # type: ignore[no-redef]
        def __init__(self, *args, **kwargs):
            raise ImportError("ibp_gnn.sampler.NeighborSampler needs torch_geometric")

__all__ = ["CSCGraph", "NeighborSampler", "SampledSubgraph", "DGLBlock", "sample_neighbors",
           "to_dgl_blocks"]

from ._sampler_checks import (_INDEX_DTYPES, _SEED_MASK, _fanouts, _index_tensor,  # noqa: F401
                              _rng_seed, _seed_tensor, _threads, _time_tensor, _value_tensor)

_GOLDEN = 0x9E3779B97F4A7C15
_STEP_SUFFIX = {"cuda": "_cuda", "host": "_host"}


# ---- results ----------------------------------------------------------------------------------
@dataclass
class SampledSubgraph:
    """A sampled subgraph in PyG's layout (see ``csrc/sampler/neighbor.h``).

    ``node``: global ids, the seeds as given (duplicates kept) then the new
    nodes of each hop in order of first appearance. ``row``/``col``: per edge,
    the local index of the picked neighbour / of the node it was picked for.
    ``edge``: per edge, its position in the CSC ``indices`` array.
    ``batch`` (disjoint sampling only, else None): per node, the index of the
    seed whose subgraph it belongs to; a global id reached from two seeds then
    appears once per seed.
    """
    node: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    edge: torch.Tensor
    num_sampled_nodes: List[int]
    num_sampled_edges: List[int]
    batch: Optional[torch.Tensor] = None

    def to_sampler_output(self, edge_permutation: Optional[torch.Tensor] = None):
        """This sample as ``torch_geometric.sampler.SamplerOutput``; with
        ``edge_permutation`` (CSC position -> original edge id) ``edge``
        holds original edge ids."""
        if SamplerOutput is None:  # pragma: no cover
            raise ImportError("to_sampler_output needs torch_geometric")
        edge = self.edge if edge_permutation is None else edge_permutation[self.edge]
        return SamplerOutput(node=self.node, row=self.row, col=self.col, edge=edge,
                             batch=self.batch, num_sampled_nodes=list(self.num_sampled_nodes),
                             num_sampled_edges=list(self.num_sampled_edges))


class DGLBlock(NamedTuple):
    """What ``dgl.create_block`` needs for one layer. ``src_nodes`` starts with
    ``dst_nodes`` (DGL's convention); ``src``/``dst`` index them; messages flow
    src -> dst."""
    src_nodes: torch.Tensor
    dst_nodes: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    edge_ids: torch.Tensor


def to_dgl_blocks(sub: SampledSubgraph, *, edge_permutation: Optional[torch.Tensor] = None,
                  as_dgl: bool = False) -> list:
    """Per-layer blocks of a sample, input layer first (like DGL's samplers).

    With L hops, the block of layer b uses the edges of hops 1 .. L - b: its
    dst nodes are the nodes within L - b - 1 hops, its src nodes those within
    L - b hops. This is PyG's hop structure (a node's neighbours are drawn
    once, at the hop where it was first reached); DGL's own sampler redraws
    them at every layer instead. ``as_dgl=True`` returns ``dgl.Block`` objects
    (dgl is imported only then) with ``dgl.NID`` / ``dgl.EID`` set.
    """
    L = len(sub.num_sampled_edges)
    cum_nodes = np.cumsum(sub.num_sampled_nodes).tolist()
    cum_edges = [0] + np.cumsum(sub.num_sampled_edges).tolist()
    eids = sub.edge if edge_permutation is None else edge_permutation[sub.edge]
    blocks = []
    for b in range(L):
        h = L - b
        e = cum_edges[h]
        blocks.append(DGLBlock(src_nodes=sub.node[:cum_nodes[h]],
                               dst_nodes=sub.node[:cum_nodes[h - 1]],
                               src=sub.row[:e], dst=sub.col[:e], edge_ids=eids[:e]))
    if not as_dgl:
        return blocks
    import dgl  # noqa: deferred on purpose

    out = []
    for blk in blocks:
        g = dgl.create_block((blk.src, blk.dst), num_src_nodes=blk.src_nodes.numel(),
                             num_dst_nodes=blk.dst_nodes.numel())
        g.srcdata[dgl.NID] = blk.src_nodes
        g.dstdata[dgl.NID] = blk.dst_nodes
        g.edata[dgl.EID] = blk.edge_ids
        out.append(g)
    return out


# ---- the graph ---------------------------------------------------------------------------------
class _HostRegistration:
    """Keeps a CPU tensor page-locked in place (cudaHostRegister) while it
    lives. Where the range cannot be registered (e.g. it shares a page with a
    range registered already) it falls back to a copy in torch's pinned memory."""

    def __init__(self, t: torch.Tensor):
        if not _C.cuda_built():
            raise RuntimeError("CSCGraph.pin_memory: ibp_gnn was built without CUDA")
        if not torch.cuda.is_available():
            raise RuntimeError("CSCGraph.pin_memory needs a CUDA build of torch and a GPU "
                               "(torch.cuda.is_available() is False)")
        self.tensor = t
        if t.numel() == 0 or t.is_pinned():
            self.device_ptr = t.data_ptr()  # nothing to read, or torch's pinned memory (UVA)
            return
        err, self.device_ptr = _C.host_register(t.data_ptr(), t.numel() * t.element_size(),
                                                read_only=True)  # a read-only mmap needs it
        if err == 0:
            weakref.finalize(self, _C.host_unregister, t.data_ptr())
        else:
            self.tensor = t.pin_memory()  # mapped at the same address (UVA)
            self.device_ptr = self.tensor.data_ptr()


class CSCGraph:
    """A graph in CSC form, ready to sample: the in-neighbours of node v are
    ``indices[indptr[v]:indptr[v + 1]]`` (pass CSR arrays to sample
    out-neighbours). ``indptr`` is int32 or int64 (int64 beyond 2^31 edges),
    ``indices`` int32 or int64, as torch tensors or numpy arrays (viewed, not
    copied): numpy memmaps of a prepared CSC (``np.load(..., mmap_mode="r")``)
    are sampled in place, with no copy and no edge permutation. The structure
    is checked once here, one pass over both arrays on ``threads`` threads
    (``check=False`` skips it for arrays known to be valid).

    Placement: on the CPU by default; :meth:`pin_memory` page-locks the CPU
    arrays in place so a GPU samples them zero-copy over the bus (the graph
    need not fit in GPU memory); :meth:`to` copies them to a GPU.

    Weighted sampling: ``edge_weight``, one finite weight >= 0 per CSC
    position; every sample of this graph then draws neighbours with
    probability proportional to their edge weights (semantics in
    ``csrc/sampler/pick.h``). Temporal sampling: ``edge_time`` (per CSC
    position) or ``node_time`` (per node, the time of a neighbour is its node
    time), integers, non-decreasing within each node's neighbours (PyG's
    ``to_csc`` sorts them so); samples then keep only neighbours whose time is
    <= the time of their subgraph's seed (see :meth:`sample`).
    """

    def __init__(self, indptr: Any, indices: Any, *, check: bool = True,
                 threads: Optional[int] = None, edge_weight: Any = None, edge_time: Any = None,
                 node_time: Any = None):
        op = "CSCGraph"
        self.indptr = _index_tensor(indptr, "indptr", op)
        self.indices = _index_tensor(indices, "indices", op)
        if self.indptr.device != self.indices.device:
            raise ValueError(f"{op}: indptr is on {self.indptr.device} but indices on "
                             f"{self.indices.device}")
        if self.indptr.numel() < 1:
            raise ValueError(f"{op}: indptr must have num_nodes + 1 >= 1 entries, got 0")
        self.edge_perm: Optional[torch.Tensor] = None
        self._pins: Optional[Tuple[_HostRegistration, ...]] = None
        # Per CSC position: the weights' prefix sums within each node (float64)
        # and the neighbours' times (int64); per node: the node times.
        self.weight_cumsum: Optional[torch.Tensor] = None
        self.edge_time: Optional[torch.Tensor] = None
        self.node_time: Optional[torch.Tensor] = None
        if check:
            self._check(_threads(threads, op))
        if edge_weight is not None:
            self._set_weights(edge_weight, op)
        if edge_time is not None or node_time is not None:
            self._set_times(edge_time, node_time, op)

    def _set_weights(self, edge_weight: Any, op: str) -> None:
        w = _value_tensor(edge_weight, "edge_weight", op, self.num_edges)
        if not (w.is_floating_point() or w.dtype in _INDEX_DTYPES + (torch.int16, torch.uint8)):
            raise TypeError(f"{op}: edge_weight must hold real numbers, got {w.dtype}")
        w = w.to("cpu", torch.float64).contiguous()
        bad = ~(torch.isfinite(w) & (w >= 0))
        if bool(bad.any()):
            e = int(bad.nonzero()[0, 0])
            raise ValueError(f"{op}: edge_weight must be finite and >= 0, but edge_weight[{e}] = "
                             f"{float(w[e])!r}")
        self.weight_cumsum = torch.from_numpy(
            _C.segment_cumsum(self.indptr.cpu().numpy(), w.numpy())).to(self.device)

    def _set_times(self, edge_time: Any, node_time: Any, op: str) -> None:
        if edge_time is not None and node_time is not None:
            raise ValueError(f"{op}: pass edge_time or node_time, not both")
        if node_time is not None:
            nt = _time_tensor(node_time, "node_time", op, self.num_nodes)
            self.node_time = nt.to(self.device)
            et = nt[self.indices.cpu().long()]
        else:
            et = _time_tensor(edge_time, "edge_time", op, self.num_edges)
        # Sorted within each node: a decrease only where a new node's neighbours start.
        if et.numel() > 1:
            p = self.indptr.cpu().long()
            down = et[1:] < et[:-1]
            starts = p[1:-1][(p[1:-1] > 0) & (p[1:-1] < et.numel())]
            down[starts - 1] = False
            if bool(down.any()):
                e = int(down.nonzero()[0, 0]) + 1
                v = int(torch.searchsorted(p, torch.tensor([e]), right=True)[0]) - 1
                what = "node_time of the neighbours" if node_time is not None else "edge_time"
                raise ValueError(f"{op}: temporal sampling needs the {what} of each node sorted "
                                 f"(non-decreasing), but node {v}'s neighbours are not (CSC "
                                 f"position {e}); build the CSC with PyG's to_csc(..., "
                                 "src_node_time=/edge_time=) or sort each node's neighbours")
        self.edge_time = et.contiguous().to(self.device)

    @property
    def is_weighted(self) -> bool:
        return self.weight_cumsum is not None

    @property
    def is_temporal(self) -> bool:
        return self.edge_time is not None

    @classmethod
    def from_edge_index(cls, edge_index: torch.Tensor, num_nodes: Optional[int] = None,
                        *, index_dtype: torch.dtype = torch.int64, edge_weight: Any = None,
                        edge_time: Any = None, node_time: Any = None) -> "CSCGraph":
        """CSC of a (2, E) ``edge_index`` (row = source, col = target): each node's
        in-neighbours, as PyG samples them. ``edge_perm`` maps a CSC position
        to the original edge id. ``edge_weight`` / ``edge_time`` (per edge, in
        edge_index order) and ``node_time`` (per node) make a weighted /
        temporal graph; with times, each node's neighbours are sorted by time
        (ties in edge order), as PyG's ``to_csc`` does."""
        op = "CSCGraph.from_edge_index"
        if (not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2
                or edge_index.size(0) != 2):
            raise ValueError(f"{op}: edge_index must be a (2, E) tensor, got "
                             f"{getattr(edge_index, 'shape', type(edge_index).__name__)}")
        if index_dtype not in _INDEX_DTYPES:
            raise TypeError(f"{op}: index_dtype must be torch.int32 or torch.int64, "
                            f"got {index_dtype}")
        if (edge_index.is_floating_point() or edge_index.is_complex()
                or edge_index.dtype == torch.bool):
            raise TypeError(f"{op}: edge_index must hold integer node ids, got "
                            f"{edge_index.dtype}")
        src, dst = edge_index[0].long(), edge_index[1].long()
        if num_nodes is None:
            num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
            raise IndexError(f"{op}: edge_index holds ids outside [0, {num_nodes})")
        if edge_time is not None or node_time is not None:
            if edge_time is not None and node_time is not None:
                raise ValueError(f"{op}: pass edge_time or node_time, not both")
            t = (_time_tensor(edge_time, "edge_time", op, src.numel()) if edge_time is not None
                 else _time_tensor(node_time, "node_time", op, num_nodes)[src])
            by_time = torch.sort(t, stable=True).indices
            perm = by_time[torch.sort(dst[by_time], stable=True).indices]
        else:
            perm = torch.sort(dst, stable=True).indices
        indptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
        small = index_dtype == torch.int32 and src.numel() < 2**31
        ptr_dtype = torch.int32 if small else torch.int64
        g = cls(indptr.to(ptr_dtype), src[perm].to(index_dtype), check=False)
        g.edge_perm = perm
        if edge_weight is not None:
            g._set_weights(_value_tensor(edge_weight, "edge_weight", op, perm.numel())[perm], op)
        if edge_time is not None:
            g._set_times(_time_tensor(edge_time, "edge_time", op, perm.numel())[perm], None, op)
        elif node_time is not None:
            g._set_times(None, node_time, op)
        return g

    # ---- description ----------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return self.indptr.numel() - 1

    @property
    def num_edges(self) -> int:
        return self.indices.numel()

    @property
    def device(self) -> torch.device:
        return self.indptr.device

    def is_pinned(self) -> bool:
        return self._pins is not None

    def __repr__(self) -> str:
        return (f"CSCGraph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
                f"indptr={self.indptr.dtype}, indices={self.indices.dtype}, device={self.device}, "
                f"pinned={self.is_pinned()})")

    def _check(self, threads: int) -> None:
        op = "CSCGraph"
        if self.device.type == "cpu":
            status, where = _C.validate_csc(self.indptr.numpy(), self.indices.numpy(), threads)
        else:
            status, where = self._check_torch()
        p, ix = self.indptr, self.indices
        if status == _C.CSC_INDPTR_FIRST:
            raise ValueError(f"{op}: indptr[0] must be 0, got {int(p[0])}")
        if status == _C.CSC_INDPTR_DECREASING:
            raise ValueError(f"{op}: indptr must be non-decreasing, but indptr[{where}] = "
                             f"{int(p[where])} > indptr[{where + 1}] = {int(p[where + 1])}")
        if status == _C.CSC_INDPTR_LAST:
            raise ValueError(f"{op}: indptr[-1] = {int(p[-1])} must equal len(indices) = "
                             f"{self.num_edges}")
        if status == _C.CSC_INDEX_OUT_OF_RANGE:
            raise IndexError(f"{op}: indices[{where}] = {int(ix[where])} is out of range for a "
                             f"graph of {self.num_nodes} nodes (indptr has {self.num_nodes + 1} "
                             "entries)")

    def _check_torch(self) -> Tuple[int, int]:
        p, ix = self.indptr, self.indices
        if int(p[0]) != 0:
            return _C.CSC_INDPTR_FIRST, 0
        bad = (p[1:] < p[:-1]).nonzero()
        if bad.numel():
            return _C.CSC_INDPTR_DECREASING, int(bad[0, 0])
        if int(p[-1]) != self.num_edges:
            return _C.CSC_INDPTR_LAST, self.num_nodes
        bad = ((ix < 0) | (ix >= self.num_nodes)).nonzero()
        if bad.numel():
            return _C.CSC_INDEX_OUT_OF_RANGE, int(bad[0, 0])
        return _C.CSC_OK, 0

    # ---- placement ---------------------------------------------------------------------------
    def pin_memory(self) -> "CSCGraph":
        """Page-lock the CPU arrays in place (no copy) and map them for the GPU,
        which then samples them zero-copy. Returns self."""
        if self.device.type != "cpu":
            raise ValueError(f"CSCGraph.pin_memory: the graph is on {self.device}, not the CPU")
        if self._pins is None:
            self._pins = tuple(_HostRegistration(t) if t is not None else None
                               for t in (self.indptr, self.indices, self.weight_cumsum,
                                         self.edge_time))
        return self

    def to(self, device: Union[str, torch.device]) -> "CSCGraph":
        """A copy of the graph on `device` (e.g. GPU memory, when it fits)."""
        device = torch.device(device)
        if device == self.device:
            return self
        g = CSCGraph(self.indptr.to(device), self.indices.to(device), check=False)
        g.edge_perm = self.edge_perm
        for name in ("weight_cumsum", "edge_time", "node_time"):
            t = getattr(self, name)
            setattr(g, name, t.to(device) if t is not None else None)
        return g

    def _ptrs(self, device: torch.device) -> tuple:
        """(indptr, indptr64, indices, indices64, num_nodes, num_edges) as the steps take it."""
        return (self._ptr(self.indptr, 0, device), self.indptr.dtype == torch.int64,
                self._ptr(self.indices, 1, device), self.indices.dtype == torch.int64,
                self.num_nodes, self.num_edges)

    def _ptr(self, t: Optional[torch.Tensor], i: int, device: torch.device) -> int:
        if t is None or t.numel() == 0:
            return 0
        if self.device.type == "cuda" or device.type == "cpu":
            return t.data_ptr()
        if self._pins is not None:
            return self._pins[i].device_ptr
        return t.data_ptr()  # torch's pinned memory: mapped at the same address (UVA)

    def _mode(self, device: torch.device, last: bool) -> tuple:
        """(weight prefix sums, edge times, strategy is "last") as the steps take it."""
        return (self._ptr(self.weight_cumsum, 2, device), self._ptr(self.edge_time, 3, device),
                bool(last))

    # ---- sampling ------------------------------------------------------------------------------
    def sample(self, seeds: Any, num_neighbors: Sequence[int], *, replace: bool = False,
               seed: Optional[int] = None, threads: Optional[int] = None,
               device: Optional[Union[str, torch.device]] = None, check: bool = True,
               disjoint: bool = False, seed_time: Any = None,
               temporal_strategy: str = "uniform") -> SampledSubgraph:
        """Sample ``num_neighbors[h]`` in-neighbours (-1 = all) of every node
        first reached at hop h, starting from ``seeds``.

        ``device``: where to sample, by default the device of ``seeds`` (a CPU
        graph must be pinned to be sampled on a GPU) or else of the graph;
        the result lies there. ``seed`` (None: drawn from torch's generator)
        fixes the sample; ``threads`` applies to the CPU sampler (default
        ``torch.get_num_threads()``). ``check=False`` skips the seed range
        check of GPU seeds (which costs a device sync); seeds on the CPU are
        always checked (it is cheap, and a bad id would read out of bounds).

        ``disjoint=True``: every seed grows its own subgraph (PyG's disjoint
        sampling); the result's ``batch`` holds each node's seed index.
        Temporal graphs are always sampled disjoint: the neighbours of every
        node of seed i's subgraph are those with time <= ``seed_time[i]``
        (default: the seeds' node times), and with ``temporal_strategy="last"``
        the latest ``num_neighbors[h]`` of them rather than a uniform draw.
        Weighted graphs draw by edge weight. Disjoint, weighted and temporal
        samples use one CPU thread.
        """
        op = "CSCGraph.sample"
        fanouts = _fanouts(num_neighbors, op)
        if not isinstance(replace, bool):
            raise TypeError(f"{op}: replace must be a bool, got {type(replace).__name__}")
        if not isinstance(disjoint, bool):
            raise TypeError(f"{op}: disjoint must be a bool, got {type(disjoint).__name__}")
        if temporal_strategy not in ("uniform", "last"):
            raise ValueError(f"{op}: temporal_strategy must be 'uniform' or 'last', got "
                             f"{temporal_strategy!r}")
        rng = _rng_seed(seed, op)
        nthreads = _threads(threads, op)
        if device is None:
            on_gpu = isinstance(seeds, torch.Tensor) and seeds.is_cuda
            device = seeds.device if on_gpu else self.device
        device = torch.device(device)
        on_cpu = not (isinstance(seeds, torch.Tensor) and seeds.is_cuda)
        s = _seed_tensor(seeds, self.num_nodes, op, check or on_cpu)
        times = self._seed_times(s, seed_time, op)
        disjoint = disjoint or times is not None
        if disjoint and s.numel() * max(self.num_nodes, 1) >= 2**63:
            raise ValueError(f"{op}: disjoint sampling of {s.numel()} seeds on a graph of "
                             f"{self.num_nodes} nodes: seeds x nodes must stay below 2**63")
        extra = dict(disjoint=disjoint, seed_time=times, last=temporal_strategy == "last")
        if device.type == "cpu":
            if self.device.type != "cpu":
                raise ValueError(f"{op}: the graph is on {self.device}; sample there or move it "
                                 "with graph.to('cpu')")
            if times is not None:
                extra["seed_time"] = times.cpu()
            return self._sample_cpu(s.cpu(), fanouts, replace, rng, nthreads, **extra)
        if device.type != "cuda":
            raise ValueError(f"{op}: device must be cpu or cuda, got {device}")
        if not _C.cuda_built():
            raise RuntimeError(f"{op}: ibp_gnn was built without CUDA (nvcc not found at build "
                               "time)")
        if not torch.cuda.is_available():
            raise RuntimeError(f"{op}: device {device} requested, but torch.cuda.is_available() "
                               "is False")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type == "cpu" and not self.is_pinned():
            if not (self.indptr.is_pinned() and (self.num_edges == 0 or self.indices.is_pinned())
                    and all(t is None or t.is_pinned()
                            for t in (self.weight_cumsum, self.edge_time))):
                raise ValueError(f"{op}: sampling on {device} needs the graph in GPU memory or "
                                 "pinned host memory: call graph.pin_memory() (zero-copy) or "
                                 "graph.to('cuda') first")
        elif self.device.type == "cuda" and self.device != device:
            raise ValueError(f"{op}: the graph is on {self.device}, sampling asked for {device}")
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            if times is not None:
                extra["seed_time"] = times.to(device, non_blocking=True)
            return self._sample_steps(s.to(device, non_blocking=True), fanouts, replace, rng,
                                      "cuda", stream, **extra)

    def _seed_times(self, seeds: torch.Tensor, seed_time: Any, op: str) -> Optional[torch.Tensor]:
        """The seeds' time bounds (int64, on the seeds' device) of a temporal graph, else None."""
        if not self.is_temporal:
            if seed_time is not None:
                raise ValueError(f"{op}: seed_time given, but the graph has no edge_time or "
                                 "node_time (build CSCGraph(..., node_time=/edge_time=))")
            return None
        if seed_time is None:
            if self.node_time is None:
                raise ValueError(f"{op}: a graph with edge times needs seed_time (one time per "
                                 "seed)")
            return self.node_time.to(seeds.device)[seeds].contiguous()
        if isinstance(seed_time, (list, tuple)):
            seed_time = torch.as_tensor(seed_time)
        t = _time_tensor(seed_time.reshape(-1) if isinstance(seed_time, torch.Tensor)
                         else seed_time, "seed_time", op, seeds.numel())
        return t.to(seeds.device)

    def _sample_cpu(self, seeds: torch.Tensor, fanouts: List[int], replace: bool, rng: int,
                    threads: int, exact_threads: bool = False, *, disjoint: bool = False,
                    seed_time: Optional[torch.Tensor] = None,
                    last: bool = False) -> SampledSubgraph:
        """The CPU sampler; exact_threads runs `threads` threads even where
        the sample is too small to gain from them (tests use it)."""
        np_or_none = lambda t: t.numpy() if t is not None else None  # noqa: E731
        node, row, col, edge, nsn, nse, batch = _C.neighbor_sample(
            self.indptr.numpy(), self.indices.numpy(), seeds.numpy(), fanouts, replace, rng,
            threads, exact_threads, disjoint, np_or_none(self.weight_cumsum),
            np_or_none(self.edge_time), np_or_none(seed_time), last)
        return SampledSubgraph(torch.from_numpy(node), torch.from_numpy(row),
                               torch.from_numpy(col), torch.from_numpy(edge), nsn, nse,
                               torch.from_numpy(batch) if disjoint else None)

    def _sample_steps(self, seeds: torch.Tensor, fanouts: List[int], replace: bool, rng: int,
                      steps: str, stream: int, *, disjoint: bool = False,
                      seed_time: Optional[torch.Tensor] = None,
                      last: bool = False) -> SampledSubgraph:
        """The GPU algorithm (neighbor.h), one hop at a time, with the `steps`
        kernels ("cuda") or their serial host twins ("host", CPU tensors). Per
        hop it reads two counts back (picked edges, new nodes) to size the
        next arrays: the only host syncs. Disjoint sampling relabels keys
        seed index * num_nodes + global id."""
        sfx = _STEP_SUFFIX[steps]
        count, pick = getattr(_C, "neighbor_count" + sfx), getattr(_C, "neighbor_pick" + sfx)
        insert, mark = getattr(_C, "relabel_insert" + sfx), getattr(_C, "relabel_mark" + sfx)
        finish, commit = getattr(_C, "relabel_finish" + sfx), getattr(_C, "relabel_commit" + sfx)
        dev = seeds.device
        graph = self._ptrs(dev)
        mode = self._mode(dev, last)
        i64 = dict(dtype=torch.int64, device=dev)
        V = max(self.num_nodes, 1)

        def new_table(n_keys: int):
            cap = 1 << max(6, math.ceil(math.log2(max(2 * n_keys, 1))))
            keys = torch.full((cap,), -1, **i64)
            vals = torch.full((cap,), -1, **i64)
            return keys, vals, (keys.data_ptr(), vals.data_ptr(), cap)

        S = seeds.numel()
        fbatch = torch.arange(S, **i64) if disjoint else None
        seed_keys = fbatch * V + seeds if disjoint else seeds
        nodes, batches, node_keys, rows, cols, edges = [seeds], [fbatch], [seed_keys], [], [], []
        nsn, nse = [S], []
        keys, vals, table = new_table(4 * S)
        insert(table, seed_keys.data_ptr(), S, 0, stream)
        frontier, first_local, N = seeds, 0, S
        for hop, fanout in enumerate(fanouts):
            n = frontier.numel()
            bounds = seed_time[fbatch].contiguous() if seed_time is not None else None
            bptr = bounds.data_ptr() if bounds is not None and n else 0
            counts = torch.zeros(n + 1, **i64)
            count(graph, frontier.data_ptr(), n, fanout, replace, counts[1:].data_ptr(), stream,
                  mode, bptr)
            offsets = counts.cumsum(0)
            E = int(offsets[-1])  # host sync 1: edges of this hop
            edge, nbr, col = (torch.empty(E, **i64) for _ in range(3))
            pick(graph, frontier.data_ptr(), n, first_local, fanout, replace, rng, hop,
                 offsets.data_ptr(), edge.data_ptr(), nbr.data_ptr(), col.data_ptr(), stream,
                 mode, bptr)
            ebatch = fbatch[col - first_local] if disjoint else None
            ekeys = (ebatch * V + nbr).contiguous() if disjoint else nbr
            if 2 * (N + E) > table[2]:
                keys, vals, table = new_table(2 * (N + E))
                known = torch.cat(node_keys)
                insert(table, known.data_ptr(), N, 0, stream)
            insert(table, ekeys.data_ptr(), E, N, stream)
            first = torch.empty(E, **i64)
            mark(table, ekeys.data_ptr(), E, N, first.data_ptr(), stream)
            rank = first.cumsum(0)
            new = int(rank[-1]) if E else 0  # host sync 2: new nodes of this hop
            row, new_keys = torch.empty(E, **i64), torch.empty(new, **i64)
            finish(table, ekeys.data_ptr(), E, N, rank.data_ptr(), row.data_ptr(),
                   new_keys.data_ptr(), stream)
            commit(table, ekeys.data_ptr(), E, N, rank.data_ptr(), stream)
            if disjoint:
                new_nodes, fbatch = new_keys % V, new_keys // V
            else:
                new_nodes = new_keys
            nodes.append(new_nodes)
            batches.append(fbatch)
            node_keys.append(new_keys)
            rows.append(row)
            cols.append(col)
            edges.append(edge)
            nsn.append(new)
            nse.append(E)
            frontier, first_local, N = new_nodes, N, N + new
        cat = lambda parts: torch.cat(parts) if parts else torch.empty(0, **i64)  # noqa: E731
        return SampledSubgraph(cat(nodes), cat(rows), cat(cols), cat(edges), nsn, nse,
                               cat(batches) if disjoint else None)


def sample_neighbors(indptr: Any, indices: Any, seeds: Any, num_neighbors: Sequence[int], *,
                     replace: bool = False, seed: Optional[int] = None,
                     threads: Optional[int] = None) -> SampledSubgraph:
    """One-off sampling on the CPU: ``CSCGraph(indptr, indices).sample(...)``.
    The graph is checked on every call (O(nodes + edges)); keep a
    :class:`CSCGraph` to sample the same graph repeatedly."""
    return CSCGraph(indptr, indices, threads=threads).sample(
        seeds, num_neighbors, replace=replace, seed=seed, threads=threads, device="cpu")




from .pyg_sampler import NeighborSampler  # noqa: E402  (it builds on CSCGraph above)
