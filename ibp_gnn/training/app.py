"""The command line of the training app (``ibp-gnn-train``, ``python -m
ibp_gnn.train``, ``python train.py``): Hydra over the config folder, the value
an Optuna sweep optimises, and config errors as one line on stderr."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from .specs import ConfigError

EXIT_CONFIG_ERROR = 2


def conf_dir() -> str:
    """The config folder: ``ibp_gnn/conf`` in an installed wheel, ``conf/`` of
    the source checkout for an editable install."""
    pkg = Path(__file__).resolve().parent.parent
    for d in (pkg / "conf", pkg.parent / "conf"):
        if (d / "train.yaml").is_file():
            return str(d)
    raise RuntimeError(f"ibp_gnn: no conf/train.yaml in {pkg} or {pkg.parent}; reinstall ibp_gnn")


def _user_errors():
    from ..datasets import DatasetError

    return (ConfigError, DatasetError)


def run_task(cfg) -> Optional[float]:
    """train(cfg) for a Hydra job; returns `optimized_metric` (what a sweep maximises).
    A config or dataset error ends the process with one line on stderr (exit 2)."""
    from .run import train

    try:
        metrics = train(cfg)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    return metrics.get(cfg.get("optimized_metric") or "best_val_acc")


def main() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=conf_dir(), config_name="train")(run_task)()
