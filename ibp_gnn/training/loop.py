"""Batches with their features, the loaders, and one pass of evaluation.

Features reach the model through ``store.gather(batch.n_id)``: the loader
samples the graph only (its ``Data`` has no ``x``), so IBP and raw runs see
bit-identical features and, with a fixed seed, give identical losses."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import torch

from .distributed import _all_sum, _Dist
from .specs import LoaderSpec


@dataclass
class _Stats:
    sample_s: float = 0.0
    wait_s: float = 0.0
    host_bytes: int = 0
    rows: int = 0


def _batches(loader, store, depth: int, stats: _Stats, limit: Optional[int]) -> Iterator:
    """(batch, x) for each batch of `loader`, x = store.gather(batch.n_id).
    depth 0: sample and gather in the loop; the gather time is feature wait.
    depth > 0: an ibp_gnn.Prefetcher thread samples and gathers up to `depth`
    batches ahead; the time the loop blocks for the next batch is the wait."""
    it = iter(loader)  # created here so the shuffle order does not depend on threads
    n = len(loader) if limit is None else min(limit, len(loader))
    if depth == 0:
        for _ in range(n):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            x = store.gather(batch.n_id)
            stats.wait_s += time.perf_counter() - t1
            stats.sample_s += t1 - t0
            stats.host_bytes += store.fetch_nbytes(batch.n_id)
            stats.rows += batch.n_id.numel()
            yield batch, x
        return

    from ..prefetch import Prefetcher

    class _First:  # the first n batches of the loader, iterated once
        def __iter__(self):
            return itertools.islice(it, n)

        def __len__(self):
            return n

    def fetch(batch):
        return batch, store.gather(batch.n_id), store.fetch_nbytes(batch.n_id)

    # Sampling and the gather run in the prefetcher's thread; `threads=None`
    # leaves the decoder its usual thread count.
    prefetcher = Prefetcher(_First(), None, depth, transform=fetch, stores=[], threads=None)
    batches = iter(prefetcher)
    try:
        for batch, x, nbytes in batches:
            stats.host_bytes += nbytes
            stats.rows += batch.n_id.numel()
            yield batch, x
    finally:
        batches.close()
        stats.wait_s += prefetcher.last.wait_s


class _Loaders:
    """The train/val/test NeighborLoaders over one graph; a training sampler and
    an evaluation sampler (rewound before each pass, so the same weights always
    give the same accuracy).
    ``state_dict()`` holds what decides the next samples (each loader's shuffle
    generator, each sampler's batch counter), so a resumed run draws the same
    batches as an uninterrupted one."""

    def __init__(self, data, spec: LoaderSpec, seed: int):
        self.data, self.spec, self.seed = data, spec, seed
        self._samplers: Dict[tuple, Any] = {}
        self._generators: List[torch.Generator] = []

    def _sampler(self, fanouts: List[int], train: bool):
        key = ("train" if train else "eval", *fanouts)
        if key not in self._samplers:
            from ..sampler import NeighborSampler

            # A fixed seed makes the samples reproducible; worker processes
            # instead draw from the per-worker torch generator.
            seed = self.seed if self.spec.num_workers == 0 else None
            self._samplers[key] = NeighborSampler(self.data, num_neighbors=list(fanouts), seed=seed)
        return self._samplers[key]

    def make(self, nodes: torch.Tensor, *, train: bool, seed_offset: int = 0):
        from torch_geometric.loader import NeighborLoader

        spec = self.spec
        fanouts = list(spec.fanouts if train or spec.eval_fanouts is None else spec.eval_fanouts)
        generator = torch.Generator().manual_seed(self.seed + seed_offset)
        self._generators.append(generator)
        kwargs = dict(num_neighbors=fanouts, input_nodes=nodes,
                      batch_size=spec.batch_size if train else spec.eval_batch_size,
                      shuffle=bool(spec.shuffle and train), num_workers=spec.num_workers,
                      persistent_workers=spec.num_workers > 0, generator=generator)
        if spec.sampler == "ibp":
            sampler = self._sampler(fanouts, train)
            return NeighborLoader(self.data, neighbor_sampler=sampler, **kwargs)
        return NeighborLoader(self.data, **kwargs)  # PyG's sampler (pyg-lib / torch-sparse)

    def rewind_eval(self) -> None:
        """Evaluation samples the same neighbourhoods on every pass."""
        for key, s in self._samplers.items():
            if key[0] == "eval" and hasattr(s, "_calls"):
                s._calls = 0

    def state_dict(self) -> dict:
        return {"generators": [g.get_state() for g in self._generators],
                "sampler_calls": {",".join(map(str, k)): int(getattr(s, "_calls", 0))
                                  for k, s in self._samplers.items()}}

    def load_state_dict(self, state: dict) -> None:
        for g, s in zip(self._generators, state["generators"]):
            g.set_state(s)
        for k, s in self._samplers.items():
            calls = state["sampler_calls"].get(",".join(map(str, k)))
            if calls is not None and hasattr(s, "_calls"):
                s._calls = int(calls)


def _autocast(device: torch.device, amp):
    if amp in (False, None):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _step_inputs(batch, x, device):
    x = x.to(device, non_blocking=True)
    if not torch.is_floating_point(x) or x.dtype == torch.float64:
        x = x.float()
    return (x, batch.edge_index.to(device, non_blocking=True),
            list(batch.num_sampled_nodes), list(batch.num_sampled_edges))


@torch.no_grad()
def _evaluate(model, loader, store, d: _Dist, amp, limit, progress: bool, desc: str):
    from .._progress import progress_bar

    model.eval()
    correct = total = 0
    stats = _Stats()
    bar = progress_bar(total=len(loader) if limit is None else min(limit, len(loader)),
                       desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for batch, x in _batches(loader, store, 0, stats, limit):
        with _autocast(d.device, amp):
            out = model(*_step_inputs(batch, x, d.device))[: batch.batch_size]
        y = batch.y[: batch.batch_size].to(d.device)
        correct += int((out.argmax(-1) == y).sum())
        total += int(y.numel())
        bar.update(1)
    bar.close()
    correct, total = _all_sum([correct, total], d)
    return correct / max(1.0, total)
