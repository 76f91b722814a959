#!/usr/bin/env python
"""Neighbour-sampling benchmark: ibp_gnn's CPU sampler side by side with DGL
2.1's CPU sampler (and pyg-lib / torch-sparse where importable) on a
papers100M-shaped graph.

    python benchmarks/sampler.py                  # 1/100 scale (1.1M nodes, 16M edges)
    python benchmarks/sampler.py --scale 0.1      # 1/10: 11.1M nodes, 161.6M edges
    python benchmarks/sampler.py --quick          # fewer batches and passes
    python benchmarks/sampler.py --json out.json
    python benchmarks/sampler.py --clean          # delete the cached graphs

The graph: ogbn-papers100M's node and edge counts times --scale (111,059,956
nodes, 1,615,685,872 directed edges at scale 1), in-degrees drawn from a
power law (Pareto, shape 1.5, scaled to the mean degree), sources a random
matching of the same degree sequence (so out-degrees follow the same law, as
in an undirected graph), in CSC form with int64 indptr and int32 indices. It
is generated once with numpy straight into .npy files under --cache-dir
(default /tmp/samp; peak RSS about the size of indices) and memory-mapped by
every run and every sampler, read in place.

Each sampler gets the same --batches batches of --batch-size uniform random
seeds (default 1024), fan-outs --fanouts seed side first (default 15,10,5;
DGL takes them input layer first, so it is handed the reverse), one warm-up
pass, then --repeat passes; the fastest pass is reported (the machine may be
shared), with ms per batch, sampled edges per batch and the ratio to DGL with
the same number of threads, all measured in this run.

  ibp cpu tN     CSCGraph(indptr, indices).sample(seeds, fanouts, threads=N),
                 the graph arrays numpy memmaps (no copy): the sample in PyG's
                 layout (node/row/col/edge + per-hop counts).
  --modes        also ibp's disjoint, weighted and temporal sampling on the same
                 graph and batches (one thread; ratios to the uniform sampler's
                 one-thread time): weights uniform in [0, 1), edge times the
                 rank of the edge among its node's neighbours (so sorted), seed
                 times uniform in [0, 64).
  dgl ompN       dgl.dataloading.NeighborSampler(fanouts).sample_blocks on
                 dgl.graph(("csc", ...)) of the same arrays, in a subprocess
                 with OMP_NUM_THREADS=N (DGL's blocks redraw the seeds'
                 neighbours at every layer, so its edge count is higher).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

DGL_WORKER_FLAG = "--dgl-worker"
PAPERS_NODES = 111_059_956
PAPERS_EDGES = 1_615_685_872
PARETO_SHAPE = 1.5


# ---- the graph --------------------------------------------------------------------------------
def graph_dir(args) -> str:
    return os.path.join(args.cache_dir, f"papers-{args.scale:g}-seed{args.seed}")


def build_graph(path: str, scale: float, seed: int) -> None:
    """Writes indptr.npy (int64) and indices.npy (int32) of a power-law CSC to
    `path` (published by renaming a temporary directory)."""
    n = max(2, round(PAPERS_NODES * scale))
    e = max(1, round(PAPERS_EDGES * scale))
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    w = rng.pareto(PARETO_SHAPE, n) + 1.0
    w *= e / w.sum()
    deg = np.floor(w).astype(np.int64)
    del w
    short = e - int(deg.sum())
    deg[rng.choice(n, size=short, replace=False)] += 1
    tmp = f"{path}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    indptr = np.lib.format.open_memmap(os.path.join(tmp, "indptr.npy"), "w+", np.int64, (n + 1,))
    indptr[0] = 0
    np.cumsum(deg, out=indptr[1:])
    indices = np.lib.format.open_memmap(os.path.join(tmp, "indices.npy"), "w+", np.int32, (e,))
    step = 1 << 20
    for a in range(0, n, step):  # the degree sequence as sources, then a random matching
        b = min(n, a + step)
        indices[indptr[a]:indptr[b]] = np.repeat(np.arange(a, b, dtype=np.int32), deg[a:b])
    rng.shuffle(np.asarray(indices))  # a memmap would take numpy's slow generic path
    indptr.flush()
    indices.flush()
    for f in ("indptr.npy", "indices.npy"):
        fd = os.open(os.path.join(tmp, f), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump({"nodes": n, "edges": e, "scale": scale, "seed": seed,
                   "pareto_shape": PARETO_SHAPE, "max_in_degree": int(deg.max()),
                   "build_s": time.perf_counter() - t0}, f)
    del indptr, indices
    os.rename(tmp, path)


def load_graph(args) -> tuple:
    """(indptr, indices, meta): read-only memmaps of the cached graph, built first if absent."""
    path = graph_dir(args)
    if not os.path.exists(os.path.join(path, "meta.json")):
        os.makedirs(args.cache_dir, exist_ok=True)
        print(f"# building the graph once into {path} ...", flush=True)
        build_graph(path, args.scale, args.seed)
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    indptr = np.load(os.path.join(path, "indptr.npy"), mmap_mode="r")
    indices = np.load(os.path.join(path, "indices.npy"), mmap_mode="r")
    return indptr, indices, meta


def make_batches(num_nodes: int, args) -> list:
    rng = np.random.default_rng(args.seed + 1)
    return [rng.integers(0, num_nodes, args.batch_size, dtype=np.int64)
            for _ in range(args.batches)]


def timed(fn, batches, repeat: int) -> tuple:
    """(seconds of the fastest pass, sampled edges per pass) of fn over all batches."""
    edges = sum(fn(b) for b in batches)  # warm-up, and the edge count
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        times.append(time.perf_counter() - t0)
    return min(times), edges


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---- DGL, in a subprocess (its import needs a stub and OpenMP settings of its own) ----------
def dgl_worker(args) -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import torch

    try:
        from ibp_gnn.dgl import import_dgl

        dgl = import_dgl(without_graphbolt=True)
    except Exception as e:  # noqa: BLE001 - report any import failure as a skip
        print(json.dumps({"skip": f"dgl does not import: {type(e).__name__}: {e}"[:300]}))
        return
    indptr, indices, meta = load_graph(args)
    # DGL's CSC needs one id type for all arrays: int64 copies (its own memory).
    ip = torch.from_numpy(np.asarray(indptr, dtype=np.int64).copy())
    ix = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    g = dgl.graph(("csc", (ip, ix, torch.empty(0, dtype=torch.int64))),
                  num_nodes=meta["nodes"])
    sampler = dgl.dataloading.NeighborSampler(list(reversed(args.fanouts)))
    batches = [torch.from_numpy(b) for b in make_batches(meta["nodes"], args)]
    fn = lambda s: sum(b.num_edges() for b in sampler.sample_blocks(g, s)[2])  # noqa: E731
    sec, n_edges = timed(fn, batches, args.repeat)
    print(json.dumps({"version": dgl.__version__, "seconds": sec, "edges": n_edges,
                      "batches": len(batches), "peak_rss_gb": peak_rss_gb()}))


def run_dgl(args, omp: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), DGL_WORKER_FLAG] + args.argv
    env = dict(os.environ, OMP_NUM_THREADS=str(omp))
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"skip": "timed out"}
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"skip": err[:300]}


# ---- disjoint / weighted / temporal ------------------------------------------------------------
def run_modes(args, graph, indptr, batches, ours, show) -> None:
    import torch

    from ibp_gnn.sampler import CSCGraph

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed + 2)
    weight = torch.from_numpy(rng.random(graph.num_edges))
    weighted = CSCGraph(graph.indptr, graph.indices, check=False, edge_weight=weight)
    del weight
    deg = np.diff(np.asarray(indptr))
    rank = np.arange(graph.num_edges, dtype=np.int64) - np.repeat(np.asarray(indptr[:-1]), deg)
    temporal = CSCGraph(graph.indptr, graph.indices, check=False, edge_time=torch.from_numpy(rank))
    del rank
    times = [torch.from_numpy(rng.integers(0, 64, len(b))) for b in batches]
    print(f"  (modes: weights and times prepared in {time.perf_counter() - t0:.1f} s)")
    at = {id(b): t for b, t in zip(batches, times)}
    cases = {
        "disjoint": lambda s: graph.sample(s, args.fanouts, seed=1, threads=1, disjoint=True),
        "weighted": lambda s: weighted.sample(s, args.fanouts, seed=1, threads=1),
        "weighted+replace": lambda s: weighted.sample(s, args.fanouts, seed=1, threads=1,
                                                      replace=True),
        "temporal uniform": lambda s: temporal.sample(s, args.fanouts, seed=1, threads=1,
                                                      seed_time=at[id(s)]),
        "temporal last": lambda s: temporal.sample(s, args.fanouts, seed=1, threads=1,
                                                   seed_time=at[id(s)], temporal_strategy="last"),
    }
    base = ours[min(ours)][0] if ours else None
    for name, fn in cases.items():
        sec, n = timed(lambda s: fn(s).row.numel(), batches, args.repeat)
        show(f"ibp {name} t1", sec, n, len(batches))
        if base:
            print(f"  {'':<18} {sec / base:9.2f}x the uniform sampler's time (t{min(ours)})")


# ---- main -------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.01,
                   help="fraction of ogbn-papers100M's node and edge counts (default 0.01)")
    p.add_argument("--cache-dir", default="/tmp/samp")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--fanouts", type=lambda s: [int(x) for x in s.split(",")],
                   default=[15, 10, 5], help="seed side first (default 15,10,5)")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-dgl", dest="dgl", action="store_false")
    p.add_argument("--modes", action="store_true",
                   help="also time disjoint, weighted and temporal sampling")
    p.add_argument("--quick", action="store_true", help="5 batches, 2 passes")
    p.add_argument("--clean", action="store_true", help="delete --cache-dir's graphs and exit")
    p.add_argument("--json", help="write the results here")
    p.add_argument(DGL_WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.batches, args.repeat = 5, 2
    args.argv = ["--scale", repr(args.scale), "--cache-dir", args.cache_dir, "--batch-size",
                 str(args.batch_size), "--fanouts", ",".join(map(str, args.fanouts)),
                 "--batches", str(args.batches), "--repeat", str(args.repeat),
                 "--seed", str(args.seed)]
    if args.clean:
        for d in os.listdir(args.cache_dir) if os.path.isdir(args.cache_dir) else []:
            if d.startswith("papers-"):
                shutil.rmtree(os.path.join(args.cache_dir, d))
        return
    if args.dgl_worker:
        dgl_worker(args)
        return

    import torch

    from ibp_gnn.sampler import CSCGraph

    indptr, indices, meta = load_graph(args)
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"# graph: scale {args.scale:g}: {meta['nodes']} nodes, {meta['edges']} edges, "
          f"power-law in-degrees (max {meta['max_in_degree']}), indptr int64 + indices int32 "
          f"memory-mapped from {graph_dir(args)}")
    print(f"# {args.batches} batches of {args.batch_size} seeds, fan-outs {args.fanouts} "
          f"(seed side first); fastest of {args.repeat} passes", flush=True)
    t0 = time.perf_counter()
    graph = CSCGraph(indptr, indices, threads=2)
    check_s = time.perf_counter() - t0
    assert graph.indices.data_ptr() == indices.ctypes.data, "CSCGraph copied the memmap"
    batches = make_batches(meta["nodes"], args)
    results = {"config": {k: v for k, v in vars(args).items() if k != "argv"}, "graph": meta,
               "check_s": check_s, "rows": []}
    ours = {}
    for t in args.threads:
        fn = lambda s, t=t: graph.sample(s, args.fanouts, seed=1, threads=t).row.numel()  # noqa
        ours[t] = timed(fn, batches, args.repeat)
    dgl = {t: run_dgl(args, t) for t in args.threads} if args.dgl else {}
    for t in args.threads:  # a second ibp pass after DGL's, the faster one kept
        fn = lambda s, t=t: graph.sample(s, args.fanouts, seed=1, threads=t).row.numel()  # noqa
        sec, n = timed(fn, batches, args.repeat)
        ours[t] = (min(sec, ours[t][0]), n)

    def show(name, sec, edges, nb, ratio=None, rss=None):
        r = {"sampler": name, "ms_per_batch": 1e3 * sec / nb, "edges_per_batch": edges / nb,
             "edges_per_s": edges / sec}
        extra = f"  {ratio:5.2f}x DGL's speed" if ratio else ""
        extra += f"  peak RSS {rss:.2f} GB" if rss else ""
        print(f"  {name:<18} {r['ms_per_batch']:9.2f} ms/batch  {r['edges_per_batch']:9.0f} "
              f"edges/batch  {r['edges_per_s'] / 1e6:7.2f} M edges/s{extra}", flush=True)
        results["rows"].append(dict(r, speedup_vs_dgl=ratio, peak_rss_gb=rss))

    print(f"  CSCGraph check of the memmapped arrays: {check_s:.2f} s (once per graph)")
    for t in args.threads:
        d = dgl.get(t, {"skip": "--no-dgl"})
        ratio = None
        if "skip" not in d:
            ratio = (d["seconds"] / d["batches"]) / (ours[t][0] / len(batches))
        show(f"ibp cpu t{t}", *ours[t], len(batches), ratio)
    for t in args.threads:
        d = dgl.get(t, {"skip": "--no-dgl"})
        if "skip" in d:
            print(f"  dgl omp{t:<14} skipped: {d['skip']}")
        else:
            show(f"dgl {d['version']} omp{t}", d["seconds"], d["edges"], d["batches"],
                 rss=d["peak_rss_gb"])
    if args.modes:
        run_modes(args, graph, indptr, batches, ours, show)
    print(f"  ibp peak RSS {peak_rss_gb():.2f} GB (memmapped graph pages included)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
