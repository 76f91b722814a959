"""Compare the runs of a sweep in one table, best first:

    python -m ibp_gnn.report multirun/train/2026-11-24_10-00-00 [--sort test_acc] [--csv out.csv]

Reads every ``metrics.json`` under the folder (one per run, written by
``ibp_gnn.train.train``) and prints a markdown table: the run's overrides,
accuracy, epoch time, feature wait, host bytes per epoch and store ratio.
When runs differ only in ``trainer.seed`` (``-m trainer.seed=0,1,2``), a second
table gives each configuration's mean ± sample standard deviation over its seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import List, Optional

COLUMNS = [  # (metrics key, header, format)
    ("best_val_acc", "val acc", "{:.4f}"),
    ("test_acc", "test acc", "{:.4f}"),
    ("epoch_s", "epoch s", "{:.2f}"),
    ("feature_wait_s", "feature wait s", "{:.3f}"),
    ("host_bytes_per_epoch", "host MB/epoch", "{:.1f}"),
    ("store_ratio", "ratio", "{:.2f}"),
]
SCALE = {"host_bytes_per_epoch": 1e-6}
LOWER_IS_BETTER = {"epoch_s", "feature_wait_s", "host_bytes_per_epoch", "final_loss"}


def load_runs(root: Path) -> List[dict]:
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        m["_run"] = str(path.parent.relative_to(root)) if path.parent != root else "."
        runs.append(m)
    return runs


def _short(override: str) -> str:
    """key=0.0034269762466825095 -> key=0.003427"""
    key, sep, value = override.partition("=")
    try:
        if sep and any(c in value for c in ".eE") and not value.startswith("["):
            return f"{key}={float(value):.4g}"
    except ValueError:
        pass
    return override


def table(runs: List[dict], sort: str = "best_val_acc") -> str:
    """Markdown table, best first; overrides shared by every run are listed once above it."""
    sets = [set(m.get("overrides") or []) for m in runs]
    common = set.intersection(*sets) if len(sets) > 1 else set()
    reverse = sort not in LOWER_IS_BETTER
    missing = float("-inf") if reverse else float("inf")
    runs = sorted(runs, key=lambda m: m.get(sort) if isinstance(m.get(sort), (int, float))
                  else missing, reverse=reverse)
    head = ["#", "run", "overrides"] + [h for _, h, _ in COLUMNS]
    lines = [f"all runs: {' '.join(sorted(_short(o) for o in common))}", ""] if common else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, m in enumerate(runs, 1):
        own = [_short(o) for o in (m.get("overrides") or []) if o not in common]
        cells = [str(i), m["_run"], " ".join(own) or "(defaults)"]
        for key, _, fmt in COLUMNS:
            v = m.get(key)
            cells.append("-" if v is None else fmt.format(v * SCALE.get(key, 1)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SEED_KEY = "trainer.seed"


def _config_of(m: dict) -> tuple:
    """A run's overrides without its seed: the runs of one configuration share it."""
    return tuple(sorted(o for o in (m.get("overrides") or []) if o.split("=", 1)[0].lstrip("+~")
                        != SEED_KEY))


def _mean_std(values: List[float]):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def seed_table(runs: List[dict], sort: str = "best_val_acc") -> Optional[str]:
    """Markdown table of mean ± std (sample, n - 1) over the seeds of each configuration,
    best mean first; None when no configuration ran with more than one seed."""
    groups: dict = {}
    for m in runs:
        groups.setdefault(_config_of(m), []).append(m)
    if not any(len(g) > 1 for g in groups.values()):
        return None
    sets = [set(k) for k in groups]
    common = set.intersection(*sets) if len(sets) > 1 else set()
    reverse = sort not in LOWER_IS_BETTER
    missing = float("-inf") if reverse else float("inf")

    def key(item):
        vals = [m[sort] for m in item[1] if isinstance(m.get(sort), (int, float))]
        return _mean_std(vals)[0] if vals else missing

    head = ["#", "overrides", "seeds"] + [h for _, h, _ in COLUMNS]
    lines = [f"mean ± std over {SEED_KEY} (sample std; n = seeds)", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, (config, ms) in enumerate(sorted(groups.items(), key=key, reverse=reverse), 1):
        own = [_short(o) for o in config if o not in common]
        seeds = sorted(str(o.split("=", 1)[1]) for m in ms for o in (m.get("overrides") or [])
                       if o.split("=", 1)[0].lstrip("+~") == SEED_KEY)
        cells = [str(i), " ".join(own) or "(defaults)", f"{len(ms)} ({','.join(seeds) or '-'})"]
        for k, _, fmt in COLUMNS:
            vals = [m[k] * SCALE.get(k, 1) for m in ms if isinstance(m.get(k), (int, float))]
            if not vals:
                cells.append("-")
                continue
            mean, std = _mean_std(vals)
            cells.append(fmt.format(mean) + ("" if math.isnan(std) else " ± " + fmt.format(std)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ibp_gnn.report", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a sweep (or run) folder holding metrics.json files")
    p.add_argument("--sort", default="best_val_acc",
                   help="metric to rank by (default best_val_acc; time/bytes/loss rank ascending)")
    p.add_argument("--csv", type=Path, default=None, help="also write the runs to this CSV file")
    a = p.parse_args(argv)
    if not a.folder.is_dir():
        p.error(f"{a.folder} is not a folder")
    runs = load_runs(a.folder)
    if not runs:
        print(f"no metrics.json under {a.folder} (did the runs finish?)", file=sys.stderr)
        return 1
    print(table(runs, a.sort))
    seeds = seed_table(runs, a.sort)
    if seeds is not None:
        print()
        print(seeds)
    if a.csv:
        import csv

        keys = ["_run", "overrides"] + [k for k, _, _ in COLUMNS]
        with open(a.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for m in runs:
                w.writerow([" ".join(m.get(k) or []) if k == "overrides" else m.get(k)
                            for k in keys])
    return 0


if __name__ == "__main__":
    sys.exit(main())
