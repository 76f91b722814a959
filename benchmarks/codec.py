#!/usr/bin/env python
"""Side-by-side benchmark of ibp_gnn against general-purpose codecs.

For every dataset, from one run: compression ratios (ibp_gnn auto / paper,
per-row zstd, per-row lz4, blosc2 bitshuffle+zstd), CPU gather-decode
throughput of random batches (ibp_gnn vs torch.index_select on the raw tensor
vs per-row zstd/lz4 decode in a Python loop), encode throughput, and, when a
CUDA GPU is present, GPU gather-decode throughput. Every codec is checked to
be lossless on the dataset before anything is timed.

    python benchmarks/codec.py                      # shared real datasets (~3 min on 2 cores)
    python benchmarks/codec.py --quick              # smoke run (~30 s)
    python benchmarks/codec.py --synthetic          # adds labelled SYNTHETIC scale cases
    python benchmarks/codec.py --datasets cora,reddit --json out.json
    python benchmarks/codec.py --ratio              # paper / v2 / v3 / entropy ceiling (~1 min)

Throughputs are GB/s (1e9 B/s) of OUTPUT bytes for gathers and MB/s (1e6 B/s)
of INPUT bytes for encodes; each number is the median of --repeat
measurements, each measurement running the operation enough times to last at
least --min-time seconds, after a warm-up call.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

import ibp_gnn
from ibp_gnn import _C
from ibp_gnn.testing import SHARED_DATASETS, load_shared, shared_dir

import codec_large  # noqa: E402 - benchmarks/ is on sys.path when run as a script
import blosc2
import lz4
import lz4.block
import zstandard

FIRST = ("cora", "citeseer", "actor", "inj_amazon", "tolokers", "reddit")
DEFAULT_DATASETS = FIRST + tuple(d for d in SHARED_DATASETS if d not in FIRST)
SYNTHETIC = ("syn_embed", "syn_bow", "syn_lowrank32", "syn_lowrank16", "syn_papers")
SPEED_BATCHES = (1024, 100_000)
SEED = 0x5EED
ZSTD_LEVEL = 3
BLOSC_ROWS = 64
BLOSC_CLEVEL = 5

CODEC_NOTES = f"""\
codecs (ratio = raw bytes / compressed bytes):
  ibp auto / paper : ibp_gnn.compress(x, mode=...). 'host' = ct.ratio (header + mask tables + row
                     index + payload); 'fetch' = stats()['fetch_ratio'] (raw / payload bytes, i.e.
                     what fetching every row once reads).
  zstd-{ZSTD_LEVEL} row       : zstandard {zstandard.__version__} ZstdCompressor(level={ZSTD_LEVEL}), every row its own
                     frame (content size stored); ratio = raw / sum of frame sizes (the 8 B/row
                     offset table random access also needs is NOT counted).
  lz4 row          : lz4.block {lz4.__version__} compress(row, mode='default', store_size=False), every row
                     its own block; decode passes uncompressed_size; offsets not counted either.
  blosc2 bs+zstd   : blosc2 {blosc2.__version__} compress2(slab, codec=ZSTD, clevel={BLOSC_CLEVEL},
                     typesize=itemsize, filters=[BITSHUFFLE], blocksize=0 (auto), splitmode=AUTO,
                     nthreads=1), one chunk per slab of {BLOSC_ROWS} consecutive rows; ratio = raw /
                     sum of chunk sizes (ratio only; no random-access gather timed).
  x[idx]           : torch.index_select(x, 0, idx, out=buf) on the raw CPU tensor.
gather: uniform random ids with replacement (fixed seed), --batch ids per call, same batches for
  every method, output into a preallocated buffer; ibp uses ct.gather(idx, out=buf, threads=T)
  with torch.set_num_threads(T) too ('C++ entry alone': _C.CpuGather.gather on the same ids and
  buffer, without ct.gather's Python checks); zstd/lz4 decode row by row in a Python loop (1 thread),
  copying each decoded row into a preallocated numpy buffer (ids pre-converted to a list).
encode: ibp = the whole ibp_gnn.compress (mask selection + encoding); zstd/lz4 = per-row loop."""


# ---------------------------------------------------------------------------- helpers
SPREAD: dict = {}  # measurement key -> slowest / fastest of its samples


def measure(fn, min_time: float, repeat: int, warmup: int = 1,
            key: str = "") -> tuple[float, int]:
    """(median seconds per call, calls per measurement). The last warm-up call
    calibrates how many calls make one measurement last >= min_time. The spread
    (slowest / fastest measurement) is kept in SPREAD[key]."""
    one = 0.0
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        one = time.perf_counter() - t0
    k = max(1, math.ceil(min_time / max(one, 1e-9)))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        samples.append((time.perf_counter() - t0) / k)
    SPREAD[key] = max(samples) / min(samples)
    return statistics.median(samples), k


def cycler(items):
    it = itertools.cycle(items)
    return lambda: next(it)


def fail(msg: str) -> None:
    print(f"\n!!! LOSSLESS CHECK FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def gpu_available() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, f"torch.cuda.is_available() is False (torch {torch.__version__})"
    if not _C.cuda_built():
        return False, "ibp_gnn._C was built without CUDA"
    if _C.cuda_device_count() <= 0:
        return False, "ibp_gnn._C.cuda_device_count() == 0"
    return True, torch.cuda.get_device_name(0)


def loadavg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt(v, spec=".2f", width=8) -> str:
    if v is None:
        return f"{'-':>{width}}"
    return f"{v:>{width}{spec}}"


# ---------------------------------------------------------------------------- data
def synthetic(name: str, quick: bool) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(SEED)
    if name == "syn_embed":
        rows = 20_000 if quick else 200_000
        v = rng.standard_normal((rows, 128), dtype=np.float32) * np.float32(0.25)
        mag = np.clip(np.abs(v), np.float32(2.0 ** -7), np.float32(0.999))
        x = np.ascontiguousarray(np.copysign(mag, v).astype(np.float32))
        desc = (f"SYNTHETIC dense embedding-like float32 {rows}x128: N(0,0.25) with |v| clipped to "
                "[2^-7, 0.999] (full mantissas; top 5 exponent bits constant)")
        return x, desc
    if name == "syn_bow":
        rows, cols = (10_000 if quick else 100_000), 1000
        nnz = rows * cols // 100  # ~1 % density before duplicates collapse
        w = 1.0 / np.arange(1, cols + 1) ** 1.1  # Zipf-like word frequencies
        r = rng.integers(0, rows, nnz)
        c = rng.choice(cols, size=nnz, p=w / w.sum())
        vals = (1 + rng.poisson(0.4, nnz)).astype(np.float32)
        x = np.zeros((rows, cols), np.float32)
        x[r, c] = vals
        desc = (f"SYNTHETIC sparse bag-of-words float32 {rows}x{cols}: ~1% nonzero word counts "
                f"(1+Poisson(0.4)), Zipf-like column frequencies, density {np.count_nonzero(x) / x.size:.4f}")
        return x, desc
    if name == "syn_papers":
        from ibp_gnn.datasets.papers import SyntheticPapers

        rows = 20_000 if quick else 200_000
        sp = SyntheticPapers("/nonexistent", scale=0.001)  # only its feature model is used
        y = rng.integers(0, 172, rows)
        x = np.ascontiguousarray(sp._features(0, 0, rows, y, sp._feature_model()))
        desc = (f"SYNTHETIC papers100M-like float32 {rows}x128: the feature model of "
                "dataset=synthetic-papers (rank-16 + class centroid + noise, per-column scale)")
        return x, desc
    if name in ("syn_lowrank32", "syn_lowrank16"):
        fp16 = name.endswith("16")
        rows, cols = (20_000 if quick else 200_000), (768 if fp16 else 128)
        if fp16:
            rows //= 4
        k, clusters = 16, 32
        basis = rng.standard_normal((k, cols), dtype=np.float32)
        centers = rng.standard_normal((clusters, cols), dtype=np.float32) * np.float32(0.5)
        z = rng.standard_normal((rows, k), dtype=np.float32)
        noise = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.1)
        x = (z @ basis) / np.float32(np.sqrt(k)) + centers[rng.integers(0, clusters, rows)] + noise
        x = np.ascontiguousarray((x * np.float32(0.2)).astype(np.float16 if fp16 else np.float32))
        desc = (f"SYNTHETIC embedding-like {x.dtype} {rows}x{cols}: rank-{k} gaussian + {clusters} "
                "cluster centres + 0.1 gaussian noise, scaled by 0.2")
        return x, desc
    raise ValueError(name)


# ---------------------------------------------------------------------------- ratio vs ceiling
# (sign + exponent bits, mantissa bits) of the float dtypes the ceiling covers.
FLOAT_FIELDS = {np.dtype(np.float32): (9, 23), np.dtype(np.float16): (6, 10)}
RATIO_DENSE = ("reddit", "tolokers", "enron", "books", "disney")
RATIO_SYNTHETIC = ("syn_embed", "syn_lowrank32", "syn_lowrank16", "syn_papers32", "syn_papers16")


def entropy_ceiling(x: np.ndarray):
    """raw bits / (per column: empirical entropy of the sign+exponent field +
    the raw mantissa bits), summed over columns: what a lossless coder of the
    exponents alone (mantissas stored as they are) could reach at best. None
    for dtypes other than float32/float16. Ignores any per-row index or tag."""
    if x.dtype not in FLOAT_FIELDS or x.size == 0:
        return None
    hb, mb = FLOAT_FIELDS[x.dtype]
    u = np.ascontiguousarray(x).view(np.uint32 if x.itemsize == 4 else np.uint16)
    bits = 0.0
    for j in range(x.shape[1]):
        p = np.bincount((u[:, j] >> mb).astype(np.int64), minlength=1 << hb) / x.shape[0]
        p = p[p > 0]
        bits += float(-(p * np.log2(p)).sum()) + mb
    return x.itemsize * 8 * x.shape[1] / bits


def huffman_estimate(x: np.ndarray):
    """Estimated fetch ratio of the alternative to kCoded rows: a per-column
    Huffman code (unbounded table) of the exponent field, sign and mantissa
    raw, a 2-bit row tag. An estimate from code lengths, nothing is encoded."""
    import heapq

    if x.dtype not in FLOAT_FIELDS or x.size == 0:
        return None
    hb, mb = FLOAT_FIELDS[x.dtype]
    u = np.ascontiguousarray(x).view(np.uint32 if x.itemsize == 4 else np.uint16)
    bits = 2.0 * x.shape[0]
    for j in range(x.shape[1]):
        counts = np.bincount(((u[:, j] >> mb) & ((1 << (hb - 1)) - 1)).astype(np.int64))
        heap = [int(c) for c in counts if c]
        heapq.heapify(heap)
        while len(heap) > 1:  # sum of merged weights = total code bits
            a, b = heapq.heappop(heap), heapq.heappop(heap)
            bits += a + b
            heapq.heappush(heap, a + b)
        bits += x.shape[0] * (mb + 1)
    return x.nbytes * 8 / bits


def papers_like(rows: int, fp16: bool) -> tuple[np.ndarray, str]:
    """Rows of the synthetic-papers dataset's feature generator (ibp_gnn.datasets:
    rank-16 mix + class centre + noise, per-column scale and bias, like averaged
    word embeddings), 128 x float32 or its float16 cast."""
    from types import SimpleNamespace

    from ibp_gnn.datasets.papers import PAPERS100M, SyntheticPapers

    gen = SimpleNamespace(seed=0)
    model = SyntheticPapers._feature_model(gen)
    y = np.random.default_rng(SEED).integers(0, PAPERS100M["num_classes"], rows)
    x = SyntheticPapers._features(gen, 0, 0, rows, y, model)
    x = np.ascontiguousarray(x.astype(np.float16) if fp16 else x)
    return x, f"SYNTHETIC synthetic-papers features {rows}x128 {x.dtype} (ibp_gnn.datasets generator)"


def ratio_row(name: str, x: np.ndarray) -> dict:
    """Fetch ratios (raw / payload bytes) of mode="paper", the version-2
    encodings (kCoded rows off), version 3 (coded-form sparse rows off),
    version 4 and the ceiling; host ratios too."""
    from ibp_gnn import _encode

    t = torch.from_numpy(np.ascontiguousarray(x))
    out = {"name": name, "shape": f"{x.shape[0]}x{x.shape[1]}", "dtype": str(x.dtype)}
    for key, mode, coded, sparse_code in (("paper", "paper", False, False),
                                          ("v2", "auto", False, False),
                                          ("v3", "auto", True, False), ("v4", "auto", True, True)):
        _encode.CODED_ROWS, _encode.SPARSE_CODE = coded, sparse_code
        try:
            ct = ibp_gnn.compress(t, mode=mode, threads=2, progress=False)
        finally:
            _encode.CODED_ROWS, _encode.SPARSE_CODE = True, True
        if not torch.equal(ct.decompress(threads=2).view(torch.uint8), t.view(torch.uint8)):
            fail(f"{name}: {key} decompress() != original bytes")
        out[key] = ct.stats()["fetch_ratio"]
        out[key + "_host"] = ct.ratio
        if key == "v4":
            out["v4_rows"] = ct.stats()["rows_per_mode"]
    out["ceiling"] = entropy_ceiling(x)
    out["huffman_est"] = huffman_estimate(x)
    c, pa = out["ceiling"], out["paper"]
    out["gap_closed"] = (out["v4"] - pa) / (c - pa) if c is not None and c > pa else None
    return out


def ratio_table(results: list) -> str:
    """The --ratio results as a markdown table (README's dense-features table)."""
    lines = ["| dataset | shape | dtype | paper | v2 | v3 | v4 | ceiling | gap closed | v4 host |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["ceiling"]
        if c is not None and r["v2"] >= c:
            gap = "v2 above ceiling"
        elif r["gap_closed"] is not None:
            gap = f"{100 * r['gap_closed']:.0f}%"
        else:
            gap = "-"
        label = r["name"] + ("*" if r["name"].startswith("syn") else "")
        lines.append(f"| {label} | {r['shape']} | {r['dtype']} | {r['paper']:.3f} | {r['v2']:.3f} | "
                     f"{r['v3']:.3f} | {r['v4']:.3f} | {fmt(c, '.3f', 0).strip()} | {gap} | "
                     f"{r['v4_host']:.3f} |")
    return "\n".join(lines)


def ratio_main(args) -> None:
    """--ratio: paper / v2 / v3 / ceiling on the dense datasets and synthetic
    embeddings (quick: at most --ratio-rows rows of each)."""
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets_given \
        else list(RATIO_DENSE + RATIO_SYNTHETIC)
    rows_cap = args.ratio_rows
    results = []
    print(f"ratio = raw bytes / payload bytes (fetch); host adds index and tables; at most "
          f"{rows_cap} rows per dataset; ceiling: per column sign+exponent entropy + raw mantissa bits")
    for name in names:
        if name in SYNTHETIC:
            x, desc = synthetic(name, True)
        elif name in ("syn_papers32", "syn_papers16"):
            x, desc = papers_like(min(rows_cap, 20_000), name.endswith("16"))
        else:
            if shared_dir() is None:
                print(f"--- {name}: skipped (../shared/datasets is absent)")
                continue
            x, desc = load_shared(name), "real data"
        x = np.ascontiguousarray(x[:rows_cap])
        r = ratio_row(name, x)
        results.append(r)
        print(f"{name:<14} {r['shape']:>10} {r['dtype']:<8} paper {r['paper']:.3f}  v2 {r['v2']:.3f}  "
              f"v3 {r['v3']:.3f}  v4 {r['v4']:.3f}  ceiling {fmt(r['ceiling'], '.3f', 5)}  huffman est "
              f"{fmt(r['huffman_est'], '.3f', 5)}  host v2/v3/v4 "
              f"{r['v2_host']:.3f}/{r['v3_host']:.3f}/{r['v4_host']:.3f}  rows {r['v4_rows']}  "
              f"({desc})", flush=True)
    print("\n" + ratio_table(results))
    bad = [r["name"] for r in results if r["v3"] < r["v2"] or r["v3_host"] < r["v2_host"]]
    print(f"v3 below v2 on: {bad or 'none'}")
    bad = [r["name"] for r in results if r["v4"] < r["v3"] or r["v4_host"] < r["v3_host"]]
    print(f"v4 below v3 on: {bad or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


# ---------------------------------------------------------------------------- per-row codecs
def zstd_rows(mv: memoryview, rows: int, rb: int, cctx) -> list:
    return [cctx.compress(mv[i * rb:(i + 1) * rb]) for i in range(rows)]


def lz4_rows(mv: memoryview, rows: int, rb: int) -> list:
    comp = lz4.block.compress
    return [comp(mv[i * rb:(i + 1) * rb], store_size=False) for i in range(rows)]


def blosc_nbytes(xb: np.ndarray, itemsize: int, verify: bool) -> int:
    filters = [blosc2.Filter.NOFILTER] * 5 + [blosc2.Filter.BITSHUFFLE]
    cparams = dict(codec=blosc2.Codec.ZSTD, clevel=BLOSC_CLEVEL, typesize=itemsize,
                   filters=filters, filters_meta=[0] * 6, blocksize=0,
                   splitmode=blosc2.SplitMode.AUTO_SPLIT, nthreads=1)
    total = 0
    for a in range(0, xb.shape[0], BLOSC_ROWS):
        slab = np.ascontiguousarray(xb[a:a + BLOSC_ROWS])
        c = blosc2.compress2(slab, **cparams)
        total += len(c)
        if verify and blosc2.decompress2(c) != slab.tobytes():
            fail(f"blosc2 round trip differs in rows {a}..{a + BLOSC_ROWS}")
    return total


# ---------------------------------------------------------------------------- one dataset
def bench_dataset(name: str, x_np: np.ndarray, desc: str, args, gpu: tuple[bool, str]) -> dict:
    x_np = np.ascontiguousarray(x_np)
    x = torch.from_numpy(x_np)
    rows, cols = x.shape
    rb = x.element_size() * cols
    raw = x_np.nbytes
    xb = x_np.reshape(-1).view(np.uint8).reshape(rows, rb)
    mv = memoryview(xb.reshape(-1))
    x8 = x.view(torch.uint8)
    t_start = time.perf_counter()
    print(f"\n=== {name}: {rows} x {cols} {x.dtype}, {raw / 1e6:.2f} MB raw, {rb} B/row -- {desc}")

    # --- compress everything once (ratios) and check losslessness -------------
    cts = {m: ibp_gnn.compress(x, mode=m, threads=2, progress=False) for m in ("auto", "paper")}
    for m, ct in cts.items():
        if not torch.equal(ct.decompress(threads=2).view(torch.uint8), x8):
            fail(f"{name}: ibp_gnn mode={m} decompress() != original bytes")
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    dctx = zstandard.ZstdDecompressor()
    zrows = zstd_rows(mv, rows, rb, cctx)
    lrows = lz4_rows(mv, rows, rb)
    for i in range(rows):
        row = mv[i * rb:(i + 1) * rb]
        if dctx.decompress(zrows[i]) != row:
            fail(f"{name}: zstd round trip differs at row {i}")
        if lz4.block.decompress(lrows[i], uncompressed_size=rb) != row:
            fail(f"{name}: lz4 round trip differs at row {i}")
    blosc_total = blosc_nbytes(xb, x.element_size(), verify=True)

    gen = torch.Generator().manual_seed(SEED)
    n_batches = 4 if args.quick else 8
    batches = [torch.randint(0, rows, (args.batch,), generator=gen, dtype=torch.int64)
               for _ in range(n_batches)]
    lists = [b.tolist() for b in batches]
    out = torch.empty((args.batch, cols), dtype=x.dtype)
    for b in batches:  # gathers too: every thread count against x[idx]
        want = x8[b]
        for t in (1, 2):
            if not torch.equal(cts["auto"].gather(b, out=out, threads=t).view(torch.uint8), want):
                fail(f"{name}: ibp_gnn auto gather(threads={t}) != x[idx]")
    print("lossless: ibp auto + paper (decompress, and gather t=1,2 on every batch), "
          "zstd, lz4, blosc2 round trips: OK")

    ct = cts["auto"]
    st, stp = ct.stats(), cts["paper"].stats()
    ratio = {
        "ibp_auto_host": ct.ratio, "ibp_auto_fetch": st["fetch_ratio"],
        "ibp_paper_host": cts["paper"].ratio, "ibp_paper_fetch": stp["fetch_ratio"],
        "zstd_row": raw / sum(map(len, zrows)), "lz4_row": raw / sum(map(len, lrows)),
        "blosc2": raw / blosc_total,
    }
    batch_fetch = sum(ct.fetch_nbytes(b) for b in batches)
    ratio["ibp_auto_batch_fetch"] = len(batches) * args.batch * rb / batch_fetch

    # --- CPU gather ----------------------------------------------------------------
    mt, rep = args.min_time, args.repeat
    out_bytes = args.batch * rb
    gbs = lambda s: out_bytes / s / 1e9  # noqa: E731
    SPREAD.clear()
    gather, calls = {}, {}
    torch_threads = {}
    for t in (1, 2):
        torch.set_num_threads(t)
        nxt = cycler(batches)
        s, k = measure(lambda: ct.gather(nxt(), out=out, threads=t), mt, rep,
                       key=f"gather ibp_auto_t{t}")
        gather[f"ibp_auto_t{t}"], calls[f"ibp_auto_t{t}"] = gbs(s), k
        nxt = cycler(batches)
        s, k = measure(lambda: torch.index_select(x, 0, nxt(), out=out), mt, rep,
                       key=f"gather x_idx_t{t}")
        gather[f"x_idx_t{t}"], calls[f"x_idx_t{t}"] = gbs(s), k
        torch_threads[f"t{t}"] = torch.get_num_threads()
    torch.set_num_threads(args.torch_threads)
    if args.paper_gather:
        nxt = cycler(batches)
        s, _ = measure(lambda: cts["paper"].gather(nxt(), out=out, threads=1), mt, rep,
                       key="gather ibp_paper_t1")
        gather["ibp_paper_t1"] = gbs(s)

    buf = np.empty((args.batch, rb), np.uint8)
    bmv = memoryview(buf.reshape(-1))

    def zstd_gather(ids, dec=dctx.decompress):
        for j, i in enumerate(ids):
            bmv[j * rb:(j + 1) * rb] = dec(zrows[i])

    def lz4_gather(ids, dec=lz4.block.decompress):
        for j, i in enumerate(ids):
            bmv[j * rb:(j + 1) * rb] = dec(lrows[i], uncompressed_size=rb)

    for key, f in (("zstd_row_t1", zstd_gather), ("lz4_row_t1", lz4_gather)):
        nxt = cycler(lists)
        s, k = measure(lambda: f(nxt()), mt, rep, key=f"gather {key}")
        gather[key], calls[key] = gbs(s), k
    zstd_gather(lists[0])  # one more equality check of the timed decode paths
    if not np.array_equal(buf, xb[batches[0].numpy()]):
        fail(f"{name}: zstd batch decode != x[idx]")
    lz4_gather(lists[0])
    if not np.array_equal(buf, xb[batches[0].numpy()]):
        fail(f"{name}: lz4 batch decode != x[idx]")

    # --- encode ----------------------------------------------------------------------
    mbs = lambda s: raw / s / 1e6  # noqa: E731
    encode = {}
    emt, erep = args.min_time, max(1, min(rep, args.encode_repeat))
    for t in (1, 2):
        torch.set_num_threads(t)
        s, _ = measure(lambda: ibp_gnn.compress(x, mode="auto", threads=t, progress=False),
                       emt, erep, key=f"encode ibp_auto_t{t}")
        encode[f"ibp_auto_t{t}"] = mbs(s)
    torch.set_num_threads(args.torch_threads)
    s, _ = measure(lambda: zstd_rows(mv, rows, rb, cctx), emt, erep, key="encode zstd_row_t1")
    encode["zstd_row_t1"] = mbs(s)
    s, _ = measure(lambda: lz4_rows(mv, rows, rb), emt, erep, key="encode lz4_row_t1")
    encode["lz4_row_t1"] = mbs(s)

    speed = bench_speed(x, xb, args)

    # --- GPU -------------------------------------------------------------------------
    gpu_res: dict = {}
    if gpu[0]:
        gpu_res = bench_gpu(ct, x, batches, args)
    del cts

    # --- table -----------------------------------------------------------------------
    g = gpu_res.get
    print(f"{'codec':<34}{'ratio':>8}{'fetch':>8}{'enc1 MB/s':>11}{'enc2 MB/s':>11}"
          f"{'gath1 GB/s':>12}{'gath2 GB/s':>12}{'GPU GB/s':>10}")
    table = [
        ("ibp_gnn auto", ratio["ibp_auto_host"], ratio["ibp_auto_fetch"], encode["ibp_auto_t1"],
         encode["ibp_auto_t2"], gather["ibp_auto_t1"], gather["ibp_auto_t2"], g("ibp_auto")),
        ("ibp_gnn paper", ratio["ibp_paper_host"], ratio["ibp_paper_fetch"], None, None,
         gather.get("ibp_paper_t1"), None, None),
        (f"zstd-{ZSTD_LEVEL} per row (py loop)", ratio["zstd_row"], ratio["zstd_row"],
         encode["zstd_row_t1"], None, gather["zstd_row_t1"], None, None),
        ("lz4.block per row (py loop)", ratio["lz4_row"], ratio["lz4_row"], encode["lz4_row_t1"],
         None, gather["lz4_row_t1"], None, None),
        (f"blosc2 bitshuffle+zstd-{BLOSC_CLEVEL}/{BLOSC_ROWS} rows", ratio["blosc2"], None, None,
         None, None, None, None),
        ("x[idx] raw (torch.index_select)", 1.0, 1.0, None, None, gather["x_idx_t1"],
         gather["x_idx_t2"], g("raw_pinned_staged")),
    ]
    if "raw_resident" in gpu_res:
        table.append(("x resident on GPU (upper bound)", 1.0, 1.0, None, None, None, None,
                      g("raw_resident")))
    for row in table:
        print(f"{row[0]:<34}" + fmt(row[1]) + fmt(row[2]) + fmt(row[3], ".0f", 11)
              + fmt(row[4], ".0f", 11) + fmt(row[5], ".3f", 12) + fmt(row[6], ".3f", 12)
              + fmt(row[7], ".2f", 10))
    print(f"  batch={args.batch} ids ({out_bytes / 1e6:.2f} MB out), {len(batches)} batches cycled; "
          f"ibp fetch ratio over these batches {ratio['ibp_auto_batch_fetch']:.2f}; "
          f"torch threads used t1={torch_threads['t1']} t2={torch_threads['t2']}; "
          f"calls/measurement ibp_t1={calls['ibp_auto_t1']} x_idx_t1={calls['x_idx_t1']} "
          f"zstd={calls['zstd_row_t1']}; {time.perf_counter() - t_start:.1f} s; "
          f"load avg {loadavg()}")
    spread = dict(SPREAD)
    noisy = {k: v for k, v in spread.items() if v > 1.3}
    if noisy:
        print("  noisy (slowest/fastest measurement > 1.3): "
              + ", ".join(f"{k} x{v:.2f}" for k, v in noisy.items()))
    print(f"  speed (1 thread): table choice {speed['tables_s']:.2f} s (fixed, from "
          f"{speed['sample_rows']} sample rows), then encode {speed['encode_MBps']:.0f} MB/s")
    for b, r in speed["gather"].items():
        print(f"  speed batch {b:>6}: ibp {r['ibp_t1']:.3f} GB/s vs x[idx] {r['x_idx_t1']:.3f} GB/s "
              f"(ratio {r['ibp_t1'] / r['x_idx_t1']:.2f}); threads=None -> {r['threads_auto']} "
              f"thread(s) {r['ibp_auto']:.3f} GB/s ({r['ibp_auto'] / r['ibp_t1_wall']:.2f}x one thread)")
    if gpu_res:
        print(f"  GPU: {gpu_res['note']}")
    else:
        print(f"  GPU: skipped ({gpu[1]})")
    sys.stdout.flush()
    return dict(name=name, desc=desc, shape=[rows, cols], dtype=str(x.dtype), raw_bytes=raw,
                ratio=ratio, gather_GBps=gather, encode_MBps=encode, gpu_gather_GBps=gpu_res,
                speed=speed,
                torch_threads=torch_threads, calls_per_measurement=calls, spread=spread,
                synthetic=name in SYNTHETIC, seconds=time.perf_counter() - t_start)


# ---------------------------------------------------------------------------- speed
def bench_speed(x: torch.Tensor, xb: np.ndarray, args) -> dict:
    """Encode split into its fixed table choice and the per-row encode rate, and
    1-thread CPU gather of random batches of SPEED_BATCHES rows against
    torch.index_select, alternated in one loop (fresh batches every call), plus
    threads=None (the thread count the gather picks from the work size)."""
    from ibp_gnn import _encode as T

    torch.set_num_threads(1)
    # One-thread figures on the calling thread's CPU clock with --clock thread (a
    # loaded machine's descheduled time left out); threads=None always on the wall clock.
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    rows = x.shape[0]
    ids = T._sample_ids(rows, T.DEFAULT_SAMPLE_ROWS)
    # (the table choice fits in a one-worker pool: the process's CPU clock counts it)
    tclock = time.process_time if args.clock == "thread" else time.perf_counter
    # --coded-rows both: tables with and without kCoded rows (CODED_ROWS on/off),
    # their encodes alternated in one loop; the "_v2" figures are those with it off.
    coded = {"on": (True,), "off": (False,), "both": (True, False)}[args.coded_rows]
    builds, tables_s = {}, {}
    for c in coded:
        t0 = tclock()
        builds[c] = T._Build(xb, ids, ibp_gnn._dtypes.code_of(x.dtype, "bench"), tuple(x.shape),
                             "auto", 1, codes=c)
        tables_s[c] = tclock() - t0

    def encode(b):
        e = _C.Encoder(b.row_bytes, b.row_words, b.tables, allow_sparse=True)
        step = b.chunk_rows(T.DEFAULT_CHUNK_BYTES)
        for a in range(0, rows, step):
            e.encode(xb[a:a + step], b.row_bytes, 1)

    s = {c: math.inf for c in coded}
    for _ in range(max(1, min(args.repeat, args.encode_repeat))):
        for c in coded:
            t0 = clock()
            encode(builds[c])
            s[c] = min(s[c], clock() - t0)
    res = dict(tables_s=tables_s[coded[0]], sample_rows=len(ids),
               encode_MBps=xb.nbytes / s[coded[0]] / 1e6, coded_rows=args.coded_rows, gather={})
    if len(coded) == 2:
        res.update(tables_s_v2=tables_s[False], encode_MBps_v2=xb.nbytes / s[False] / 1e6)
    ct = ibp_gnn.compress(x, threads=2, progress=False)
    gen = torch.Generator().manual_seed(SEED + 1)
    rb = xb.shape[1]
    for batch in () if args.encode_only else SPEED_BATCHES:
        n_batches = max(2, min(8, (64 << 20) // max(1, batch * rb)))
        bs = [torch.randint(0, rows, (batch,), generator=gen) for _ in range(n_batches)]
        out = torch.empty((batch, x.shape[1]), dtype=x.dtype)
        if not torch.equal(ct.gather(bs[0], out=out, threads=1).view(torch.uint8),
                           x.view(torch.uint8)[bs[0]]):
            fail("speed: ibp gather != x[idx]")
        best = {"ibp_t1": math.inf, "x_idx_t1": math.inf, "ibp_t1_wall": math.inf,
                "ibp_auto": math.inf, "ibp_core_t1": math.inf}
        # Slowest of the one-thread measurements too: on a shared VM another
        # guest's load slows the decode's vector work in some of them (a
        # spread of 1.5-2x for ibp while index_select's stays near 1 shows it).
        worst = {"ibp_t1": 0.0, "ibp_core_t1": 0.0, "x_idx_t1": 0.0}
        calls = max(1, math.ceil(args.min_time * 4e8 / (batch * rb)))
        # The C++ entry alone (what ct.gather calls after its Python checks).
        core = _C.CpuGather(ct._header, ct._decode_table, ct._bases, ct._rel, ct._payload)
        optr, n_ids = out.data_ptr(), batch
        for _ in range(args.repeat):  # alternate methods, keep each one's fastest
            for key, fn in (("ibp_t1", lambda i: ct.gather(i, out=out, threads=1)),
                            ("ibp_core_t1", lambda i: core.gather(i.data_ptr(), n_ids, True, optr,
                                                                  1, False)),
                            ("x_idx_t1", lambda i: torch.index_select(x, 0, i, out=out))):
                t0 = clock()
                for c in range(calls):
                    fn(bs[c % n_batches])
                took = (clock() - t0) / calls
                best[key] = min(best[key], took)
                worst[key] = max(worst[key], took)
            # threads=None against one thread, both on the wall clock, back to back
            for key, t in (("ibp_t1_wall", 1), ("ibp_auto", None)):
                torch.set_num_threads(args.torch_threads if t is None else 1)
                t0 = time.perf_counter()
                for c in range(calls):
                    ct.gather(bs[c % n_batches], out=out, threads=t)
                best[key] = min(best[key], (time.perf_counter() - t0) / calls)
            torch.set_num_threads(1)
        gbs = {k: batch * rb / v / 1e9 for k, v in best.items()}
        gbs["spread"] = {k: v / best[k] for k, v in worst.items()}
        gbs["threads_auto"] = _C.gather_threads(batch, rb, args.torch_threads,
                                                -(-ct._payload.nbytes // max(1, rows)))
        res["gather"][batch] = gbs
    torch.set_num_threads(args.torch_threads)
    return res


def bench_speed_only(name: str, x_np: np.ndarray, desc: str, args) -> dict:
    """--speed-only: the ratio and bench_speed for one dataset, printed as one line."""
    x_np = np.ascontiguousarray(x_np)
    x = torch.from_numpy(x_np)
    xb = x_np.reshape(-1).view(np.uint8).reshape(x.shape[0], -1)
    print(f"\n=== {name}: {x.shape[0]} x {x.shape[1]} {x.dtype}, {x_np.nbytes / 1e6:.2f} MB "
          f"raw -- {desc}", flush=True)
    ratio = ibp_gnn.compress(x, threads=2, progress=False).ratio
    sp = bench_speed(x, xb, args)
    v2 = (f" (coded rows off: table choice {sp['tables_s_v2']:.2f} s; encode "
          f"{sp['encode_MBps_v2']:.0f} MB/s)") if "encode_MBps_v2" in sp else ""
    print(f"  ratio {ratio:.2f}; table choice {sp['tables_s']:.2f} s; encode {sp['encode_MBps']:.0f} "
          f"MB/s{v2}; load avg {loadavg()}")
    for b, r in sp["gather"].items():
        print(f"  batch {b:>6}: ibp {r['ibp_t1']:.3f} GB/s vs x[idx] {r['x_idx_t1']:.3f} GB/s "
              f"(ratio {r['ibp_t1'] / r['x_idx_t1']:.2f}; C++ entry alone {r['ibp_core_t1']:.3f} GB/s, "
              f"{r['ibp_core_t1'] / r['x_idx_t1']:.2f}); threads=None -> {r['threads_auto']} "
              f"thread(s) {r['ibp_auto']:.3f} GB/s ({r['ibp_auto'] / r['ibp_t1_wall']:.2f}x one thread, "
              f"wall clock); slowest / fastest of the {args.repeat}: ibp {r['spread']['ibp_t1']:.2f}, "
              f"x[idx] {r['spread']['x_idx_t1']:.2f}", flush=True)
    return dict(name=name, shape=list(x.shape), dtype=str(x.dtype), row_bytes=xb.shape[1],
                ratio=ratio, speed=sp, synthetic=name in SYNTHETIC)


# ---------------------------------------------------------------------------- GPU
def bench_gpu(ct, x: torch.Tensor, batches, args) -> dict:
    """GPU gather-decode (ibp, payload pinned, zero-copy) against moving the same
    raw rows to the GPU. Not runnable without a CUDA GPU; kept simple."""
    dev = torch.device("cuda", torch.cuda.current_device())
    rows, cols = x.shape
    ct.pin_memory()
    ids_gpu = [b.to(dev) for b in batches]
    out = torch.empty((args.batch, cols), dtype=x.dtype, device=dev)
    for b, bg in zip(batches, ids_gpu):
        got = ct.gather(bg, out=out).cpu()
        if not torch.equal(got.view(torch.uint8), x.view(torch.uint8)[b]):
            fail("ibp_gnn GPU gather != x[idx]")
    out_bytes = args.batch * x.element_size() * cols

    def cuda_time(step, k: int) -> float:
        torch.cuda.synchronize(dev)
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for i in range(k):
            step(i)
        e.record()
        e.synchronize()
        return s.elapsed_time(e) / 1e3 / k

    def gbs(step) -> float:
        for i in range(3):
            step(i)
        one = cuda_time(step, 1)
        k = max(1, math.ceil(args.min_time / max(one, 1e-9)))
        return out_bytes / statistics.median(cuda_time(step, k) for _ in range(args.repeat)) / 1e9

    nb = len(batches)
    res = {}
    # ids are already range-checked above, so check=False (no per-call device sync).
    res["ibp_auto"] = gbs(lambda i: ct.gather(ids_gpu[i % nb], out=out, check=False))

    # Raw baseline: NOT UVA (torch has no zero-copy gather from pinned host
    # memory). CPU torch.index_select of the rows from a pinned x into a pinned
    # staging buffer, then an async H2D copy; two staging buffers, each reused
    # only after its previous copy finished (pipelined, race-free).
    x_pin = x.pin_memory()
    staging = [torch.empty((args.batch, cols), dtype=x.dtype).pin_memory() for _ in range(2)]
    done = [torch.cuda.Event(), torch.cuda.Event()]
    for e in done:
        e.record()

    def staged(i):
        j = i % 2
        done[j].synchronize()
        torch.index_select(x_pin, 0, batches[i % nb], out=staging[j])
        out.copy_(staging[j], non_blocking=True)
        done[j].record()

    res["raw_pinned_staged"] = gbs(staged)
    staged(0)  # correctness of the timed path
    torch.cuda.synchronize(dev)
    if not torch.equal(out.cpu().view(torch.uint8), x.view(torch.uint8)[batches[0]]):
        fail("staged raw GPU baseline != x[idx]")
    del x_pin, staging

    free, _ = torch.cuda.mem_get_info(dev)
    if x.numel() * x.element_size() < free // 2:
        x_gpu = x.to(dev)
        res["raw_resident"] = gbs(lambda i: torch.index_select(x_gpu, 0, ids_gpu[i % nb], out=out))
        del x_gpu
    res["note"] = (f"{torch.cuda.get_device_name(dev)}; timed with torch.cuda.Event. ibp: "
                   "ct.pin_memory(), ids on cuda, check=False, zero-copy reads of the pinned "
                   "payload. Raw row 'x[idx]': NOT UVA - CPU index_select from pinned x "
                   f"({torch.get_num_threads()} torch threads) into pinned staging + H2D copy_ "
                   "(double-buffered). 'resident' = x already in GPU memory (not a host-memory "
                   "method; upper bound).")
    return res


# ---------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help="comma list of shared datasets (default: %(default)s); "
                        "'syn_embed'/'syn_bow' name the synthetic ones")
    p.add_argument("--batch", type=int, default=4096, help="ids per gather (default 4096)")
    p.add_argument("--repeat", type=int, default=None,
                   help="measurements per number, median taken (default 5; 3 with --quick)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds each measurement lasts at least (default 0.2; 0.02 with --quick)")
    p.add_argument("--encode-repeat", type=int, default=3,
                   help="cap on measurements per encode number (default 3)")
    p.add_argument("--quick", action="store_true", help="fast smoke run")
    p.add_argument("--synthetic", action="store_true",
                   help="add SYNTHETIC scale cases: 200k x 128 float32 embedding-like (clipped gaussian; "
                        "low-rank + clusters), 50k x 768 float16 low-rank + clusters, and "
                        "100k x 1000 float32 sparse bag-of-words (10x smaller with --quick)")
    p.add_argument("--paper-gather", action="store_true",
                   help="also time CPU gather of the mode='paper' tensor (1 thread)")
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    p.add_argument("--ratio", action="store_true",
                   help="ratios only: paper / v2 / v3 / entropy ceiling on the dense datasets and "
                        "synthetic embeddings (--datasets to choose; ~1 min)")
    p.add_argument("--ratio-rows", type=int, default=20_000,
                   help="--ratio: rows of each dataset at most (default %(default)s)")
    p.add_argument("--clock", choices=("wall", "thread"), default="wall",
                   help="clock of the one-thread speed figures: wall (default) or the thread's "
                        "CPU time (for a loaded machine; threads=None is timed on the wall clock)")
    p.add_argument("--coded-rows", choices=("on", "off", "both"), default="on",
                   help="speed section: encode with kCoded rows on (default, as compress does), "
                        "off (CODED_ROWS = False), or both alternated in one loop")
    p.add_argument("--encode-only", action="store_true",
                   help="speed section: table choice and encode only (no gather timings)")
    p.add_argument("--speed-only", action="store_true",
                   help="only the ratio and the speed section (table choice, encode, gather vs "
                        "index_select at batches 1024 and 100k; no zstd/lz4/blosc2 columns)")
    p.add_argument("--large", action="store_true",
                   help="speed section: also gather from a 2 GB synthetic-papers-like table with "
                        "fresh random ids every call (DRAM-resident rows, ibp and index_select), "
                        "printed as the extra columns 'large 1024' / 'large 100k' (~4 GB peak)")
    args = p.parse_args()
    args.datasets_given = any(a.startswith("--datasets") for a in sys.argv[1:])
    if args.ratio:
        ratio_main(args)
        return
    if args.batch < 1:
        p.error("--batch must be >= 1")
    args.repeat = args.repeat or (3 if args.quick else 5)
    args.min_time = args.min_time if args.min_time is not None else (0.02 if args.quick else 0.2)
    if args.quick:
        args.encode_repeat = min(args.encode_repeat, 2)
    args.torch_threads = torch.get_num_threads()

    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if args.synthetic:
        names += [s for s in SYNTHETIC if s not in names]
    unknown = [n for n in names if n not in SHARED_DATASETS and n not in SYNTHETIC]
    if unknown:
        p.error(f"unknown dataset(s) {unknown}; known: {', '.join(SHARED_DATASETS + SYNTHETIC)}")

    gpu = gpu_available()
    machine = {
        "cpu": cpu_model(), "os_cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "bmi2": bool(_C.cpu_has_bmi2()), "python": platform.python_version(),
        "torch": torch.__version__, "torch_default_threads": args.torch_threads,
        "torch_parallel": torch.__config__.parallel_info().splitlines()[1:3],
        "numpy": np.__version__, "zstandard": zstandard.__version__, "lz4": lz4.__version__,
        "blosc2": blosc2.__version__, "gpu": gpu[1] if gpu[0] else None,
        "ibp_gnn_format": _C.FORMAT_VERSION,
    }
    print("ibp_gnn codec benchmark" + (" (--quick)" if args.quick else ""))
    print(f"machine: {machine['cpu']}; os.cpu_count()={machine['os_cpu_count']}, usable "
          f"{machine['cpus_usable']}; BMI2={machine['bmi2']}; python {machine['python']}; "
          f"torch {machine['torch']} (default threads {args.torch_threads}; "
          f"{'; '.join(s.strip() for s in machine['torch_parallel'])}); numpy {np.__version__}")
    print(f"GPU: {gpu[1] if gpu[0] else 'none - GPU columns skipped: ' + gpu[1]}")
    print(f"load average at start (1/5/15 min): {loadavg()} - other processes on these cores "
          "make the timings noisy")
    print(f"timing: median of {args.repeat} (encode: {min(args.repeat, args.encode_repeat)}) "
          f"measurements, each >= {args.min_time} s, batch {args.batch} ids, seed {SEED:#x}")
    print(CODEC_NOTES)

    root = shared_dir()
    results, skipped = [], []
    t0 = time.perf_counter()
    for name in names:
        if name in SYNTHETIC:
            x, desc = synthetic(name, args.quick)
        else:
            if root is None:
                print(f"\n--- {name}: skipped (../shared/datasets is absent; "
                      "set IBP_GNN_SHARED_DATASETS)")
                skipped.append((name, "shared dir absent"))
                continue
            try:
                x = load_shared(name)
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"\n--- {name}: skipped (cannot load: {type(e).__name__}: {e})")
                skipped.append((name, f"{type(e).__name__}: {e}"))
                continue
            desc = f"real data, {root}"
        if args.speed_only:
            results.append(bench_speed_only(name, x, desc, args))
        else:
            results.append(bench_dataset(name, x, desc, args, gpu))
        del x

    large = (codec_large.bench_large(args, SPEED_BATCHES, SEED, fail)
             if args.large and args.speed_only else None)
    if args.speed_only:
        print("\n=== speed (GB/s of output, one thread unless noted; ibp / index_select) ===")
        both = args.coded_rows == "both"
        cell = lambda v: f"{v['ibp_t1']:>8.2f} /{v['x_idx_t1']:>5.2f} ({v['ibp_t1'] / v['x_idx_t1']:.2f})"  # noqa: E731
        print(f"{'dataset':<14}{'row B':>7}{'ratio':>7}{'tables s':>9}{'enc MB/s':>9}"
              + (f"{'v2 tab s':>9}{'v2 MB/s':>9}" if both else "")
              + f"{'batch 1024':>24}{'batch 100k':>24}{'auto/1t 1024':>15}{'auto/1t 100k':>15}"
              + (f"{'large 1024':>24}{'large 100k':>24}" if large else ""))
        for r in results:
            g = r["speed"]["gather"]
            print(f"{r['name'] + ('*' if r['synthetic'] else ''):<14}{r['row_bytes']:>7}"
                  f"{r['ratio']:>7.2f}{r['speed']['tables_s']:>9.2f}{r['speed']['encode_MBps']:>9.0f}"
                  + (f"{r['speed']['tables_s_v2']:>9.2f}{r['speed']['encode_MBps_v2']:>9.0f}"
                     if both else "")
                  + "".join(cell(v) for v in g.values())
                  + "".join(f"{v['ibp_auto'] / v['ibp_t1_wall']:>10.2f} ({v['threads_auto']}t)"
                            for v in g.values()))
        if large:  # its own line, in the extra columns only
            print(f"{'large*':<14}{512:>7}{large['ratio']:>7.2f}"
                  + " " * (18 + (18 if both else 0) + 48 + 30)
                  + "".join(cell(v) for v in large["gather"].values()))
            print(f"* large: one {large['raw_bytes'] / 1e9:.2f} GB synthetic-papers-like float32 "
                  "table, fresh random ids every call (rows in DRAM for ibp and index_select alike)")
        print(f"load average at end {loadavg()}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(machine=machine, results=results, large=large), f, indent=1)
        return

    # --- summary ---------------------------------------------------------------------
    print(f"\n=== summary (ratios: raw/compressed; gather GB/s of output, 1 thread, batch "
          f"{args.batch}) ===")
    print(f"{'dataset':<14}{'ibp host':>9}{'ibp fetch':>10}{'paper':>8}{'zstd':>8}{'lz4':>8}"
          f"{'blosc2':>8}{'ibp GB/s':>10}{'x[idx]':>9}{'ibp/x[idx]':>11}{'tables s':>9}"
          f"{'enc MB/s':>9}{'/x 1024':>8}{'/x 100k':>8}{'auto/1t 1024':>13}{'auto/1t 100k':>13}")
    for r in results:
        ra, ga = r["ratio"], r["gather_GBps"]
        label = r["name"] + ("*" if r["synthetic"] else "")
        print(f"{label:<14}" + fmt(ra["ibp_auto_host"], ".2f", 9) + fmt(ra["ibp_auto_fetch"], ".2f", 10)
              + fmt(ra["ibp_paper_host"]) + fmt(ra["zstd_row"]) + fmt(ra["lz4_row"])
              + fmt(ra["blosc2"]) + fmt(ga["ibp_auto_t1"], ".3f", 10)
              + fmt(ga["x_idx_t1"], ".3f", 9) + fmt(ga["ibp_auto_t1"] / ga["x_idx_t1"], ".3f", 11)
              + fmt(r["speed"]["tables_s"], ".2f", 9) + fmt(r["speed"]["encode_MBps"], ".0f", 9)
              + "".join(fmt(v["ibp_t1"] / v["x_idx_t1"], ".2f", 8)
                        for v in r["speed"]["gather"].values())
              + "".join(fmt(v["ibp_auto"] / v["ibp_t1_wall"], ".2f", 9) + f" ({v['threads_auto']}t)"
                        for v in r["speed"]["gather"].values()))
    if any(r["synthetic"] for r in results):
        print("* SYNTHETIC data (generated in this script, not a real dataset)")
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    total = time.perf_counter() - t0
    print(f"total {total:.1f} s; load average at end {loadavg()}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine, args={k: v for k, v in vars(args).items()},
                           results=results, skipped=skipped, total_seconds=total), f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
