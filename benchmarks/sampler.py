#!/usr/bin/env python
"""Neighbour-sampling benchmark: ibp_gnn's sampler side by side with DGL's CPU
sampler and PyG's pyg-lib / torch-sparse sampler, where they can be imported.

    python benchmarks/sampler.py                  # ~1 min on 2 cores
    python benchmarks/sampler.py --quick          # smoke run
    python benchmarks/sampler.py --json out.json

Two cases, each a uniform random graph (fixed seed) in CSC form and the same
fixed list of random seed batches for every sampler, fan-out --fanouts 10,5:
  small  --nodes 20000, --edges 200000, --batch-size 256 (the graph fits in
         the caches);
  large  --big-nodes 200000, --big-edges 4000000, --large-batch 4096 (it does
         not; --no-large skips this case).
Reported: ms per batch and sampled edges per second (edges in the sampler's
own output), from the fastest of --repeat passes over all batches after a
warm-up pass (the best of several passes, as the machine may be shared).

  ibp cpu tN        CSCGraph.sample(seeds, fanouts, threads=N): the sample in
                    PyG's layout (node/row/col/edge + per-hop counts).
  ibp pyg tN        the same through ibp_gnn.sampler.NeighborSampler
                    .sample_from_nodes (what NeighborLoader calls).
  ibp 2 batches     two Python threads sampling different batches at once
                    (threads=1 each; the GIL is released while sampling).
  dgl ompN          dgl.dataloading.NeighborSampler(fanouts).sample_blocks
                    in a subprocess with OMP_NUM_THREADS=N (DGL's blocks redraw
                    the seeds' neighbours at every layer, so its edge count is
                    a little higher).
  pyg-lib/torch-sparse  torch_geometric NeighborSampler when either is installed.
  ibp gpu           when a CUDA GPU is present: the graph read zero-copy from
                    pinned host memory, and from GPU memory.

Within one batch our sampler uses extra threads only for large samples of
graphs larger than the caches (see csrc/sampler/cpu/neighbor.cpp), so "t2"
equals "t1" in the small case; the large case runs the multi-threaded path.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time

import torch

DGL_WORKER_FLAG = "--dgl-worker"


def make_graph(nodes: int, edges: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, nodes, (2, edges), generator=g)


def make_batches(nodes: int, batch_size: int, count: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed + 1)
    return [torch.randint(0, nodes, (batch_size,), generator=g) for _ in range(count)]


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


def row(name: str, seconds: float, edges: int, batches: int) -> dict:
    r = {"sampler": name, "ms_per_batch": 1e3 * seconds / batches,
         "edges_per_batch": edges / batches, "edges_per_s": edges / seconds}
    print(f"  {name:<26} {r['ms_per_batch']:9.3f} ms/batch  {r['edges_per_batch']:9.0f} edges/batch"
          f"  {r['edges_per_s'] / 1e6:8.2f} M edges/s", flush=True)
    return r


def skip(name: str, why: str) -> None:
    print(f"  {name:<26} skipped: {why}", flush=True)


# ---- DGL, in a subprocess (its import needs a stub and OpenMP settings of its own) ----------
def cases(args) -> list:
    """(label, nodes, edges, batch size, batches) of each benchmark case."""
    out = [("small", args.nodes, args.edges, args.batch_size, args.batches)]
    if args.large:
        out.append(("large", args.big_nodes, args.big_edges, args.large_batch,
                     max(2, args.batches // 8)))
    return out


def dgl_worker(args) -> None:
    import types

    sys.modules.setdefault("dgl.graphbolt", types.ModuleType("dgl.graphbolt"))
    try:
        import dgl
    except Exception as e:  # noqa: BLE001 - report any import failure as a skip
        print(json.dumps({"skip": f"dgl does not import: {type(e).__name__}: {e}"[:300]}))
        return
    out = {"version": dgl.__version__}
    for label, nodes, edges, bs, count in cases(args):
        ei = make_graph(nodes, edges, args.seed)
        g = dgl.graph((ei[0], ei[1]), num_nodes=nodes)
        g.create_formats_()
        sampler = dgl.dataloading.NeighborSampler(args.fanouts)
        batches = make_batches(nodes, bs, count, args.seed)
        fn = lambda s: sum(b.num_edges() for b in sampler.sample_blocks(g, s)[2])  # noqa: E731
        sec, n_edges = timed(fn, batches, args.repeat)
        out[label] = [sec, n_edges, len(batches)]
    print(json.dumps(out))


def run_dgl(args, omp: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), DGL_WORKER_FLAG] + args.argv
    env = dict(os.environ, OMP_NUM_THREADS=str(omp))
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"skip": "timed out"}
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"skip": "dgl is not importable" if "No module named 'dgl'" in p.stderr else err[:300]}


# ---- main -------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=20000)
    p.add_argument("--edges", type=int, default=200000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--large-batch", type=int, default=4096)
    p.add_argument("--big-nodes", type=int, default=200000)
    p.add_argument("--big-edges", type=int, default=4000000)
    p.add_argument("--fanouts", type=lambda s: [int(x) for x in s.split(",")], default=[10, 5])
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-large", dest="large", action="store_false",
                   help="skip the large case")
    p.add_argument("--quick", action="store_true", help="20 batches, 2 repeats")
    p.add_argument("--json", help="write the results here")
    p.add_argument(DGL_WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.batches, args.repeat = 20, 2
    args.argv = ["--nodes", str(args.nodes), "--edges", str(args.edges), "--batch-size",
                 str(args.batch_size), "--large-batch", str(args.large_batch), "--big-nodes",
                 str(args.big_nodes), "--big-edges", str(args.big_edges), "--fanouts",
                 ",".join(map(str, args.fanouts)), "--batches", str(args.batches), "--repeat",
                 str(args.repeat), "--seed", str(args.seed)]
    if not args.large:
        args.argv.append("--no-large")
    if args.dgl_worker:
        dgl_worker(args)
        return

    from ibp_gnn import _C
    from ibp_gnn.sampler import CSCGraph, NeighborSampler
    from torch_geometric.data import Data
    from torch_geometric.sampler import NodeSamplerInput

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"# fan-out {args.fanouts}; {args.repeat} passes per row, the fastest reported")
    results = {"config": {k: v for k, v in vars(args).items() if k != "argv"}, "rows": []}
    dgl_runs = {omp: run_dgl(args, omp) for omp in (1, 2)}

    try:
        import torch_geometric.typing as tgt

        pyg_backend = ("pyg-lib" if tgt.WITH_PYG_LIB
                       else "torch-sparse" if tgt.WITH_TORCH_SPARSE else None)
    except ImportError:
        pyg_backend = None

    for label, nodes, edges, bs, count in cases(args):
        ei = make_graph(nodes, edges, args.seed)
        graph = CSCGraph.from_edge_index(ei, nodes)
        data = Data(edge_index=ei, num_nodes=nodes)
        batches = make_batches(nodes, bs, count, args.seed)
        print(f"\n{label}: {nodes} nodes, {edges} edges (uniform random, seed {args.seed}); "
              f"{count} batches of {bs} seeds, fan-out {args.fanouts}:")
        rows = []
        for t in (1, 2):
            fn = lambda s, t=t: (  # noqa: E731
                graph.sample(s, args.fanouts, seed=1, threads=t).row.numel())
            rows.append(row(f"ibp cpu t{t}", *timed(fn, batches, args.repeat), len(batches)))
        for t in (1, 2):
            ns = NeighborSampler(data, args.fanouts, seed=1, threads=t)
            fn = lambda s, ns=ns: ns.sample_from_nodes(  # noqa: E731
                NodeSamplerInput(input_id=None, node=s)).row.numel()
            rows.append(row(f"ibp pyg t{t}", *timed(fn, batches, args.repeat), len(batches)))

        def two_at_once(_unused):  # one pass over all batches, split between two threads
            half = len(batches) // 2
            counts = [0, 0]

            def work(k):
                for s in batches[k * half:(k + 1) * half]:
                    counts[k] += graph.sample(s, args.fanouts, seed=1, threads=1).row.numel()
            ths = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            return sum(counts)

        sec, n_edges = timed(two_at_once, [None], args.repeat)
        rows.append(row("ibp 2 batches at once", sec, n_edges, 2 * (len(batches) // 2)))

        for omp, res in dgl_runs.items():
            if "skip" in res:
                skip(f"dgl omp{omp}", res["skip"])
            elif label in res:
                rows.append(row(f"dgl {res['version']} omp{omp}", *res[label]))
        if pyg_backend:
            ns = NeighborSampler(data, args.fanouts, backend="pyg")
            fn = lambda s: ns.sample_from_nodes(  # noqa: E731
                NodeSamplerInput(input_id=None, node=s)).row.numel()
            rows.append(row(pyg_backend, *timed(fn, batches, args.repeat), len(batches)))
        else:
            skip("pyg-lib / torch-sparse", "neither is installed")

        gpu = torch.cuda.is_available() and _C.cuda_built() and _C.cuda_device_count() > 0
        if gpu:
            dev_batches = [b.cuda() for b in batches]
            for placement in ("pinned", "device"):
                gg = (CSCGraph.from_edge_index(ei, nodes).pin_memory() if placement == "pinned"
                      else graph.to("cuda"))

                def fn(s, gg=gg):
                    n = gg.sample(s, args.fanouts, seed=1, check=False).row.numel()
                    torch.cuda.synchronize()
                    return n
                rows.append(row(f"ibp gpu ({placement})", *timed(fn, dev_batches, args.repeat),
                                len(batches)))
        else:
            skip("ibp gpu", "no CUDA GPU here (or the CUDA sampler was not built)")
        results["rows"].append({"case": label, "nodes": nodes, "edges": edges,
                                "batch_size": bs, "results": rows})

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
