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

_INDEX_DTYPES = (torch.int32, torch.int64)
_SEED_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_STEP_SUFFIX = {"cuda": "_cuda", "host": "_host"}


# ---- input checks ---------------------------------------------------------------------------
_MAX_THREADS = 2**31 - 1  # the C++ side takes an int; it uses at most 256


def _threads(threads: Optional[int], op: str) -> int:
    if threads is None:
        return max(1, torch.get_num_threads())
    if (isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
            or threads > _MAX_THREADS):
        raise ValueError(f"{op}: threads must be a positive int below 2**31, got {threads!r}")
    return int(threads)


def _index_tensor(x: Any, name: str, op: str) -> torch.Tensor:
    """A contiguous 1-D int32/int64 tensor viewing (not copying) x where possible."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu":
            raise TypeError(f"{op}: {name} must hold integer ids (int32 or int64), "
                            f"got dtype {x.dtype}")
        x = np.ascontiguousarray(x)  # a view of a contiguous array or memmap: no copy
        with warnings.catch_warnings():  # read-only memmaps: the sampler never writes them
            warnings.filterwarnings("ignore", message=".*not writable.*")
            x = torch.from_numpy(x)
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or numpy.ndarray, "
                        f"got {type(x).__name__}")
    if x.dtype not in _INDEX_DTYPES:
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{op}: {name} must hold integer ids (int32 or int64), got {x.dtype}")
        raise TypeError(f"{op}: {name} must be int32 or int64, got {x.dtype}")
    if x.dim() != 1:
        raise ValueError(f"{op}: {name} must be 1-D, got shape {tuple(x.shape)}")
    return x.contiguous()


def _seed_tensor(seeds: Any, num_nodes: int, op: str, check: bool) -> torch.Tensor:
    """Seeds as a contiguous 1-D int64 tensor (device kept), range-checked."""
    if isinstance(seeds, (list, tuple, range)):
        seeds = torch.as_tensor(list(seeds), dtype=torch.int64)
    elif isinstance(seeds, np.ndarray):
        if seeds.dtype.kind not in "iu":
            raise TypeError(f"{op}: seeds must hold integer node ids, got dtype {seeds.dtype}")
        seeds = torch.from_numpy(np.ascontiguousarray(seeds, dtype=np.int64))
    elif not isinstance(seeds, torch.Tensor):
        raise TypeError(f"{op}: seeds must be a torch.Tensor, numpy.ndarray or list of ints, "
                        f"got {type(seeds).__name__}")
    if seeds.is_floating_point() or seeds.is_complex() or seeds.dtype == torch.bool:
        raise TypeError(f"{op}: seeds must hold integer node ids, got {seeds.dtype}")
    if seeds.dim() > 1:
        raise ValueError(f"{op}: seeds must be 1-D, got shape {tuple(seeds.shape)}")
    s = seeds.reshape(-1).to(torch.int64).contiguous()
    if check and s.numel():
        lo, hi = int(s.min()), int(s.max())  # a device sync for GPU seeds
        if lo < 0 or hi >= num_nodes:
            bad = lo if lo < 0 else hi
            pos = int((s == bad).nonzero()[0, 0])
            raise IndexError(f"{op}: seeds[{pos}] = {bad} is out of range for a graph of "
                             f"{num_nodes} nodes (valid ids: 0 .. {num_nodes - 1})")
    return s


def _fanouts(num_neighbors: Any, op: str) -> List[int]:
    if isinstance(num_neighbors, int) and not isinstance(num_neighbors, bool):
        num_neighbors = [num_neighbors]
    if not isinstance(num_neighbors, (list, tuple)):
        raise TypeError(f"{op}: num_neighbors must be a list of ints (one per hop, -1 = all "
                        f"neighbours), got {type(num_neighbors).__name__}")
    out = []
    for i, f in enumerate(num_neighbors):
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or not -1 <= f < 2**63:
            raise ValueError(f"{op}: num_neighbors[{i}] must be an int >= -1 (-1 = all "
                             f"neighbours) and below 2**63, got {f!r}")
        out.append(int(f))
    return out


def _rng_seed(seed: Optional[int], op: str) -> int:
    if seed is None:  # follows torch.manual_seed, and differs per DataLoader worker
        return int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{op}: seed must be an int or None, got {type(seed).__name__}")
    return int(seed) & _SEED_MASK


# ---- results ----------------------------------------------------------------------------------
@dataclass
class SampledSubgraph:
    """A sampled subgraph in PyG's layout (see ``csrc/sampler/neighbor.h``).

    ``node``: global ids, the seeds as given (duplicates kept) then the new
    nodes of each hop in order of first appearance. ``row``/``col``: per edge,
    the local index of the picked neighbour / of the node it was picked for.
    ``edge``: per edge, its position in the CSC ``indices`` array.
    """
    node: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    edge: torch.Tensor
    num_sampled_nodes: List[int]
    num_sampled_edges: List[int]

    def to_sampler_output(self, edge_permutation: Optional[torch.Tensor] = None):
        """This sample as ``torch_geometric.sampler.SamplerOutput``; with
        ``edge_permutation`` (CSC position -> original edge id) ``edge``
        holds original edge ids."""
        if SamplerOutput is None:  # pragma: no cover
            raise ImportError("to_sampler_output needs torch_geometric")
        edge = self.edge if edge_permutation is None else edge_permutation[self.edge]
        return SamplerOutput(node=self.node, row=self.row, col=self.col, edge=edge, batch=None,
                             num_sampled_nodes=list(self.num_sampled_nodes),
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
    """

    def __init__(self, indptr: Any, indices: Any, *, check: bool = True,
                 threads: Optional[int] = None):
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
        if check:
            self._check(_threads(threads, op))

    @classmethod
    def from_edge_index(cls, edge_index: torch.Tensor, num_nodes: Optional[int] = None,
                        *, index_dtype: torch.dtype = torch.int64) -> "CSCGraph":
        """CSC of a (2, E) ``edge_index`` (row = source, col = target): each node's
        in-neighbours, as PyG samples them. ``edge_perm`` maps a CSC position
        to the original edge id."""
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
        perm = torch.sort(dst, stable=True).indices
        indptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
        small = index_dtype == torch.int32 and src.numel() < 2**31
        ptr_dtype = torch.int32 if small else torch.int64
        g = cls(indptr.to(ptr_dtype), src[perm].to(index_dtype), check=False)
        g.edge_perm = perm
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
            self._pins = (_HostRegistration(self.indptr), _HostRegistration(self.indices))
        return self

    def to(self, device: Union[str, torch.device]) -> "CSCGraph":
        """A copy of the graph on `device` (e.g. GPU memory, when it fits)."""
        device = torch.device(device)
        if device == self.device:
            return self
        g = CSCGraph(self.indptr.to(device), self.indices.to(device), check=False)
        g.edge_perm = self.edge_perm
        return g

    def _ptrs(self, device: torch.device) -> tuple:
        """(indptr, indptr64, indices, indices64, num_nodes, num_edges) as the steps take it."""
        def ptr(t: torch.Tensor, i: int) -> int:
            if t.numel() == 0:
                return 0
            if self.device.type == "cuda" or device.type == "cpu":
                return t.data_ptr()
            if self._pins is not None:
                return self._pins[i].device_ptr
            return t.data_ptr()  # torch's pinned memory: mapped at the same address (UVA)
        return (ptr(self.indptr, 0), self.indptr.dtype == torch.int64, ptr(self.indices, 1),
                self.indices.dtype == torch.int64, self.num_nodes, self.num_edges)

    # ---- sampling ------------------------------------------------------------------------------
    def sample(self, seeds: Any, num_neighbors: Sequence[int], *, replace: bool = False,
               seed: Optional[int] = None, threads: Optional[int] = None,
               device: Optional[Union[str, torch.device]] = None,
               check: bool = True) -> SampledSubgraph:
        """Sample ``num_neighbors[h]`` in-neighbours (-1 = all) of every node
        first reached at hop h, starting from ``seeds``.

        ``device``: where to sample, by default the device of ``seeds`` (a CPU
        graph must be pinned to be sampled on a GPU) or else of the graph;
        the result lies there. ``seed`` (None: drawn from torch's generator)
        fixes the sample; ``threads`` applies to the CPU sampler (default
        ``torch.get_num_threads()``). ``check=False`` skips the seed range
        check of GPU seeds (which costs a device sync); seeds on the CPU are
        always checked (it is cheap, and a bad id would read out of bounds).
        """
        op = "CSCGraph.sample"
        fanouts = _fanouts(num_neighbors, op)
        if not isinstance(replace, bool):
            raise TypeError(f"{op}: replace must be a bool, got {type(replace).__name__}")
        rng = _rng_seed(seed, op)
        nthreads = _threads(threads, op)
        if device is None:
            on_gpu = isinstance(seeds, torch.Tensor) and seeds.is_cuda
            device = seeds.device if on_gpu else self.device
        device = torch.device(device)
        on_cpu = not (isinstance(seeds, torch.Tensor) and seeds.is_cuda)
        s = _seed_tensor(seeds, self.num_nodes, op, check or on_cpu)
        if device.type == "cpu":
            if self.device.type != "cpu":
                raise ValueError(f"{op}: the graph is on {self.device}; sample there or move it "
                                 "with graph.to('cpu')")
            return self._sample_cpu(s.cpu(), fanouts, replace, rng, nthreads)
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
            if not (self.indptr.is_pinned() and (self.num_edges == 0 or self.indices.is_pinned())):
                raise ValueError(f"{op}: sampling on {device} needs the graph in GPU memory or "
                                 "pinned host memory: call graph.pin_memory() (zero-copy) or "
                                 "graph.to('cuda') first")
        elif self.device.type == "cuda" and self.device != device:
            raise ValueError(f"{op}: the graph is on {self.device}, sampling asked for {device}")
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            return self._sample_steps(s.to(device, non_blocking=True), fanouts, replace, rng,
                                      "cuda", stream)

    def _sample_cpu(self, seeds: torch.Tensor, fanouts: List[int], replace: bool, rng: int,
                    threads: int, exact_threads: bool = False) -> SampledSubgraph:
        """The CPU sampler; exact_threads runs `threads` threads even where
        the sample is too small to gain from them (tests use it)."""
        node, row, col, edge, nsn, nse = _C.neighbor_sample(
            self.indptr.numpy(), self.indices.numpy(), seeds.numpy(), fanouts, replace, rng,
            threads, exact_threads)
        return SampledSubgraph(torch.from_numpy(node), torch.from_numpy(row),
                               torch.from_numpy(col), torch.from_numpy(edge), nsn, nse)

    def _sample_steps(self, seeds: torch.Tensor, fanouts: List[int], replace: bool, rng: int,
                      steps: str, stream: int) -> SampledSubgraph:
        """The GPU algorithm (neighbor.h), one hop at a time, with the `steps`
        kernels ("cuda") or their serial host twins ("host", CPU tensors). Per
        hop it reads two counts back (picked edges, new nodes) to size the
        next arrays: the only host syncs."""
        sfx = _STEP_SUFFIX[steps]
        count, pick = getattr(_C, "neighbor_count" + sfx), getattr(_C, "neighbor_pick" + sfx)
        insert, mark = getattr(_C, "relabel_insert" + sfx), getattr(_C, "relabel_mark" + sfx)
        finish, commit = getattr(_C, "relabel_finish" + sfx), getattr(_C, "relabel_commit" + sfx)
        dev = seeds.device
        graph = self._ptrs(dev)
        i64 = dict(dtype=torch.int64, device=dev)

        def new_table(n_keys: int):
            cap = 1 << max(6, math.ceil(math.log2(max(2 * n_keys, 1))))
            keys = torch.full((cap,), -1, **i64)
            vals = torch.full((cap,), -1, **i64)
            return keys, vals, (keys.data_ptr(), vals.data_ptr(), cap)

        S = seeds.numel()
        nodes, rows, cols, edges = [seeds], [], [], []
        nsn, nse = [S], []
        keys, vals, table = new_table(4 * S)
        insert(table, seeds.data_ptr(), S, 0, stream)
        frontier, first_local, N = seeds, 0, S
        for hop, fanout in enumerate(fanouts):
            n = frontier.numel()
            counts = torch.zeros(n + 1, **i64)
            count(graph, frontier.data_ptr(), n, fanout, replace, counts[1:].data_ptr(), stream)
            offsets = counts.cumsum(0)
            E = int(offsets[-1])  # host sync 1: edges of this hop
            edge, nbr, col = (torch.empty(E, **i64) for _ in range(3))
            pick(graph, frontier.data_ptr(), n, first_local, fanout, replace, rng, hop,
                 offsets.data_ptr(), edge.data_ptr(), nbr.data_ptr(), col.data_ptr(), stream)
            if 2 * (N + E) > table[2]:
                keys, vals, table = new_table(2 * (N + E))
                known = torch.cat(nodes)
                insert(table, known.data_ptr(), N, 0, stream)
            insert(table, nbr.data_ptr(), E, N, stream)
            first = torch.empty(E, **i64)
            mark(table, nbr.data_ptr(), E, N, first.data_ptr(), stream)
            rank = first.cumsum(0)
            new = int(rank[-1]) if E else 0  # host sync 2: new nodes of this hop
            row, new_nodes = torch.empty(E, **i64), torch.empty(new, **i64)
            finish(table, nbr.data_ptr(), E, N, rank.data_ptr(), row.data_ptr(),
                   new_nodes.data_ptr(), stream)
            commit(table, nbr.data_ptr(), E, N, rank.data_ptr(), stream)
            nodes.append(new_nodes)
            rows.append(row)
            cols.append(col)
            edges.append(edge)
            nsn.append(new)
            nse.append(E)
            frontier, first_local, N = new_nodes, N, N + new
        cat = lambda parts: torch.cat(parts) if parts else torch.empty(0, **i64)  # noqa: E731
        return SampledSubgraph(cat(nodes), cat(rows), cat(cols), cat(edges), nsn, nse)


def sample_neighbors(indptr: Any, indices: Any, seeds: Any, num_neighbors: Sequence[int], *,
                     replace: bool = False, seed: Optional[int] = None,
                     threads: Optional[int] = None) -> SampledSubgraph:
    """One-off sampling on the CPU: ``CSCGraph(indptr, indices).sample(...)``.
    The graph is checked on every call (O(nodes + edges)); keep a
    :class:`CSCGraph` to sample the same graph repeatedly."""
    return CSCGraph(indptr, indices, threads=threads).sample(
        seeds, num_neighbors, replace=replace, seed=seed, threads=threads, device="cpu")


# ---- PyG ------------------------------------------------------------------------------------
class NeighborSampler(_PygNeighborSampler):
    """PyG's neighbour sampler (``torch_geometric.sampler.NeighborSampler``,
    same positional arguments) running on ibp_gnn's sampler.

    Extra keyword arguments: ``backend`` ("ibp", or "pyg" for pyg-lib /
    torch-sparse), ``device`` (where to sample: "cpu", or "cuda" with the graph
    in pinned host memory or GPU memory per ``graph_placement``: "pinned" or
    "device"; samples then lie on that GPU), ``seed`` (None: each batch draws
    its seed from torch's generator, so ``torch.manual_seed`` and DataLoader
    workers behave as usual; an int: the i-th batch of this sampler uses a seed
    derived from (seed, i), so a fixed sequence of batches is reproducible) and
    ``threads`` (CPU threads, default ``torch.get_num_threads()``).

    The "ibp" backend samples homogeneous graphs (``Data``, or a homogeneous
    ``(FeatureStore, GraphStore)``) uniformly, with or without replacement,
    with directional or bidirectional subgraphs; temporal, weighted, disjoint
    and induced sampling raise NotImplementedError (use ``backend="pyg"``).

    Heterogeneous graphs (``HeteroData``, or a heterogeneous
    ``(FeatureStore, GraphStore)``) are sampled on the CPU, forward direction
    only, like pyg-lib: ``num_neighbors`` is a list (the same fan-outs for
    every edge type) or a dict edge type -> list; at hop h, for every edge
    type (src, rel, dst) in turn, each ``dst`` node first reached at hop h - 1
    (the seeds at hop 0) draws up to ``num_neighbors[edge_type][h]``
    in-neighbours of type ``src`` (-1 = all); ``src`` nodes not seen before
    are appended, in order of first appearance, to that type's node list.
    ``row`` indexes the ``src`` type's nodes, ``col`` the ``dst`` type's.
    """

    def __init__(self, data, num_neighbors, subgraph_type="directional", replace=False,
                 disjoint=False, temporal_strategy="uniform", time_attr=None, weight_attr=None,
                 is_sorted=False, share_memory=False, directed=True, sample_direction="forward",
                 *, backend: str = "ibp", device: Optional[Union[str, torch.device]] = None,
                 graph_placement: str = "pinned", seed: Optional[int] = None,
                 threads: Optional[int] = None):
        op = "ibp_gnn.sampler.NeighborSampler"
        if backend not in ("ibp", "pyg"):
            raise ValueError(f"{op}: backend must be 'ibp' or 'pyg', got {backend!r}")
        if graph_placement not in ("pinned", "device"):
            raise ValueError(f"{op}: graph_placement must be 'pinned' or 'device', "
                             f"got {graph_placement!r}")
        self.backend = backend
        if backend == "ibp":
            unsupported = {
                "disjoint sampling (disjoint=True)": bool(disjoint),
                "temporal sampling (time_attr)": time_attr is not None,
                "weighted sampling (weight_attr)": weight_attr is not None,
                "sampling induced subgraphs": not directed or (
                    _pyg_sampler is not None
                    and SubgraphType(subgraph_type) == SubgraphType.induced),
            }
            for what, asked in unsupported.items():
                if asked:
                    raise NotImplementedError(f"{op}: {what} is not supported by the 'ibp' "
                                              "backend; pass backend='pyg' (needs pyg-lib or "
                                              "torch-sparse)")
        with warnings.catch_warnings():  # PyG warns about a missing pyg-lib, which we replace
            warnings.filterwarnings("ignore", message=".*pyg-lib.*")
            super().__init__(data, num_neighbors, subgraph_type=subgraph_type, replace=replace,
                             disjoint=disjoint, temporal_strategy=temporal_strategy,
                             time_attr=time_attr, weight_attr=weight_attr, is_sorted=is_sorted,
                             share_memory=share_memory, directed=directed,
                             sample_direction=sample_direction)
        if self.is_hetero and isinstance(data, (tuple, list)):  # PyG's order comes from a set()
            from .pyg import store_type_order
            self.node_types, self.edge_types = store_type_order(data, self.node_types,
                                                                self.edge_types)
        if backend == "pyg":
            return
        if self.is_hetero:
            self._init_hetero(device, seed, threads)
            return
        _fanouts(self.num_neighbors.get_mapped_values(), op)
        self.threads = _threads(threads, op)
        if seed is not None:
            _rng_seed(seed, op)
        self.seed = seed
        self._calls = 0
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        graph = CSCGraph(self.colptr, self.row, threads=self.threads)
        if self.device.type == "cuda":
            graph = graph.to(self.device) if graph_placement == "device" else graph.pin_memory()
        self.graph = graph

    def _next_seed(self) -> Optional[int]:
        if self.seed is None:
            return None
        self._calls += 1
        return (int(self.seed) + (self._calls - 1) * _GOLDEN) & _SEED_MASK

    def _sample(self, seed, seed_time=None, **kwargs):
        if self.backend == "pyg":
            return super()._sample(seed, seed_time, **kwargs)
        op = "ibp_gnn.sampler.NeighborSampler"
        if self.is_hetero:
            return self._sample_hetero(seed, seed_time)
        if isinstance(seed, dict):
            raise NotImplementedError(f"{op}: heterogeneous seeds are not supported by the "
                                      "'ibp' backend; pass backend='pyg'")
        if seed_time is not None:
            raise NotImplementedError(f"{op}: temporal sampling (seed_time) is not supported by "
                                      "the 'ibp' backend; pass backend='pyg'")
        fanouts = _fanouts(self.num_neighbors.get_mapped_values(), op)
        sub = self.graph.sample(seed, fanouts, replace=bool(self.replace),
                                seed=self._next_seed(), threads=self.threads, device=self.device)
        row, col = sub.row, sub.col
        if self.sample_direction == "backward":
            row, col = col, row
        return SamplerOutput(node=sub.node, row=row, col=col, edge=sub.edge, batch=None,
                             num_sampled_nodes=sub.num_sampled_nodes,
                             num_sampled_edges=sub.num_sampled_edges)

    # ---- heterogeneous graphs ---------------------------------------------------------------
    def _init_hetero(self, device, seed, threads) -> None:
        op = "ibp_gnn.sampler.NeighborSampler"
        if self.sample_direction != "forward":
            raise NotImplementedError(f"{op}: backward sampling (sample_direction='backward') of "
                                      "heterogeneous graphs is not supported by the 'ibp' "
                                      "backend; pass backend='pyg'")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if self.device.type != "cpu":
            raise NotImplementedError(f"{op}: heterogeneous graphs are sampled on the CPU only "
                                      f"by the 'ibp' backend (device={self.device} asked); "
                                      "pass backend='pyg' or device='cpu'")
        self.threads = _threads(threads, op)
        if seed is not None:
            _rng_seed(seed, op)
        self.seed = seed
        self._calls = 0
        self._hetero_fanouts()  # checks num_neighbors now
        graphs = {}
        for edge_type in self.edge_types:
            rel = self.to_rel_type[edge_type]
            src, _, dst = edge_type
            # Bipartite CSC: indptr over the dst nodes, indices hold src ids (which
            # CSCGraph's own check would bound by the dst count); one hop at a
            # time, so the sampler never reads indptr at a src id.
            g = CSCGraph(self.colptr_dict[rel], self.row_dict[rel], check=False)
            p, ix = g.indptr, g.indices
            n_src, n_dst = int(self.num_nodes[src]), int(self.num_nodes[dst])
            if (g.num_nodes != n_dst or int(p[0]) != 0 or bool((p[1:] < p[:-1]).any())
                    or int(p[-1]) != g.num_edges
                    or (g.num_edges and (int(ix.min()) < 0 or int(ix.max()) >= n_src))):
                raise ValueError(f"{op}: the CSC of edge type {edge_type!r} is invalid ({n_dst} "
                                 f"{dst!r} nodes, {n_src} {src!r} nodes, {g.num_edges} edges)")
            graphs[edge_type] = g
        self.graphs = graphs
        self.graph = None

    def _hetero_fanouts(self) -> Tuple[dict, int]:
        """{edge type: fan-outs per hop} and the number of hops, checked."""
        op = "ibp_gnn.sampler.NeighborSampler"
        nn = self.num_neighbors
        values = nn.values
        known = {"__".join(et): et for et in self.edge_types}
        if isinstance(values, dict):
            for key in values:
                k = "__".join(key) if isinstance(key, tuple) else str(key)
                if k not in known:
                    et = tuple(key) if isinstance(key, tuple) else tuple(k.split("__"))
                    raise ValueError(f"{op}: num_neighbors names edge type {et!r}, which is not "
                                     f"in the graph (edge types: {list(self.edge_types)})")
            default = nn.default
        else:
            default = values
        out = {}
        for et in self.edge_types:
            k = "__".join(et)
            f = None
            if isinstance(values, dict):
                for key, v in values.items():
                    if ("__".join(key) if isinstance(key, tuple) else str(key)) == k:
                        f = v
                        break
            if f is None:
                f = default
            if f is None:
                raise ValueError(f"{op}: num_neighbors gives no fan-outs for edge type {et!r} "
                                 "(and no default)")
            out[et] = _fanouts(list(f), f"{op} (edge type {et!r})")
        hops = {len(v) for v in out.values()}
        if len(hops) > 1:
            got = ", ".join(f"{et!r}: {len(v)}" for et, v in out.items())
            raise ValueError(f"{op}: num_neighbors must give the same number of hops for every "
                             f"edge type, got {{{got}}}")
        return out, (hops.pop() if hops else 0)

    def _sample_hetero(self, seed, seed_time=None):
        from torch_geometric.sampler import HeteroSamplerOutput

        op = "ibp_gnn.sampler.NeighborSampler"
        if seed_time is not None:
            raise NotImplementedError(f"{op}: temporal sampling (seed_time) is not supported by "
                                      "the 'ibp' backend; pass backend='pyg'")
        if not isinstance(seed, dict):
            raise TypeError(f"{op}: a heterogeneous graph needs seeds as a dict node type -> "
                            f"ids, got {type(seed).__name__}")
        fanouts, num_hops = self._hetero_fanouts()
        base = self._next_seed()
        if base is None:
            base = _rng_seed(None, op)
        replace = bool(self.replace)
        i64 = torch.int64
        node_types = list(self.node_types)
        nodes = {nt: [] for nt in node_types}
        nsn = {nt: [] for nt in node_types}
        count = {nt: 0 for nt in node_types}
        empty = torch.empty(0, dtype=i64)
        # Per node type, the ids seen so far (sorted) and their local ids: memory
        # grows with the sample, not with the graph.
        known = {nt: (empty, empty) for nt in node_types}

        def lookup(nt, ids):
            kid, kloc = known[nt]
            if kid.numel() == 0:
                return torch.full_like(ids, -1)
            pos = torch.searchsorted(kid, ids).clamp_(max=kid.numel() - 1)
            return torch.where(kid[pos] == ids, kloc[pos], torch.full_like(ids, -1))

        def remember(nt, ids, loc):
            kid, kloc = torch.cat([known[nt][0], ids]), torch.cat([known[nt][1], loc])
            order = kid.argsort()
            known[nt] = (kid[order], kloc[order])

        def relabel(nt, ids, pending):
            """Local ids of `ids` in nt's node list; unseen ids are appended to
            `pending[nt]` in order of first appearance."""
            loc = lookup(nt, ids)
            fresh = loc < 0
            if bool(fresh.any()):
                u = ids[fresh]
                uniq, inv = torch.unique(u, return_inverse=True)
                first = torch.full((uniq.numel(),), u.numel(), dtype=i64).scatter_reduce_(
                    0, inv, torch.arange(u.numel(), dtype=i64), "amin")
                order = first.argsort()
                new = uniq[order]
                rank = torch.empty_like(order)
                rank[order] = torch.arange(order.numel(), dtype=i64)
                remember(nt, new, count[nt] + torch.arange(new.numel(), dtype=i64))
                loc[fresh] = count[nt] + rank[inv]
                count[nt] += new.numel()
                pending[nt].append(new)
            return loc

        frontier = {}
        for nt, s in seed.items():
            if nt not in self.num_nodes:
                raise ValueError(f"{op}: seeds of node type {nt!r}, which is not in the graph "
                                 f"(node types: {node_types})")
            s = _seed_tensor(s, int(self.num_nodes[nt]), op, True).cpu().to(i64)
            if s.numel():  # duplicates kept; an id maps to its first position
                uniq, inv = torch.unique(s, return_inverse=True)
                first = torch.full((uniq.numel(),), s.numel(), dtype=i64).scatter_reduce_(
                    0, inv, torch.arange(s.numel(), dtype=i64), "amin")
                remember(nt, uniq, first)
            nodes[nt].append(s)
            count[nt] = s.numel()
            frontier[nt] = (0, s)
        for nt in node_types:
            nsn[nt].append(count[nt])

        rows = {et: [] for et in self.edge_types}
        cols = {et: [] for et in self.edge_types}
        edges = {et: [] for et in self.edge_types}
        nse = {et: [] for et in self.edge_types}
        for hop in range(num_hops):
            pending = {nt: [] for nt in node_types}
            start = dict(count)
            for k, et in enumerate(self.edge_types):
                src, _, dst = et
                first_local, fr = frontier.get(dst, (0, empty))
                f = fanouts[et][hop]
                g = self.graphs[et]
                if fr.numel() == 0 or f == 0 or g.num_edges == 0:
                    nse[et].append(0)
                    continue
                rng = (base + _mix64((hop * len(self.edge_types) + k + 1) * _GOLDEN)) & _SEED_MASK
                _, _, col, edge, _, _ = _C.neighbor_sample(
                    g.indptr.numpy(), g.indices.numpy(), fr.numpy(), [f], replace, rng,
                    self.threads, False)
                edge = torch.from_numpy(edge).to(i64)
                col = torch.from_numpy(col).to(i64) + first_local
                nbr = g.indices[edge].to(i64)
                rows[et].append(relabel(src, nbr, pending))
                cols[et].append(col)
                edges[et].append(edge)
                nse[et].append(edge.numel())
            frontier = {}
            for nt in node_types:
                new = torch.cat(pending[nt]) if pending[nt] else empty
                nodes[nt].append(new)
                nsn[nt].append(new.numel())
                frontier[nt] = (start[nt], new)

        cat = lambda parts: torch.cat(parts) if parts else empty  # noqa: E731
        return HeteroSamplerOutput(
            node={nt: cat(nodes[nt]) for nt in node_types},
            row={et: cat(rows[et]) for et in self.edge_types},
            col={et: cat(cols[et]) for et in self.edge_types},
            edge={et: cat(edges[et]) for et in self.edge_types},
            batch=None,
            num_sampled_nodes=nsn,
            num_sampled_edges=nse,
        )


def _mix64(z: int) -> int:
    """splitmix64's finaliser, to derive per (hop, edge type) sampling seeds."""
    z &= _SEED_MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _SEED_MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _SEED_MASK
    return z ^ (z >> 31)
