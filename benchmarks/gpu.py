#!/usr/bin/env python
"""GPU benchmark: gather GB/s and bytes over the bus, IBP against raw gathers, and one
training epoch raw vs IBP. Writes a markdown report (benchmarks/results/gpu.md).

    python benchmarks/gpu.py                      # on a GPU machine (~2 min + the epoch)
    python benchmarks/gpu.py --no-epoch --quick   # gathers only, smaller tensors
    python benchmarks/gpu.py --prepare-only       # build the epoch's dataset caches, no GPU
    python benchmarks/gpu.py --dry-run --out x.md # CPU stand-ins, tiny sizes: checks the
                                                  # pipeline and the report, not GPU figures

Gathers (same random ids for every method, outputs checked bit for bit against x[ids]):
  * ibp zero-copy: CompressedTensor.gather on CUDA ids (check=False: the ids are known
    valid; check=True adds one device sync), compressed rows read from pinned host
    memory by the kernel, decoded on the GPU;
  * raw UVA gather: torch.index_select on a CUDA view of the pinned raw matrix (the
    kernel reads the rows over the bus, as DGL's UVA sampling does);
  * raw pinned index_select+copy: the CPU gathers into a pinned buffer, then one DMA copy;
  * raw in GPU memory: index_select with the matrix on the device (the ceiling, when it fits).
"GB/s" is output bytes over wall time (min over alternating repeats). "bus B/row" counts
the 32-byte sectors the requested rows span in host memory (ibp: the compressed spans;
raw UVA: the raw rows) or the bytes copied (pinned copy): computed from the layout, not
measured by counters.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# name -> (dtype, columns, rows, description)
LAYOUTS = {
    "dense-fp32-128": (torch.float32, 128, 1 << 20, "dense fp32 embeddings, 128 wide"),
    "fp16-768": (torch.float16, 768, 350_000, "dense fp16 embeddings, 768 wide"),
    "bow-fp32-500": (torch.float32, 500, 256_000, "binary bag-of-words, 500 wide, ~20 words"),
}
METHODS = ("ibp zero-copy", "raw UVA gather", "raw pinned index_select+copy",
           "raw in GPU memory")
EPOCH_DATASET = "synthetic-large"


def gpu_status() -> tuple[bool, str]:
    from ibp_gnn import _C, _cuda

    if not torch.cuda.is_available():
        return False, f"no GPU: torch.cuda.is_available() is False (torch {torch.__version__})"
    if not _C.cuda_built():
        return False, "no GPU path: ibp_gnn._C was built without CUDA (nvcc not found)"
    problem = _cuda.current_problem()
    if problem is not None:
        return False, problem
    return True, torch.cuda.get_device_name(0)


def make_matrix(name: str, rows: int, seed: int = 0) -> torch.Tensor:
    dtype, cols, _, _ = LAYOUTS[name]
    g = torch.Generator().manual_seed(seed)
    if name.startswith("bow"):
        x = torch.zeros(rows, cols)
        words = torch.randint(0, cols, (rows, 20), generator=g)
        x.scatter_(1, words, 1.0)
        return x.to(dtype)
    return (torch.randn(rows, cols, generator=g) * 0.05).to(dtype)


def sector_bytes(start: np.ndarray, end: np.ndarray) -> int:
    """Bytes of the 32-byte sectors spanned by byte ranges [start, end)."""
    return int(32 * ((end + 31) // 32 - start // 32).sum())


def bus_bytes(ct, idx: np.ndarray, row_bytes: int) -> dict:
    start_bits, end_bits = ct._row_spans(idx.astype(np.int64))
    raw_start = idx.astype(np.int64) * row_bytes
    return {"ibp zero-copy": sector_bytes(start_bits // 8, (end_bits + 7) // 8),
            "raw UVA gather": sector_bytes(raw_start, raw_start + row_bytes),
            "raw pinned index_select+copy": len(idx) * row_bytes,
            "raw in GPU memory": 0}


def uva_view(pinned: torch.Tensor) -> torch.Tensor:
    """A CUDA tensor over pinned host memory (reads go over the bus)."""
    typestr = {torch.float32: "<f4", torch.float16: "<f2"}[pinned.dtype]

    class _Host:
        __cuda_array_interface__ = {"shape": tuple(pinned.shape), "typestr": typestr,
                                    "data": (pinned.data_ptr(), False), "version": 3,
                                    "strides": None}

    t = torch.as_tensor(_Host(), device="cuda")
    if t.data_ptr() != pinned.data_ptr():
        raise RuntimeError("the CUDA view is not at the pinned address")
    t._ibp_owner = pinned  # keeps the host memory alive
    return t


def time_methods(fns: dict, repeat: int, sync) -> dict:
    """Min wall seconds per method, methods alternating within each repeat."""
    best = {k: float("inf") for k in fns}
    for f in fns.values():  # warm-up (allocations, kernel loads, caches)
        f()
    sync()
    for _ in range(repeat):
        for k, f in fns.items():
            sync()
            t = time.perf_counter()
            f()
            sync()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def bench_layout(name: str, rows: int, batch: int, repeat: int, dry: bool) -> dict:
    import ibp_gnn
    from ibp_gnn._dtypes import code_of, itemsize

    dtype, cols, _, desc = LAYOUTS[name]
    x = make_matrix(name, rows, seed=len(name))
    row_bytes = cols * itemsize(code_of(dtype, "bench"))
    t = time.perf_counter()
    ct = ibp_gnn.compress(x, progress=False)
    compress_s = time.perf_counter() - t
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, rows, (batch,), generator=g)
    want = x[idx]
    errors = {}
    if dry:  # CPU stand-ins for each method
        stage = torch.empty(batch, cols, dtype=dtype)
        fns = {"ibp zero-copy": lambda: ct.gather(idx),
               "raw UVA gather": lambda: torch.index_select(x, 0, idx),
               "raw pinned index_select+copy":
                   lambda: torch.index_select(x, 0, idx, out=stage).clone(),
               "raw in GPU memory": lambda: x[idx]}
        sync = lambda: None  # noqa: E731
    else:
        ct.pin_memory()
        dev = torch.device("cuda")
        idx_d = idx.to(dev)
        out_i = torch.empty(batch, cols, dtype=dtype, device=dev)
        out_u = torch.empty_like(out_i)
        out_p = torch.empty_like(out_i)
        out_g = torch.empty_like(out_i)
        pinned = x.pin_memory()
        stage = torch.empty(batch, cols, dtype=dtype).pin_memory()
        x_dev = x.to(dev)

        def pinned_copy():
            torch.index_select(pinned, 0, idx, out=stage)
            out_p.copy_(stage, non_blocking=True)
            return out_p

        fns = {"ibp zero-copy": lambda: ct.gather(idx_d, out=out_i, check=False),
               "raw pinned index_select+copy": pinned_copy,
               "raw in GPU memory": lambda: torch.index_select(x_dev, 0, idx_d, out=out_g)}
        try:
            x_uva = uva_view(pinned)
            fns["raw UVA gather"] = lambda: torch.index_select(x_uva, 0, idx_d, out=out_u)
        except Exception as e:  # noqa: BLE001 - reported in the table
            errors["raw UVA gather"] = f"{type(e).__name__}: {e}"
        sync = torch.cuda.synchronize
    for k, f in fns.items():  # lossless and equal for every method
        got = f()
        sync()
        if not torch.equal(got.cpu().view(torch.int16 if dtype == torch.float16 else torch.int32),
                           want.view(torch.int16 if dtype == torch.float16 else torch.int32)):
            raise SystemExit(f"gpu.py: {k} on {name} differs from x[idx]")
    secs = time_methods(fns, repeat, sync)
    bus = bus_bytes(ct, idx.numpy(), row_bytes)
    out_bytes = batch * row_bytes
    methods = []
    for k in METHODS:
        s = secs.get(k)
        methods.append({"method": k, "seconds": s, "gbps": out_bytes / s / 1e9 if s else None,
                        "bus_bytes": bus[k], "error": errors.get(k)})
    return {"layout": name, "description": desc, "rows": rows, "cols": cols,
            "dtype": str(dtype).replace("torch.", ""), "row_bytes": row_bytes, "batch": batch,
            "ratio": ct.ratio, "fetch_ratio": ct.stats()["fetch_ratio"],
            "compress_s": compress_s, "methods": methods}


def copy_gbps() -> float:
    """Pinned host -> device copy rate of 512 MiB (the DMA ceiling)."""
    h = torch.empty(1 << 27, dtype=torch.float32).pin_memory()
    d = torch.empty_like(h, device="cuda")
    d.copy_(h)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        d.copy_(h, non_blocking=True)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return h.numel() * 4 / best / 1e9


# ---- one epoch ----------------------------------------------------------------------------------
def epoch_overrides(dry: bool, data_dir: Path, store: str) -> list:
    if dry:
        base = ["dataset=synthetic", "dataset.num_nodes=2000", "trainer.device=cpu",
                "trainer.limit_train_batches=3", "store.pin=false"]
    else:
        base = [f"dataset={EPOCH_DATASET}", "trainer.device=cuda", "store.pin=true"]
    return base + [f"store={store}", "trainer.epochs=1", "trainer.limit_eval_batches=1",
                   "trainer.progress=false", "logger=none", f"paths.data_dir={data_dir}"]


def run_train(overrides: list, out_dir: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from ibp_gnn.train import train

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={out_dir}"] + overrides)
    t = time.perf_counter()
    m = train(cfg)
    m["wall_s"] = time.perf_counter() - t
    return m


def bench_epoch(dry: bool, data_dir: Path, prepare_only: bool = False) -> dict:
    """One epoch raw vs ibp (caches prepared by a first, one-batch run of each)."""
    try:
        import hydra  # noqa: F401
    except ImportError as e:
        return {"skipped": f"hydra-core is not importable ({e}); carry its wheels (README)"}
    out = Path(tempfile.mkdtemp(prefix="ibp_gpu_epoch_"))
    t = time.perf_counter()
    for store in ("raw", "ibp"):
        run_train(epoch_overrides(dry, data_dir, store) + ["trainer.limit_train_batches=1"],
                  out / f"prep-{store}")
    prepare_s = time.perf_counter() - t
    if prepare_only:
        return {"prepared": str(data_dir), "prepare_s": prepare_s}
    rows = {}
    for store in ("raw", "ibp"):
        m = run_train(epoch_overrides(dry, data_dir, store), out / store)
        rows[store] = {k: m[k] for k in ("epoch_s", "feature_wait_s", "host_bytes_per_epoch",
                                         "raw_bytes_per_epoch", "store_nbytes", "store_ratio",
                                         "num_nodes", "num_features", "final_loss")}
        rows[store]["batches"] = len(m["batch_losses"])
        rows[store]["losses"] = m["batch_losses"]
    same = rows["raw"].pop("losses") == rows["ibp"].pop("losses")
    return {"dataset": "synthetic (2000 nodes, CPU)" if dry else EPOCH_DATASET,
            "prepare_s": prepare_s, "stores": rows, "losses_identical": same}


# ---- report -------------------------------------------------------------------------------------
def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def markdown(meta: dict, gathers: list, epoch: dict) -> str:
    lines = [f"# GPU benchmark{' (DRY RUN: CPU stand-ins, not GPU figures)' if meta['dry'] else ''}",
             "", f"{meta['when']} · {meta['device']} · torch {meta['torch']} · "
             f"{meta['cpu_count']} CPU cores"
             + (f" · pinned host->device copy {meta['copy_gbps']:.1f} GB/s"
                if meta.get("copy_gbps") else ""), "",
             "## Gather (random ids, same ids for every method; output bit-identical to x[ids])",
             "", "| rows | method | GB/s (output) | ms / batch | bus B/row | bus vs raw UVA |",
             "|---|---|---|---|---|---|"]
    for g in gathers:
        raw_bus = next(m["bus_bytes"] for m in g["methods"] if m["method"] == "raw UVA gather")
        label = (f"{g['description']}: {g['rows']:,} x {g['cols']} {g['dtype']}, batch "
                 f"{g['batch']:,}, ratio {g['ratio']:.2f} (fetch {g['fetch_ratio']:.2f})")
        for i, m in enumerate(g["methods"]):
            ms = None if m["seconds"] is None else m["seconds"] * 1e3
            gbps = fmt(m["gbps"], ".1f") if not m["error"] else f"n/a ({m['error'][:80]})"
            rel = m["bus_bytes"] / raw_bus if raw_bus else None
            lines.append(f"| {label if i == 0 else ''} | {m['method']} | {gbps} | "
                         f"{fmt(ms, '.3f')} | {m['bus_bytes'] / g['batch']:.1f} | "
                         f"{fmt(rel, '.2f')} |")
    lines += ["", "bus B/row: 32-byte host sectors the requested rows span (ibp: compressed "
              "spans; raw UVA: raw rows), or bytes copied (pinned copy); computed from the "
              "layout, not read from counters. GB/s: output bytes / min wall time over "
              f"{meta['repeat']} alternating repeats.", "", "## One epoch, raw vs ibp", ""]
    if "skipped" in epoch:
        lines.append(f"not run: {epoch['skipped']}")
    else:
        lines += [f"{epoch['dataset']}; caches prepared in {epoch['prepare_s']:.1f} s; batch "
                  f"losses identical raw vs ibp: {epoch['losses_identical']}", "",
                  "| store | batches | epoch s | feature wait s | host MB read | host MiB "
                  "| ratio |", "|---|---|---|---|---|---|---|"]
        for store, r in epoch["stores"].items():
            lines.append(f"| {store} | {r['batches']} | {r['epoch_s']:.2f} | "
                         f"{r['feature_wait_s']:.3f} | {r['host_bytes_per_epoch'] / 1e6:.1f} | "
                         f"{r['store_nbytes'] / 2**20:.1f} | {r['store_ratio']:.2f} |")
        s = epoch["stores"]
        lines += ["", f"epoch time ibp / raw: {s['ibp']['epoch_s'] / s['raw']['epoch_s']:.2f}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU: CPU stand-ins at tiny sizes (checks the pipeline and report)")
    p.add_argument("--quick", action="store_true", help="tensors 8x smaller")
    p.add_argument("--layouts", default=",".join(LAYOUTS))
    p.add_argument("--batch", type=int, default=131072)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-epoch", action="store_true")
    p.add_argument("--prepare-only", action="store_true",
                   help="only build the epoch dataset's caches (CPU work)")
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("IBP_GNN_DATA_DIR", "/tmp/ibp_gnn_gpu_data")))
    p.add_argument("--out", type=Path, default=None,
                   help="markdown report (default benchmarks/results/gpu.md; dry runs: stdout)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    layouts = [s for s in a.layouts.split(",") if s]
    for name in layouts:
        if name not in LAYOUTS:
            p.error(f"--layouts: unknown {name!r}; known: {list(LAYOUTS)}")
    if a.prepare_only:
        r = bench_epoch(a.dry_run, a.data_dir, prepare_only=True)
        print(json.dumps(r))
        return 0 if "prepared" in r else 1
    ok, device = gpu_status()
    if not a.dry_run and not ok:
        print(f"gpu.py: {device}; nothing measured (use --dry-run for the CPU stand-ins)")
        return 0
    if a.dry_run:
        device = f"CPU stand-ins ({platform.processor() or platform.machine()})"
    meta = {"dry": a.dry_run, "device": device, "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "repeat": a.repeat}
    if not a.dry_run:
        meta["copy_gbps"] = copy_gbps()
    gathers = []
    for name in layouts:
        rows = LAYOUTS[name][2] // (8 if a.quick else 1)
        batch = a.batch
        if a.dry_run:
            rows, batch = 2000, min(a.batch, 512)
        r = bench_layout(name, rows, batch, a.repeat, a.dry_run)
        print(f"{name}: " + ", ".join(f"{m['method']} {fmt(m['gbps'], '.2f')} GB/s"
                                       for m in r["methods"]), file=sys.stderr, flush=True)
        gathers.append(r)
    out = a.out if a.out is not None else (None if a.dry_run else
                                           ROOT / "benchmarks" / "results" / "gpu.md")

    def publish(epoch: dict) -> None:
        report = markdown(meta, gathers, epoch)
        if out is None:
            print(report)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + f".tmp{os.getpid()}")
            tmp.write_text(report)
            os.replace(tmp, out)
            print(f"wrote {out}", file=sys.stderr)
        if a.json:
            a.json.write_text(json.dumps({"meta": meta, "gathers": gathers, "epoch": epoch},
                                         indent=1, default=str))

    if a.no_epoch:
        publish({"skipped": "--no-epoch"})
        return 0
    if out is not None:  # the gathers stay on record if the epoch runs out of time
        publish({"skipped": "the epoch was still running (or was stopped) when this was written"})
    publish(bench_epoch(a.dry_run, a.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
