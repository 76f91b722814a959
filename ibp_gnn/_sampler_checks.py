"""Argument checks of the sampler's public calls: each names the op, the
argument and the value."""
from __future__ import annotations

import warnings
from typing import Any, List, Optional

import numpy as np
import torch

_INDEX_DTYPES = (torch.int32, torch.int64)
_SEED_MASK = (1 << 64) - 1
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


def _value_tensor(x: Any, name: str, op: str, length: int) -> torch.Tensor:
    """A 1-D tensor of `length` values (tensor or numpy array)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or numpy.ndarray, "
                        f"got {type(x).__name__}")
    if x.dim() != 1 or x.numel() != length:
        raise ValueError(f"{op}: {name} must be 1-D with {length} values, got shape "
                         f"{tuple(x.shape)}")
    return x


def _time_tensor(x: Any, name: str, op: str, length: int) -> torch.Tensor:
    """Integer times as a contiguous int64 CPU tensor."""
    t = _value_tensor(x, name, op, length)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{op}: {name} must hold integer times (e.g. int64 timestamps), "
                        f"got {t.dtype}")
    return t.to("cpu", torch.int64).contiguous()


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
