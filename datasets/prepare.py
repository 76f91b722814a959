"""Prepare datasets ahead of training (download, convert, compress; cached), e.g. on a login
node before a SLURM sweep, and print the dataset table (nodes, edges, feature bytes raw and
compressed, ratio):

    python datasets/prepare.py dataset=ogbn-papers100M            # one dataset, conf/ overrides
    python datasets/prepare.py --all-local                        # synthetic, cora, citeseer
    python datasets/prepare.py dataset=synthetic-large store.mode=paper

Arguments are Hydra overrides of conf/train.yaml (dataset=..., dataset.root=...,
paths.data_dir=..., store.mode=...). Training runs do the same preparation on first use;
this script only does it up front and reports sizes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def prepare(overrides, progress=True) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import ibp_gnn

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides) + ["paths.output_dir=."])
    t = time.perf_counter()
    graph = instantiate(cfg.dataset).prepare(progress=progress)
    mode = cfg.store.get("mode", "auto")
    path = graph.compressed(mode, progress=progress)
    ct = ibp_gnn.load(path, mmap=True)
    return {"name": graph.name, "nodes": graph.num_nodes, "edges": graph.num_edges,
            "features": f"{graph.num_features} x {graph.features.dtype}",
            "classes": graph.num_classes, "raw_mb": ct.raw_nbytes / 2**20,
            "ibp_mb": ct.nbytes / 2**20, "ratio": ct.ratio, "mode": mode,
            "seconds": time.perf_counter() - t, "cache": str(graph.cache_dir)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=ogbn-arxiv")
    p.add_argument("--all-local", action="store_true",
                   help="prepare the datasets that need no download (synthetic, cora, citeseer)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    local = ("synthetic", "synthetic-dense", "cora", "citeseer")
    runs = [[f"dataset={d}"] + a.overrides for d in local] if a.all_local else [a.overrides]
    rows = [prepare(ov, progress=not a.quiet) for ov in runs]
    print("| dataset | nodes | edges | features | raw MiB | IBP MiB | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['nodes']:,} | {r['edges']:,} | {r['features']} | "
              f"{r['raw_mb']:.1f} | {r['ibp_mb']:.1f} | {r['ratio']:.2f} |")
    for r in rows:
        print(f"{r['name']}: cached in {r['cache']} ({r['seconds']:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
