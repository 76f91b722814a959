"""One process per device under torchrun (or a SLURM job with several tasks):
the process group, sums over ranks and each rank's share of the node ids."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import List

import torch

from .specs import ConfigError


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(tr) -> _Dist:
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1 \
            and tr.devices > 1:
        # A SLURM job with several tasks (hydra/launcher=slurm tasks_per_node > 1).
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _resolve_device(tr.device)
    if world == 1:
        if tr.devices > 1:
            raise ConfigError(f"trainer.devices={tr.devices} needs one process per device: launch "
                              f"with `torchrun --nproc_per_node={tr.devices} train.py ... "
                              f"trainer.devices={tr.devices}`")
        return _Dist(device=device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if tr.devices != local_world:
        raise ConfigError(f"trainer.devices={tr.devices} but {local_world} processes run on this "
                          f"node (torchrun --nproc_per_node); make them equal")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = tr.backend if tr.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return _Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def _teardown(d: _Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            # Every rank at the teardown before any destroys its group: a gloo
            # rank that destroyed its group and exited while rank 0 still wrote
            # the metrics aborted now and then (SIGABRT, "terminate called
            # without an active exception"). A rank that failed skips the wait.
            if sys.exc_info()[0] is None:
                try:
                    dist.barrier()
                except Exception:  # noqa: BLE001 - the other rank is gone: destroy anyway
                    pass
            dist.destroy_process_group()


def _all_sum(values: List[float], d: _Dist) -> List[float]:
    if not d.enabled:
        return values
    import torch.distributed as dist

    # nccl reduces device tensors only; gloo host ones.
    dev = (torch.device("cuda", torch.cuda.current_device())
           if dist.get_backend() == "nccl" else torch.device("cpu"))
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.cpu().tolist()


def _shard(ids: torch.Tensor, d: _Dist, equal: bool) -> torch.Tensor:
    if not d.enabled:
        return ids
    part = ids[d.rank::d.world]
    if equal:  # every rank must run the same number of steps for DDP
        part = part[: len(ids) // d.world]
    return part
