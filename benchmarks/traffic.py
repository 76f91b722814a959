"""Host-memory traffic of the CUDA gather kernel, counted by the CUDA-on-CPU
emulation (csrc/testing/cuda_emu.h) on every shared dataset, beside a raw
gather of the same rows. Deterministic: the GPU path's traffic figures until a
GPU measures them.

Per requested row: 32-byte sector requests (each warp-wide load instruction
asks for its distinct sectors), distinct sectors of the launch, dependent host
round trips; `span` is the row's compressed bytes, `bound` ceil(span/32) + 1
sectors; `raw` the sectors of the uncompressed row (rows at r * row_bytes of a
32-byte-aligned matrix). Round trips are also measured one row per launch on a
sample of rows (max over rows up to 4 KiB compressed, and over longer rows).

    python benchmarks/traffic.py [--rows 2048] [--emu-dir build/emu-fast] [--markdown]

Build the emulation first: `make emu` (sanitized; re-run here with the ASan
runtime preloaded) or, faster, `make emu EMU_DIR=build/emu-fast EMU_SANITIZE=`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import ibp_gnn
from ibp_gnn import emulation
from ibp_gnn.testing import SHARED_DATASETS, load_shared, shared_dir

ROOT = Path(__file__).resolve().parent.parent


def raw_sectors(ids: np.ndarray, row_bytes: int) -> np.ndarray:
    if row_bytes == 0:
        return np.zeros(len(ids), np.int64)
    first = ids * row_bytes // 32
    last = ((ids + 1) * row_bytes - 1) // 32
    return last - first + 1


def measure(emu, ct, ids: np.ndarray, sample: int = 64) -> dict:
    start, end = ct._row_spans(ids)
    span = (end + 7) // 8 - start // 8
    emu.reset_counters()
    got = emu.gather(ct, ids)
    c = emu.counters()
    want = ct.gather(torch.from_numpy(ids))
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8)), "emulated gather differs"
    n = len(ids)
    row_bytes = ct.shape[1] * ct.dtype.itemsize
    trips_short, trips_long, worst = 0, 0, 0.0
    for r in ids[:sample]:
        emu.reset_counters()
        emu.gather(ct, np.array([r]))
        one = emu.counters()
        s, e = ct._row_spans(np.array([r]))
        b = int((e[0] + 7) // 8 - s[0] // 8)
        if b <= 4096:
            trips_short = max(trips_short, one["round_trips"])
        else:
            trips_long = max(trips_long, one["round_trips"])
        worst = max(worst, one["sector_requests"] / (-(-b // 32) + 1))
    return {
        "rows": n, "row_bytes": row_bytes, "span": span.mean(),
        "requests": c["sector_requests"] / n, "distinct": c["distinct_sectors"] / n,
        "trips": c["round_trips"] / n, "bound": (-(-span // 32) + 1).mean(),
        "raw": raw_sectors(ids, row_bytes).mean(), "trips_short_max": trips_short,
        "trips_long_max": trips_long, "worst_vs_bound": worst,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2048, help="random rows requested per dataset")
    ap.add_argument("--emu-dir", type=Path, default=None, help="emulated build (default: "
                    "build/emu-fast if built, else build/emu)")
    ap.add_argument("--datasets", nargs="*", default=list(SHARED_DATASETS))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    d = args.emu_dir
    if d is None:
        fast = ROOT / "build" / "emu-fast"
        d = fast if emulation.info(fast) else emulation.DEFAULT_DIR
    info = emulation.info(d)
    if info is None:
        sys.exit(f"no emulated build in {d}: run `make emu EMU_DIR={d} EMU_SANITIZE=`")
    if info.get("asan_runtime") and not emulation.asan_loaded():
        env = emulation.sanitized_env(d)
        return subprocess.call([sys.executable, *sys.argv], env=env)
    if shared_dir() is None:
        sys.exit("../shared/datasets is not present")
    emu = emulation.Emulator(info["library"])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    head = ("dataset", "shape", "span B", "raw sect", "bound", "requests", "distinct", "trips",
            "trips<=4K max", "trips>4K max", "max req/bound")
    rows = []
    for name in args.datasets:
        x = torch.from_numpy(load_shared(name))
        ct = ibp_gnn.compress(x)
        ids = np.random.default_rng(0).integers(0, len(x), args.rows)
        m = measure(emu, ct, ids)
        rows.append((name, f"{tuple(x.shape)}", f"{m['span']:.1f}", f"{m['raw']:.2f}",
                     f"{m['bound']:.2f}", f"{m['requests']:.2f}", f"{m['distinct']:.2f}",
                     f"{m['trips']:.2f}", str(m["trips_short_max"]),
                     str(m["trips_long_max"] or "-"), f"{m['worst_vs_bound']:.2f}"))
        print("  " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        print("  ".join(h.rjust(w[i]) for i, h in enumerate(head)))
        for r in rows:
            print("  ".join(v.rjust(w[i]) for i, v in enumerate(r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
