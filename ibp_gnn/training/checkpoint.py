"""Checkpoints: ``best.pt`` (the best-val weights) and ``last.pt`` (everything a
resumed run needs: model, optimizer, scheduler, grad scaler, epoch, the
early-stopping state, the metrics so far and every random state that decides
the next batches), both published atomically. A run resumed from ``last.pt``
gives the same losses, weights and test accuracy as one that was never
interrupted (single process, ``loader.num_workers=0``).

Files load with ``torch.load(weights_only=True)``: random states are stored
as tensors and plain Python values."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from .specs import ConfigError

CHECKPOINT_VERSION = 1


def rng_state() -> Dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(gauss)],
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(obj: Dict[str, Any], path: Path) -> None:
    from ..datasets._cache import _publish, _tmp

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    torch.save({"version": CHECKPOINT_VERSION, **obj}, tmp)
    _publish(tmp, path)


def load(path: str) -> Dict[str, Any]:
    """The checkpoint at ``trainer.ckpt_path``; ConfigError naming the key if it is not one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or objects of other programs
        raise ConfigError(f"trainer.ckpt_path={path!r} is not a checkpoint of this app: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ConfigError(f"trainer.ckpt_path={path!r} is not a checkpoint of this app "
                          "(no 'model' entry)")
    return ckpt


def load_weights(model: torch.nn.Module, ckpt: Dict[str, Any], path: str) -> None:
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).splitlines()[1:2] or str(e).splitlines()[:1]
        raise ConfigError(f"trainer.ckpt_path={path!r} holds weights of another model or "
                          f"dataset than this config: {first[0].strip()}") from None
