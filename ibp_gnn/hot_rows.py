"""The rows a cache should hold, most valuable first: by the accesses of the
real sampler over training batches (presampling, the default) or by in-degree
(``ibp_gnn.cache`` re-exports these)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ._tensor import index_1d


def _in_degree(graph) -> np.ndarray:
    indptr = graph.indptr.cpu().numpy().astype(np.int64)
    return np.diff(indptr)


def degree_hot_rows(graph) -> np.ndarray:
    """All node ids by in-degree, highest first (ties: lower id first).
    `graph` is an ``ibp_gnn.sampler.CSCGraph``."""
    deg = _in_degree(graph)
    return np.lexsort((np.arange(len(deg)), -deg)).astype(np.int64)


def presample_counts(graph, seeds, num_neighbors: Sequence[int], *, batch_size: int = 1024,
                     num_batches: int = 8, seed: int = 0,
                     threads: Optional[int] = None) -> np.ndarray:
    """How often each node is a row of a mini-batch's features over
    `num_batches` batches of the real sampler (``CSCGraph.sample``) from
    shuffled `seeds` (the training nodes), seeded by `seed`."""
    op = "ibp_gnn.cache.presample_counts"
    for name, v, lo in (("batch_size", batch_size, 1), ("num_batches", num_batches, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{op}: {name} must be an int >= {lo}, got {v!r}")
    seeds = np.asarray(index_1d(seeds, "seeds", op).cpu().numpy(), np.int64)
    counts = np.zeros(graph.num_nodes, np.int64)
    rng = np.random.default_rng(seed)
    step = 0
    while step < num_batches and len(seeds):  # epochs: each a fresh shuffle of the seeds
        order = rng.permutation(seeds)
        for a in range(0, len(order), batch_size):
            if step == num_batches:
                break
            sub = graph.sample(torch.from_numpy(order[a:a + batch_size]), list(num_neighbors),
                               seed=seed * 1_000_003 + step, threads=threads)
            counts += np.bincount(sub.node.numpy(), minlength=graph.num_nodes)
            step += 1
    return counts


def presample_hot_rows(graph, seeds, num_neighbors: Sequence[int], **kwargs) -> np.ndarray:
    """All node ids, most valuable first: the presampled access counts
    (:func:`presample_counts`) smoothed by an in-degree prior of the same
    total weight, score = counts + deg * sum(counts) / sum(deg) (few batches
    leave counts noisy; in-degree is what a node's access rate grows with).
    Ties by counts, then in-degree, then id."""
    counts = presample_counts(graph, seeds, num_neighbors, **kwargs)
    deg = _in_degree(graph)
    score = counts + deg * (counts.sum() / max(1, deg.sum()))
    return np.lexsort((np.arange(len(deg)), -deg, -counts, -score)).astype(np.int64)
