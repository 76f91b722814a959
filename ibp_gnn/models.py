"""GNN models for sampled mini-batches (PyG ``SAGEConv`` / ``GATConv``).

``forward(x, edge_index, num_sampled_nodes=None, num_sampled_edges=None)``:
with the per-hop counts of a ``NeighborLoader`` batch, each layer drops the
nodes and edges that can no longer reach the seeds
(``torch_geometric.utils.trim_to_layer``), which saves most of the work of
the outer hops. The first ``batch_size`` output rows are the seeds'.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
import torch.nn.functional as F

NORMS = (None, "none", "batch", "layer")


def _norm(kind: Optional[str], dim: int) -> nn.Module:
    if kind in (None, "none"):
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(dim)
    if kind == "layer":
        return nn.LayerNorm(dim)
    raise ValueError(f"model.norm must be one of {list(NORMS)}, got {kind!r}")


class _SampledGNN(nn.Module):
    convs: nn.ModuleList
    norms: nn.ModuleList

    def __init__(self, dropout: float, input_dropout: float, trim: bool):
        super().__init__()
        self.dropout, self.input_dropout = float(dropout), float(input_dropout)
        self.trim = bool(trim)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                num_sampled_nodes: Optional[List[int]] = None,
                num_sampled_edges: Optional[List[int]] = None) -> torch.Tensor:
        x = x.float() if not torch.is_floating_point(x) or x.dtype == torch.float64 else x
        x = F.dropout(x, p=self.input_dropout, training=self.training)
        trim = self.trim and num_sampled_nodes is not None and num_sampled_edges is not None
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if trim:
                from torch_geometric.utils import trim_to_layer

                x, edge_index, _ = trim_to_layer(i, num_sampled_nodes, num_sampled_edges,
                                                 x, edge_index)
            x = conv(x, edge_index)
            if i < last:
                x = F.relu(norm(x))
                x = F.dropout(x, p=self.dropout, training=self.training)
        return x


class SAGE(_SampledGNN):
    """GraphSAGE: `layers` SAGEConv layers of width `hidden`."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 128,
                 layers: Optional[int] = 2, dropout: float = 0.5, input_dropout: float = 0.0,
                 aggr: str = "mean",
                 norm: Optional[str] = None, trim: bool = True):
        from torch_geometric.nn import SAGEConv

        super().__init__(dropout, input_dropout, trim)
        layers = layers or 2
        dims = [in_channels] + [hidden] * (layers - 1) + [out_channels]
        self.convs = nn.ModuleList(SAGEConv(dims[i], dims[i + 1], aggr=aggr)
                                   for i in range(layers))
        self.norms = nn.ModuleList(_norm(norm, dims[i + 1]) for i in range(layers))


class GAT(_SampledGNN):
    """GAT: `layers` GATConv layers; hidden layers concatenate `heads` heads of
    ``hidden // heads`` channels, the output layer averages `out_heads` heads."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 128,
                 layers: Optional[int] = 2, heads: int = 4, out_heads: int = 1,
                 dropout: float = 0.5,
                 attn_dropout: float = 0.0, input_dropout: float = 0.0,
                 norm: Optional[str] = None, v2: bool = False, trim: bool = True):
        from torch_geometric.nn import GATConv, GATv2Conv

        super().__init__(dropout, input_dropout, trim)
        layers = layers or 2
        if hidden % heads:
            raise ValueError(f"model.hidden={hidden} must be divisible by model.heads={heads}")
        Conv = GATv2Conv if v2 else GATConv
        convs, norms = [], []
        d = in_channels
        for i in range(layers):
            if i < layers - 1:
                convs.append(Conv(d, hidden // heads, heads=heads, concat=True,
                                  dropout=attn_dropout))
                d = hidden
            else:
                convs.append(Conv(d, out_channels, heads=out_heads, concat=False,
                                  dropout=attn_dropout))
            norms.append(_norm(norm, d if i < layers - 1 else out_channels))
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
