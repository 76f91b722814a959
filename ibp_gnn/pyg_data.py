"""PyG ``Data`` / ``HeteroData`` and batches with ``ibp_gnn.pyg``'s stores:
:func:`from_data`, :func:`compress_data`, :func:`attach_edge_features` and
:func:`store_type_order` (all re-exported by ``ibp_gnn.pyg``)."""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .pyg import DEFAULT_MIN_BYTES, IBPFeatureStore
from .pyg_graph import IBPGraphStore

__all__ = ["attach_edge_features", "compress_data", "from_data", "store_type_order"]


# ---- edge features of a batch ---------------------------------------------------------------------
def attach_edge_features(batch, feature_store: IBPFeatureStore):
    """Sets ``batch.<name> = feature_store.get_edge_tensor(..., index=batch.e_id)``
    for every edge-level tensor of the store (per edge type of a ``HeteroData``
    batch) and returns `batch`: what ``data.edge_attr[batch.e_id]`` gives on the
    in-memory path, bit for bit. A batch without ``e_id`` raises (its sampler did
    not report the sampled edges)."""
    from torch_geometric.data import HeteroData

    if not isinstance(feature_store, IBPFeatureStore) or not feature_store._edge_entries:
        return batch
    if isinstance(batch, HeteroData):
        for et in batch.edge_types:
            names = feature_store.edge_tensor_names(et)
            if not names:
                continue
            e_id = batch[et].get("e_id")
            if e_id is None:
                raise ValueError(f"attach_edge_features: the batch has no e_id for edge type "
                                 f"{et}: its sampler did not report the sampled edges, so "
                                 f"{names} cannot be gathered")
            for name in names:
                batch[et][name] = feature_store.get_edge_tensor(et, name, e_id)
        return batch
    names = feature_store.edge_tensor_names(None)
    if names:
        e_id = batch.get("e_id") if hasattr(batch, "get") else getattr(batch, "e_id", None)
        if e_id is None:
            raise ValueError("attach_edge_features: the batch has no e_id: its sampler did not "
                             f"report the sampled edges, so {names} cannot be gathered")
        for name in names:
            batch[name] = feature_store.get_edge_tensor(None, name, e_id)
    return batch


def store_type_order(data, node_types, edge_types):
    """`node_types` and `edge_types` (as PyG's samplers collect them from a
    ``(FeatureStore, GraphStore)`` pair: through a ``set()``, in an order that
    changes with ``PYTHONHASHSEED``) in the order the stores list them, which for
    stores built by :func:`from_data` is the ``HeteroData``'s own
    ``metadata()`` order. Types a store does not list come after, by name."""
    feature_store, graph_store = data
    nt_pos: Dict[Any, int] = {}
    for attr in feature_store.get_all_tensor_attrs():
        nt_pos.setdefault(attr.group_name, len(nt_pos))
    et_pos: Dict[Any, int] = {}
    for attr in graph_store.get_all_edge_attrs():
        et_pos.setdefault(tuple(attr.edge_type) if attr.edge_type is not None else None,
                          len(et_pos))

    def et_key(et):
        t = tuple(et)
        pos = et_pos.get(t, et_pos.get((t[2], t[1], t[0]) if len(t) == 3 else t))
        return (pos is None, pos if pos is not None else 0, "__".join(map(str, t)))

    nts = sorted(node_types, key=lambda nt: (nt not in nt_pos, nt_pos.get(nt, 0), str(nt)))
    ets = sorted(edge_types, key=et_key)
    return nts, ets


# ---- compressed tensors inside a Data ---------------------------------------------------------------
def compress_data(data, *, compress: str = "auto", mode: str = "auto",
                  min_bytes: int = DEFAULT_MIN_BYTES, threads: Optional[int] = None):
    """Replaces, in place, the node- and edge-level tensors of a ``Data`` or
    ``HeteroData`` worth compressing (the policy of :class:`IBPFeatureStore`:
    2-D, a codec dtype, at least `min_bytes`, shrinking) by ``CompressedTensor``s
    and returns `data`. It sets ``num_nodes`` of every node type first, since PyG
    infers it from tensors only. ``ibp_gnn.loader``'s loaders over such a data
    give batches whose rows are gathered from the compressed tensors
    (``batch.x == data_before.x[batch.n_id]``, bit for bit); code indexing
    ``data.x[ids]`` runs unchanged. (PyG's own loaders would hand the whole
    compressed tensor to each batch: use ``ibp_gnn.loader``.)"""
    from torch_geometric.data import Data, HeteroData

    if not isinstance(data, (Data, HeteroData)):
        raise TypeError(f"compress_data: data must be a torch_geometric Data or HeteroData, got "
                        f"{type(data).__name__}")
    policy = IBPFeatureStore(compress=compress, mode=mode, min_bytes=min_bytes, threads=threads)
    for store in data.node_stores:
        if "num_nodes" not in store:
            store.num_nodes = store.num_nodes
    stores = list(data.node_stores) + [s for s in data.edge_stores if s not in data.node_stores]
    for store in stores:
        for key, value in list(store.items()):
            if not isinstance(value, torch.Tensor) or key in ("edge_index", "num_nodes"):
                continue
            node = store.is_node_attr(key) if hasattr(store, "is_node_attr") else False
            edge = store.is_edge_attr(key) if hasattr(store, "is_edge_attr") else False
            if not (node or edge):
                continue
            e = policy._make_entry(value, key if store._key is None else f"{store._key}.{key}")
            if e.compressed:
                store[key] = e.ct
    return data


# ---- from PyG data -----------------------------------------------------------------------------
def from_data(data, device: Union[str, torch.device] = "cpu", **store_kwargs
              ) -> Tuple[IBPFeatureStore, IBPGraphStore]:
    """(IBPFeatureStore, IBPGraphStore) holding a ``Data`` or ``HeteroData``.

    Every node-level tensor (``x``, ``y``, masks, ...) of every node type goes to
    the feature store (compressed or raw as ``store_kwargs['compress']`` decides,
    see :class:`IBPFeatureStore`); every edge type's ``edge_index`` goes to the
    graph store in COO with its size. Edge-level tensors (``edge_attr``,
    ``edge_weight``, ...) go to the feature store's edge tensors
    (:meth:`IBPFeatureStore.put_edge_tensor`, compressed by the same policy), in
    edge order: ``ibp_gnn.loader``'s loaders put their rows for ``batch.e_id``
    in each batch.
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
            for k, v in store.items():
                if k != "edge_index" and isinstance(v, torch.Tensor):
                    if store.is_edge_attr(k) and v.dim() >= 1 and v.size(0) == store.num_edges:
                        fs.put_edge_tensor(v, edge_type=et, attr_name=k)
                    else:
                        skipped.append(f"{et}.{k}")
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
            elif (data.is_edge_attr(key) and value.dim() >= 1
                  and value.size(0) == data.num_edges):
                fs.put_edge_tensor(value, edge_type=None, attr_name=key)
            else:
                skipped.append(key)
        gs.put_edge_index(data.edge_index, edge_type=None, layout="coo", size=(n, n))
    else:
        raise TypeError(f"from_data: data must be a torch_geometric Data or HeteroData, got "
                        f"{type(data).__name__}")
    if skipped:
        warnings.warn(f"from_data: tensors {skipped} are neither node- nor edge-level (one "
                      "row per node or per edge) and are not stored", stacklevel=2)
    return fs, gs
