"""benchmarks/codec.py --large: the CPU gather from a table far larger than
the caches (a 2 GB synthetic-papers-like float32 table, fresh random ids every
call), ibp against torch.index_select. The other figures of codec.py cycle a
few MB of rows that stay in the caches; users gather from tables of GBs where
nearly every row is a DRAM miss (and a TLB miss)."""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch

import ibp_gnn

LARGE_ROWS = 4_000_000   # --large: 4M x 128 float32 = 2.05 GB raw, well above the 480 MiB L3
LARGE_CHUNK = 250_000    # rows generated per chunk
LARGE_POOL = 16_000_000  # ids drawn up front; each call takes the next batch of them


def large_table(rows: int, seed: int) -> tuple[np.ndarray, str]:
    """A synthetic-papers-like float32 table of `rows` x 128 (the feature model of
    dataset=synthetic-papers), generated in chunks into one preallocated array."""
    from ibp_gnn.datasets.papers import SyntheticPapers

    sp = SyntheticPapers("/nonexistent", scale=0.001)  # only its feature model is used
    model = sp._feature_model()
    y = np.random.default_rng(seed).integers(0, 172, rows)
    x = np.empty((rows, 128), np.float32)
    for k, a in enumerate(range(0, rows, LARGE_CHUNK)):
        b = min(rows, a + LARGE_CHUNK)
        x[a:b] = sp._features(k, a, b, y, model)
    return x, (f"SYNTHETIC papers100M-like float32 {rows}x128 ({x.nbytes / 1e9:.2f} GB; "
               f"generated in chunks of {LARGE_CHUNK} rows)")


def bench_large(args, batches, seed: int, fail) -> dict:
    """--large: 1-thread CPU gather from a table far larger than the caches, ibp
    against torch.index_select, alternated in one loop like bench_speed, but
    every call gathers fresh random ids (the next batch of a pool of
    LARGE_POOL ids drawn up front), so nearly every row is a DRAM miss for both."""
    torch.set_num_threads(1)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    rows = LARGE_ROWS // (10 if args.quick else 1)
    t0 = time.perf_counter()
    x_np, desc = large_table(rows, seed)
    x = torch.from_numpy(x_np)
    ct = ibp_gnn.compress(x, threads=2, progress=False)
    print(f"\n=== large table: {desc}; ratio {ct.ratio:.2f}, payload {ct._payload.nbytes / 1e9:.2f} GB "
          f"(built in {time.perf_counter() - t0:.0f} s)", flush=True)
    rb = x_np.shape[1] * 4
    pool = torch.randint(0, rows, (LARGE_POOL // (10 if args.quick else 1),),
                         generator=torch.Generator().manual_seed(seed + 2))
    res = {}
    for batch in batches:
        out = torch.empty((batch, x.shape[1]), dtype=x.dtype)
        n_slices = len(pool) // batch
        nxt = itertools.count()
        fresh = lambda: pool[(next(nxt) % n_slices) * batch:][:batch]  # noqa: E731
        i = fresh()
        if not torch.equal(ct.gather(i, out=out, threads=1).view(torch.uint8),
                           x.view(torch.uint8)[i]):
            fail("large: ibp gather != x[idx]")
        calls = max(1, math.ceil(args.min_time * 4e8 / (batch * rb)))
        best = {"ibp_t1": math.inf, "x_idx_t1": math.inf}
        for _ in range(args.repeat):
            for key, fn in (("ibp_t1", lambda i: ct.gather(i, out=out, threads=1)),
                            ("x_idx_t1", lambda i: torch.index_select(x, 0, i, out=out))):
                ids = [fresh() for _ in range(calls)]  # slices of the pool: views, no copies
                t0 = clock()
                for i in ids:
                    fn(i)
                best[key] = min(best[key], (clock() - t0) / calls)
        res[batch] = {k: batch * rb / v / 1e9 for k, v in best.items()}
        r = res[batch]
        print(f"  batch {batch:>6}: ibp {r['ibp_t1']:.3f} GB/s vs x[idx] {r['x_idx_t1']:.3f} GB/s "
              f"(ratio {r['ibp_t1'] / r['x_idx_t1']:.2f}), fresh ids every call", flush=True)
    torch.set_num_threads(args.torch_threads)
    return dict(rows=rows, raw_bytes=x_np.nbytes, ratio=ct.ratio, gather=res)
