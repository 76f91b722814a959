"""Per-epoch metric loggers (the `_target_`s of conf/logger)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from .specs import ConfigError


class CSVLogger:
    """One row per epoch in ``<save_dir>/<filename>``."""

    def __init__(self, save_dir: str, filename: str = "metrics.csv"):
        self.path = Path(save_dir) / filename
        self.rows: List[dict] = []

    def log(self, metrics: Dict[str, Any], step: int) -> None:
        self.rows.append({"epoch": step, **metrics})
        keys: List[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        from ..datasets._cache import _publish, _tmp

        tmp = _tmp(self.path)
        with open(tmp, "w") as f:
            f.write(",".join(keys) + "\n")
            for r in self.rows:
                f.write(",".join("" if r.get(k) is None else str(r.get(k)) for k in keys) + "\n")
        _publish(tmp, self.path)

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars per epoch for TensorBoard (``tensorboard --logdir <save_dir>``)."""

    def __init__(self, save_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # pragma: no cover
            raise ConfigError("logger.tensorboard needs the tensorboard package "
                              "(pip install tensorboard) or choose logger=csv") from e
        self.writer = SummaryWriter(log_dir=save_dir)

    def log(self, metrics: Dict[str, Any], step: int) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
