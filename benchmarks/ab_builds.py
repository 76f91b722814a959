"""Two builds of ibp_gnn._C timed against each other in one process.

    python benchmarks/ab_builds.py A.so B.so --datasets reddit,syn_papers

On the shared VMs, the speed of a build moves by 10-45% from one run to the
next (README, "a second speed run"), so comparing runs made minutes apart
cannot show a change of a few percent. This script loads both builds into one
process, compresses each dataset once with the installed ibp_gnn, and times
the C++ entry of each build (`CpuGather.gather`, one thread) on the same
tables, ids and output buffers, taking turns. torch.index_select is timed in
the same rounds. It checks that both builds' rows are bit-identical to x[idx]
before it times them.

Output, per dataset and batch size: each build's median time per call, the
median over rounds of B's time / A's time, and each build's ratio to
index_select. Pass the same file twice to measure the harness's own bias
(an A/A run of reddit gave 0.97-1.04).

A build is a `_C.cpython-*.so` from a build/ folder (copy it out before
rebuilding there). Both must read the format that the installed ibp_gnn
writes.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import codec  # noqa: E402 - benchmarks/ is on sys.path

import ibp_gnn  # noqa: E402
from ibp_gnn.testing import load_shared  # noqa: E402

BATCHES = ((1024, 8), (100_000, 2))  # (ids per call, batches cycled), as codec.py


def load_build(path: str):
    """The module of one build (its PyInit__C), kept out of sys.modules."""
    if not Path(path).is_file():
        raise SystemExit(f"ab_builds: build {path!r} is not a file")
    spec = importlib.util.spec_from_file_location("ibp_gnn._C", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def features(name: str, quick: bool) -> torch.Tensor:
    if name in codec.SYNTHETIC:
        x, _ = codec.synthetic(name, quick)
    else:
        x = load_shared(name)
        x = x.x if hasattr(x, "x") else x
    return torch.as_tensor(np.ascontiguousarray(x))


def compare(name: str, x: torch.Tensor, builds: dict, rounds: int, batches) -> None:
    ct = ibp_gnn.compress(x, threads=2, progress=False)
    calls = {}
    for key, mod in builds.items():
        table = mod.build_decode_table(np.ascontiguousarray(ct._tables))
        calls[key] = mod.CpuGather(ct._header, table, ct._bases, ct._rel, ct._payload).gather
    rng = np.random.default_rng(codec.SEED)
    for n, cycle in batches:
        ids = [torch.from_numpy(rng.integers(0, x.shape[0], n)) for _ in range(cycle)]
        outs = {key: torch.empty((n, x.shape[1]), dtype=x.dtype) for key in ("A", "B", "x[idx]")}
        for key, call in calls.items():
            for i in ids:
                call(i.data_ptr(), n, True, outs[key].data_ptr(), 1, True)
                if not torch.equal(outs[key].view(torch.uint8), x[i].view(torch.uint8)):
                    raise SystemExit(f"ab_builds: build {key} gathers rows of {name} that "
                                     "differ from x[idx]")
        reps = max(1, (1 << 22) // (n * cycle))  # a round of about 4M rows per method
        times = {key: [] for key in outs}
        for r in range(rounds):
            order = ("A", "B", "x[idx]") if r % 2 == 0 else ("B", "A", "x[idx]")
            for key in order:
                out = outs[key]
                ptr = out.data_ptr()
                t0 = time.thread_time()
                for _ in range(reps):
                    for i in ids:
                        if key == "x[idx]":
                            torch.index_select(x, 0, i, out=out)
                        else:
                            calls[key](i.data_ptr(), n, True, ptr, 1, True)
                times[key].append((time.thread_time() - t0) / (reps * cycle))
        med = {key: statistics.median(v) for key, v in times.items()}
        b_over_a = statistics.median(b / a for a, b in zip(times["A"], times["B"]))
        print(f"{name:14s} batch {n:6d}: A {med['A'] * 1e6:9.1f} us  B {med['B'] * 1e6:9.1f} us"
              f"  B/A {b_over_a:.3f}  index_select {med['x[idx]'] * 1e6:9.1f} us"
              f"  (ratio A {med['x[idx]'] / med['A']:.3f}, B {med['x[idx]'] / med['B']:.3f})",
              flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="build A: a _C.cpython-*.so")
    p.add_argument("b", help="build B: a _C.cpython-*.so")
    p.add_argument("--datasets", default="reddit",
                   help="comma-separated shared or synthetic datasets (codec.py names)")
    p.add_argument("--rounds", type=int, default=20, help="turns of each build (default 20)")
    p.add_argument("--quick", action="store_true",
                   help="the synthetic datasets at codec.py --quick size")
    p.add_argument("--batch", type=int, action="append",
                   help="ids per call (repeatable; default 1024 and 100000)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    names = [d for d in args.datasets.split(",") if d]
    unknown = [d for d in names if d not in codec.SHARED_DATASETS and d not in codec.SYNTHETIC]
    if unknown:
        p.error(f"unknown dataset(s) {unknown}; known: "
                f"{', '.join(codec.SHARED_DATASETS + codec.SYNTHETIC)}")
    if args.batch and min(args.batch) < 1:
        p.error(f"--batch must be >= 1, got {min(args.batch)}")
    batches = [(n, 8 if n <= 4096 else 2) for n in args.batch] if args.batch else BATCHES
    builds = {"A": load_build(args.a), "B": load_build(args.b)}
    torch.set_num_threads(1)
    print(f"A = {args.a}\nB = {args.b}\none thread, thread CPU clock, {args.rounds} rounds; "
          f"{codec.cpu_model()}; load avg {codec.loadavg()}", flush=True)
    for name in names:
        compare(name, features(name, args.quick), builds, args.rounds, batches)


if __name__ == "__main__":
    main()
