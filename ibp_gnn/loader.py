"""PyG's ``NeighborLoader`` and ``LinkNeighborLoader``, with PyG's signatures,
sampling with ``ibp_gnn.sampler.NeighborSampler``::

    from ibp_gnn.loader import NeighborLoader          # instead of torch_geometric.loader

    loader = NeighborLoader((feature_store, graph_store), num_neighbors=[25, 10],
                            input_nodes=train_idx, batch_size=1024)

The loader builds its sampler from its own arguments (``num_neighbors``,
``replace``, ``subgraph_type``, ``disjoint``, ``temporal_strategy``,
``time_attr``, ``weight_attr``, ``is_sorted``, ``directed``), so none of them is
dropped. ``neighbor_sampler=`` is still accepted, but a sampler whose settings
differ from the loader's arguments raises ``ValueError`` naming each difference
(PyG's loaders silently sample what the given sampler says). Keyword-only
extras configure the sampler: ``seed``, ``threads``, ``sampler_device`` (where to
sample) and ``backend`` ("ibp", or "pyg" for pyg-lib / torch-sparse).

``data`` is a ``Data`` or ``HeteroData`` (its tensors may be compressed in place
by :func:`compress_data`: batches then carry the rows gathered from them for
``n_id`` / ``e_id``, bit-identical to the uncompressed run) or a
``(FeatureStore, GraphStore)`` pair (``ibp_gnn.pyg.from_data``; ``input_nodes=None`` seeds every node of a
homogeneous pair too, as for a ``Data``, and a homogeneous pair takes
``edge_label_index`` as a plain tensor or None). With an ``IBPFeatureStore`` holding
edge-level tensors, every batch also carries their rows for ``batch.e_id``
(``batch.edge_attr``, per edge type for heterogeneous graphs), as the in-memory
path does; with a store that decodes on a GPU, ``filter_per_worker`` defaults to
False (CUDA cannot run in worker processes).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch_geometric.data import Data, FeatureStore, GraphStore, HeteroData
from torch_geometric.loader import LinkNeighborLoader as _PygLinkNeighborLoader
from torch_geometric.loader import NeighborLoader as _PygNeighborLoader
from torch_geometric.sampler.base import NegativeSampling, SubgraphType
from torch_geometric.sampler.base import NumNeighbors
from torch_geometric.typing import EdgeType, InputEdges, InputNodes, OptTensor

from ._tensorlike import TensorLike
from .pyg import IBPFeatureStore, attach_edge_features, compress_data
from .sampler import NeighborSampler

__all__ = ["NeighborLoader", "LinkNeighborLoader", "compress_data"]


def _fanout_key(num_neighbors) -> Any:
    """num_neighbors (a list, a dict edge type -> list, or PyG's NumNeighbors) in
    one comparable form."""
    if isinstance(num_neighbors, NumNeighbors):
        num_neighbors = num_neighbors.values
    if isinstance(num_neighbors, dict):
        return {("__".join(k) if isinstance(k, tuple) else str(k)): [int(v) for v in f]
                for k, f in num_neighbors.items()}
    return [int(v) for v in num_neighbors]


def _check_pair(op: str, sampler, asked: Dict[str, Any]) -> None:
    """Raises ValueError when `sampler` (given as neighbor_sampler=) was built with
    settings other than the loader's arguments `asked`."""
    diffs = []
    have = {
        "num_neighbors": _fanout_key(sampler.num_neighbors),
        "replace": bool(sampler.replace),
        "subgraph_type": SubgraphType(sampler.subgraph_type).value,
        "disjoint": bool(getattr(sampler, "_disjoint", sampler.disjoint)),
        "temporal_strategy": sampler.temporal_strategy,
        "time_attr": (getattr(sampler, "node_time", None) is not None
                      or getattr(sampler, "edge_time", None) is not None),
        "weight_attr": getattr(sampler, "edge_weight", None) is not None,
    }
    want = {
        "num_neighbors": _fanout_key(asked["num_neighbors"]),
        "replace": bool(asked["replace"]),
        "subgraph_type": SubgraphType(asked["subgraph_type"]).value,
        "disjoint": bool(asked["disjoint"]),
        "temporal_strategy": asked["temporal_strategy"],
        "time_attr": asked["time_attr"] is not None,
        "weight_attr": asked["weight_attr"] is not None,
    }
    for name in have:
        if have[name] != want[name]:
            if name in ("time_attr", "weight_attr"):
                diffs.append(f"{name}={asked[name]!r} but the sampler "
                             f"{'uses' if have[name] else 'has no'} "
                             f"{'times' if name == 'time_attr' else 'edge weights'}")
            else:
                diffs.append(f"{name}={asked[name]!r} but the sampler has {have[name]!r}")
    for name in ("seed", "threads", "sampler_device"):
        if asked[name] is not None:
            diffs.append(f"{name}={asked[name]!r} is a sampler setting, and neighbor_sampler= "
                         "was given")
    if asked["backend"] != "ibp":
        diffs.append(f"backend={asked['backend']!r} is a sampler setting, and neighbor_sampler= "
                     "was given")
    if diffs:
        raise ValueError(f"{op}: the loader's arguments conflict with neighbor_sampler: "
                         + "; ".join(diffs) + ". Drop neighbor_sampler= (the loader builds the "
                         "sampler from its arguments) or give both the same settings")


def _feature_store(data) -> Optional[FeatureStore]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], FeatureStore):
        return data[0]
    return None


class _WithEdgeFeatures:
    """Transform: a batch's edge-level rows from the store, then the user's transform."""

    def __init__(self, feature_store: IBPFeatureStore, transform: Optional[Callable]):
        self.feature_store = feature_store
        self.transform = transform

    def __call__(self, batch):
        batch = attach_edge_features(batch, self.feature_store)
        return batch if self.transform is None else self.transform(batch)


def _tensor_like_keys(data) -> Dict[Any, Dict[str, str]]:
    """For a Data/HeteroData holding compressed (tensor-like) attributes: per store
    key (None for a Data), {attr: "node" or "edge"}; {} when it holds none."""
    out: Dict[Any, Dict[str, str]] = {}
    if isinstance(data, HeteroData):
        for nt in data.node_types:
            keys = {k: "node" for k, v in data[nt].items() if isinstance(v, TensorLike)}
            if keys:
                out[nt] = keys
        for et in data.edge_types:
            keys = {k: "edge" for k, v in data[et].items() if isinstance(v, TensorLike)}
            if keys:
                out[et] = keys
    elif isinstance(data, Data):
        keys = {}
        n, m = data.num_nodes, data.num_edges
        for k, v in data.items():
            if isinstance(v, TensorLike):
                edge = len(v) == m and (len(v) != n or "edge" in k)
                keys[k] = "edge" if edge else "node"
        if keys:
            out[None] = keys
    return out


class _GatherCompressed:
    """Transform: rows of the compressed attributes of an in-memory Data/HeteroData
    (looked up at each batch, so tensors compressed after the loader was made
    count too) for the batch's n_id / e_id (PyG's filter copies them whole), then
    the user's transform."""

    def __init__(self, data, transform: Optional[Callable]):
        self.data = data
        self.transform = transform

    def __call__(self, batch):
        for group, attrs in _tensor_like_keys(self.data).items():
            store = batch if group is None else batch[group]
            for name, kind in attrs.items():
                value = store.get(name) if hasattr(store, "get") else None
                if not isinstance(value, TensorLike):
                    continue  # deleted from the loader's data, or already gathered
                ids = store.get("n_id" if kind == "node" else "e_id")
                if ids is None:
                    raise ValueError(f"ibp_gnn.loader: the batch has no "
                                     f"{'n_id' if kind == 'node' else 'e_id'} to gather the "
                                     f"compressed {name!r} rows with")
                store[name] = value[ids]
        return batch if self.transform is None else self.transform(batch)


# The loader arguments that build (or must match) the sampler.
_SAMPLER_ARGS = ("num_neighbors", "replace", "subgraph_type", "disjoint", "temporal_strategy",
                 "time_attr", "weight_attr", "is_sorted", "directed", "transform",
                 "filter_per_worker", "seed", "threads", "sampler_device", "backend")


def _prepare(op: str, data, neighbor_sampler, asked: Dict[str, Any], kwargs: dict):
    """(sampler, transform, filter_per_worker) for the PyG loader's constructor."""
    if neighbor_sampler is None:
        neighbor_sampler = NeighborSampler(
            data, asked["num_neighbors"], subgraph_type=asked["subgraph_type"],
            replace=asked["replace"], disjoint=asked["disjoint"],
            temporal_strategy=asked["temporal_strategy"], time_attr=asked["time_attr"],
            weight_attr=asked["weight_attr"], is_sorted=asked["is_sorted"],
            share_memory=kwargs.get("num_workers", 0) > 0, directed=asked["directed"],
            backend=asked["backend"], device=asked["sampler_device"], seed=asked["seed"],
            threads=asked["threads"])
    else:
        _check_pair(op, neighbor_sampler, asked)
    transform, filter_per_worker = asked["transform"], asked["filter_per_worker"]
    if isinstance(data, (Data, HeteroData)):
        transform = _GatherCompressed(data, transform)
    fs = _feature_store(data)
    if isinstance(fs, IBPFeatureStore):
        if fs._edge_entries:
            transform = _WithEdgeFeatures(fs, transform)
        if filter_per_worker is None and fs.device.type == "cuda":
            filter_per_worker = False
    return neighbor_sampler, transform, filter_per_worker


class NeighborLoader(_PygNeighborLoader):
    """``torch_geometric.loader.NeighborLoader`` (same arguments) sampling with
    ``ibp_gnn.sampler.NeighborSampler`` built from those arguments; see the module
    docstring for the keyword-only extras and the checks."""

    def __init__(
        self,
        data: Union[Data, HeteroData, Tuple[FeatureStore, GraphStore]],
        num_neighbors: Union[List[int], Dict[EdgeType, List[int]]],
        input_nodes: InputNodes = None,
        input_time: OptTensor = None,
        replace: bool = False,
        subgraph_type: Union[SubgraphType, str] = "directional",
        disjoint: bool = False,
        temporal_strategy: str = "uniform",
        time_attr: Optional[str] = None,
        weight_attr: Optional[str] = None,
        transform: Optional[Callable] = None,
        transform_sampler_output: Optional[Callable] = None,
        is_sorted: bool = False,
        filter_per_worker: Optional[bool] = None,
        neighbor_sampler: Optional[NeighborSampler] = None,
        directed: bool = True,
        *,
        seed: Optional[int] = None,
        threads: Optional[int] = None,
        sampler_device: Optional[Union[str, torch.device]] = None,
        backend: str = "ibp",
        **kwargs,
    ):
        asked = {k: v for k, v in locals().items() if k in _SAMPLER_ARGS}
        sampler, transform, filter_per_worker = _prepare(
            "ibp_gnn.loader.NeighborLoader", data, neighbor_sampler, asked, kwargs)
        if input_nodes is None and _feature_store(data) is not None and not sampler.is_hetero:
            input_nodes = torch.arange(int(sampler.num_nodes))  # every node, as for a Data
        super().__init__(data, num_neighbors, input_nodes=input_nodes, input_time=input_time,
                         replace=replace, subgraph_type=subgraph_type, disjoint=disjoint,
                         temporal_strategy=temporal_strategy, time_attr=time_attr,
                         weight_attr=weight_attr, transform=transform,
                         transform_sampler_output=transform_sampler_output, is_sorted=is_sorted,
                         filter_per_worker=filter_per_worker, neighbor_sampler=sampler,
                         directed=directed, **kwargs)


class LinkNeighborLoader(_PygLinkNeighborLoader):
    """``torch_geometric.loader.LinkNeighborLoader`` (same arguments) sampling with
    ``ibp_gnn.sampler.NeighborSampler`` built from those arguments; see the module
    docstring for the keyword-only extras and the checks."""

    def __init__(
        self,
        data: Union[Data, HeteroData, Tuple[FeatureStore, GraphStore]],
        num_neighbors: Union[List[int], Dict[EdgeType, List[int]]],
        edge_label_index: InputEdges = None,
        edge_label: OptTensor = None,
        edge_label_time: OptTensor = None,
        replace: bool = False,
        subgraph_type: Union[SubgraphType, str] = "directional",
        disjoint: bool = False,
        temporal_strategy: str = "uniform",
        neg_sampling: Optional[NegativeSampling] = None,
        neg_sampling_ratio: Optional[Union[int, float]] = None,
        time_attr: Optional[str] = None,
        weight_attr: Optional[str] = None,
        transform: Optional[Callable] = None,
        transform_sampler_output: Optional[Callable] = None,
        is_sorted: bool = False,
        filter_per_worker: Optional[bool] = None,
        neighbor_sampler: Optional[NeighborSampler] = None,
        directed: bool = True,
        *,
        seed: Optional[int] = None,
        threads: Optional[int] = None,
        sampler_device: Optional[Union[str, torch.device]] = None,
        backend: str = "ibp",
        **kwargs,
    ):
        asked = {k: v for k, v in locals().items() if k in _SAMPLER_ARGS}
        sampler, transform, filter_per_worker = _prepare(
            "ibp_gnn.loader.LinkNeighborLoader", data, neighbor_sampler, asked, kwargs)
        if _feature_store(data) is not None and not sampler.is_hetero and (
                edge_label_index is None or isinstance(edge_label_index, torch.Tensor)):
            if edge_label_index is None:  # every edge, as for a Data
                row, col, _ = data[1].coo()
                edge_label_index = torch.stack([row.to(torch.int64), col.to(torch.int64)])
            edge_label_index = (None, edge_label_index)
        super().__init__(data, num_neighbors, edge_label_index=edge_label_index,
                         edge_label=edge_label, edge_label_time=edge_label_time,
                         replace=replace, subgraph_type=subgraph_type, disjoint=disjoint,
                         temporal_strategy=temporal_strategy, neg_sampling=neg_sampling,
                         neg_sampling_ratio=neg_sampling_ratio, time_attr=time_attr,
                         weight_attr=weight_attr, transform=transform,
                         transform_sampler_output=transform_sampler_output, is_sorted=is_sorted,
                         filter_per_worker=filter_per_worker, neighbor_sampler=sampler,
                         directed=directed, **kwargs)
