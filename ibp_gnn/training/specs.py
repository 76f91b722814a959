"""The config specs train() instantiates (the `_target_`s of conf/loader and
conf/trainer), the allowed values of enumerated keys, and ConfigError."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

SAMPLERS = ("ibp", "pyg")
AMP_MODES = ("bf16", "fp16")
BACKENDS = ("auto", "gloo", "nccl")
CODEC_MODES = ("auto", "paper")


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the key and the allowed values."""


@dataclass
class LoaderSpec:
    fanouts: List[int] = field(default_factory=lambda: [10, 5])
    batch_size: int = 512
    eval_fanouts: Optional[List[int]] = None
    eval_batch_size: int = 2048
    num_workers: int = 0
    prefetch: int = 1
    sampler: str = "ibp"
    shuffle: bool = True


@dataclass
class TrainerSpec:
    epochs: int = 5
    eval_every: int = 1
    device: str = "cpu"
    amp: Any = False
    seed: int = 0
    ckpt_dir: Optional[str] = None
    devices: int = 1
    backend: str = "auto"
    progress: bool = True
    limit_train_batches: Optional[int] = None
    limit_eval_batches: Optional[int] = None
    # Early stopping: stop after `patience` evaluations without a val_acc gain > min_delta.
    patience: Optional[int] = None
    min_delta: float = 0.0
    # Resume from a last.pt (or, with eval_only, evaluate the weights of any checkpoint).
    ckpt_path: Optional[str] = None
    eval_only: bool = False
