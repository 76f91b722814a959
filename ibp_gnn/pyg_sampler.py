"""PyG's ``NeighborSampler`` (homogeneous and heterogeneous) running on
:class:`ibp_gnn.sampler.CSCGraph`; import it from ``ibp_gnn.sampler``."""
from __future__ import annotations

import warnings
from typing import Optional, Tuple, Union

import torch

from . import _C
from ._sampler_checks import _SEED_MASK, _fanouts, _rng_seed, _seed_tensor, _threads, _time_tensor
from .sampler import _GOLDEN, CSCGraph, SamplerOutput, SubgraphType, _PygNeighborSampler, _pyg_sampler


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
    ``(FeatureStore, GraphStore)``) with or without replacement, with
    directional or bidirectional subgraphs, and with PyG's options:
    ``disjoint=True`` (every seed its own subgraph; batches carry
    ``batch.batch``, each node's seed index), ``weight_attr`` (an edge
    attribute of weights >= 0: neighbours drawn with probability proportional
    to their weights) and ``time_attr`` (node- or edge-level integer times:
    only neighbours with time <= their seed's time, which is ``input_time`` or
    the seed's node time; ``temporal_strategy`` "uniform" or "last"; always
    disjoint, as in PyG). Sampled edges come with their ids (``batch.e_id``).
    Induced subgraphs raise NotImplementedError (use ``backend="pyg"``).

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
            if not directed or (_pyg_sampler is not None
                                and SubgraphType(subgraph_type) == SubgraphType.induced):
                raise NotImplementedError(f"{op}: sampling induced subgraphs is not supported by "
                                          "the 'ibp' backend; pass backend='pyg' (needs pyg-lib "
                                          "or torch-sparse)")
            if temporal_strategy not in ("uniform", "last"):
                raise ValueError(f"{op}: temporal_strategy must be 'uniform' or 'last', got "
                                 f"{temporal_strategy!r}")
        with warnings.catch_warnings(), _pyg_lib_features(backend == "ibp"):
            # PyG warns about a missing pyg-lib, which we replace, and refuses edge
            # times and weights without it: our sampler takes them.
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
        graph = CSCGraph(self.colptr, self.row, threads=self.threads,
                         edge_weight=self.edge_weight, edge_time=self.edge_time,
                         node_time=self.node_time if self.edge_time is None else None)
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
        if seed_time is not None and not self.graph.is_temporal:
            raise ValueError(f"{op}: seed times given (input_time / edge_label_time), but the "
                             "sampler has no time_attr")
        fanouts = _fanouts(self.num_neighbors.get_mapped_values(), op)
        sub = self.graph.sample(seed, fanouts, replace=bool(self.replace),
                                seed=self._next_seed(), threads=self.threads, device=self.device,
                                disjoint=bool(self.disjoint), seed_time=seed_time,
                                temporal_strategy=self.temporal_strategy)
        row, col = sub.row, sub.col
        if self.sample_direction == "backward":
            row, col = col, row
        return SamplerOutput(node=sub.node, row=row, col=col, edge=sub.edge, batch=sub.batch,
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
            where = f"{op} (edge type {edge_type!r})"
            # PyG keys these by "src__rel__dst" (HeteroData) or by edge type (stores).
            weight = _by_edge_type(self.edge_weight, rel, edge_type)
            etime = _by_edge_type(self.edge_time, rel, edge_type)
            if self.edge_weight is not None:
                if weight is None:
                    raise ValueError(f"{where}: weight_attr is missing on this edge type")
                g._set_weights(weight, where)
            if self.edge_time is not None:
                if etime is None:
                    raise ValueError(f"{where}: the edge-level time_attr is missing on this "
                                     "edge type")
                g._set_times(etime, None, where)
            elif self.node_time is not None:
                if self.node_time.get(src) is None:
                    raise ValueError(f"{where}: the node-level time_attr is missing on node "
                                     f"type {src!r}")
                nt = _time_tensor(self.node_time[src], "time_attr", where, n_src)
                g._set_times(nt[g.indices.long()], None, where)
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

    def _hetero_seed_times(self, nt, seeds: torch.Tensor, seed_time, op: str) -> torch.Tensor:
        """The time bounds of seeds of node type nt: seed_time[nt] when given,
        else their node times."""
        if isinstance(seed_time, dict) and seed_time.get(nt) is not None:
            return _time_tensor(seed_time[nt], "seed_time", op, seeds.numel())
        if self.node_time is None or self.node_time.get(nt) is None:
            raise ValueError(f"{op}: temporal sampling with edge-level times (or seeds of node "
                             f"type {nt!r}, which has no node time) needs input_time for the "
                             "seeds")
        return _time_tensor(self.node_time[nt], "time_attr", op,
                            int(self.num_nodes[nt]))[seeds]

    def _sample_hetero(self, seed, seed_time=None):
        from torch_geometric.sampler import HeteroSamplerOutput

        op = "ibp_gnn.sampler.NeighborSampler"
        if seed_time is not None and not self.is_temporal:
            raise ValueError(f"{op}: seed times given (input_time / edge_label_time), but the "
                             "sampler has no time_attr")
        if not isinstance(seed, dict):
            raise TypeError(f"{op}: a heterogeneous graph needs seeds as a dict node type -> "
                            f"ids, got {type(seed).__name__}")
        fanouts, num_hops = self._hetero_fanouts()
        base = self._next_seed()
        if base is None:
            base = _rng_seed(None, op)
        replace = bool(self.replace)
        temporal, last = self.is_temporal, self.temporal_strategy == "last"
        disjoint = bool(self.disjoint)  # temporal sampling is always disjoint
        i64 = torch.int64
        node_types = list(self.node_types)
        # Disjoint sampling keys a node by (seed index b, id) as b * num_nodes + id.
        width = {nt: max(int(self.num_nodes[nt]), 1) for nt in node_types}
        nodes = {nt: [] for nt in node_types}
        batches = {nt: [] for nt in node_types}
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
        seed_times, num_batches = [], 0
        for nt, s in seed.items():
            if nt not in self.num_nodes:
                raise ValueError(f"{op}: seeds of node type {nt!r}, which is not in the graph "
                                 f"(node types: {node_types})")
            s = _seed_tensor(s, int(self.num_nodes[nt]), op, True).cpu().to(i64)
            b = torch.arange(num_batches, num_batches + s.numel(), dtype=i64)
            num_batches += s.numel()
            if disjoint:  # every seed its own root
                remember(nt, b * width[nt] + s, torch.arange(s.numel(), dtype=i64))
            elif s.numel():  # duplicates kept; an id maps to its first position
                uniq, inv = torch.unique(s, return_inverse=True)
                first = torch.full((uniq.numel(),), s.numel(), dtype=i64).scatter_reduce_(
                    0, inv, torch.arange(s.numel(), dtype=i64), "amin")
                remember(nt, uniq, first)
            if temporal:
                seed_times.append(self._hetero_seed_times(nt, s, seed_time, op))
            nodes[nt].append(s)
            batches[nt].append(b)
            count[nt] = s.numel()
            frontier[nt] = (0, s, b)
        for nt in node_types:
            nsn[nt].append(count[nt])
        seed_times = torch.cat(seed_times) if seed_times else empty

        rows = {et: [] for et in self.edge_types}
        cols = {et: [] for et in self.edge_types}
        edges = {et: [] for et in self.edge_types}
        nse = {et: [] for et in self.edge_types}
        for hop in range(num_hops):
            pending = {nt: [] for nt in node_types}
            start = dict(count)
            for k, et in enumerate(self.edge_types):
                src, _, dst = et
                first_local, fr, fb = frontier.get(dst, (0, empty, empty))
                f = fanouts[et][hop]
                g = self.graphs[et]
                if fr.numel() == 0 or f == 0 or g.num_edges == 0:
                    nse[et].append(0)
                    continue
                rng = (base + _mix64((hop * len(self.edge_types) + k + 1) * _GOLDEN)) & _SEED_MASK
                # One hop from the frontier; in this call "seed" i is frontier node i,
                # whose time bound is the time of the seed its subgraph grew from.
                bounds = seed_times[fb].contiguous().numpy() if temporal else None
                wcum = g.weight_cumsum.numpy() if g.is_weighted else None
                etime = g.edge_time.numpy() if g.is_temporal else None
                _, _, col, edge, _, _, _ = _C.neighbor_sample(
                    g.indptr.numpy(), g.indices.numpy(), fr.numpy(), [f], replace, rng,
                    self.threads, False, False, wcum, etime, bounds, last)
                edge = torch.from_numpy(edge).to(i64)
                col = torch.from_numpy(col).to(i64)
                nbr = g.indices[edge].to(i64)
                if disjoint:
                    nbr = fb[col] * width[src] + nbr
                col = col + first_local
                rows[et].append(relabel(src, nbr, pending))
                cols[et].append(col)
                edges[et].append(edge)
                nse[et].append(edge.numel())
            frontier = {}
            for nt in node_types:
                new = torch.cat(pending[nt]) if pending[nt] else empty
                new_b = new // width[nt] if disjoint else empty
                if disjoint:
                    new = new % width[nt]
                nodes[nt].append(new)
                batches[nt].append(new_b)
                nsn[nt].append(new.numel())
                frontier[nt] = (start[nt], new, new_b)

        cat = lambda parts: torch.cat(parts) if parts else empty  # noqa: E731
        return HeteroSamplerOutput(
            node={nt: cat(nodes[nt]) for nt in node_types},
            row={et: cat(rows[et]) for et in self.edge_types},
            col={et: cat(cols[et]) for et in self.edge_types},
            edge={et: cat(edges[et]) for et in self.edge_types},
            batch={nt: cat(batches[nt]) for nt in node_types} if disjoint else None,
            num_sampled_nodes=nsn,
            num_sampled_edges=nse,
        )


def _by_edge_type(d: Optional[dict], rel: str, edge_type: tuple):
    if d is None:
        return None
    v = d.get(rel)
    return v if v is not None else d.get(edge_type)


class _pyg_lib_features:
    """While active (and `on`), PyG believes pyg-lib's edge-time and weighted
    sampling are installed, so its NeighborSampler constructor accepts them."""

    _FLAGS = ("WITH_EDGE_TIME_NEIGHBOR_SAMPLE", "WITH_WEIGHTED_NEIGHBOR_SAMPLE")

    def __init__(self, on: bool):
        self.on = on and _pyg_sampler is not None
        self.saved = {}

    def __enter__(self):
        if self.on:
            import torch_geometric.typing as pyg_typing

            for f in self._FLAGS:
                self.saved[f] = getattr(pyg_typing, f, False)
                setattr(pyg_typing, f, True)
        return self

    def __exit__(self, *exc):
        if self.on:
            import torch_geometric.typing as pyg_typing

            for f, v in self.saved.items():
                setattr(pyg_typing, f, v)
        return False


def _mix64(z: int) -> int:
    """splitmix64's finaliser, to derive per (hop, edge type) sampling seeds."""
    z &= _SEED_MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _SEED_MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _SEED_MASK
    return z ^ (z >> 31)
