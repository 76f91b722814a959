"""Preparation at scale: synthetic-papers (ogbn-papers100M's OGB raw layout) at one or
more scales, phase by phase, with time, peak RSS (total and anonymous) and bytes
written per phase, then start-up to the first training batch and N training batches;
finally a projection for the real ogbn-papers100M from the measured per-edge and
per-row costs.

    python benchmarks/prepare.py --scale 0.01                # 1/100: 1.1M nodes, 16M edges
    python benchmarks/prepare.py --scale 0.1 --no-compress   # 1/10, graph phases only
    IBP_PREP_MEMORY=2GB python benchmarks/prepare.py --scale 0.01 --root /tmp/me/bench

Peak RSS is the kernel's high-water mark (VmHWM, reset before each phase through
/proc/self/clear_refs); it counts file pages mapped by the process (memory maps being
read or written), which the kernel can drop at any time. "anon" is the sampled peak of
anonymous memory (RssAnon): what the machine must really hold. Every phase runs in this
one process, in the order preparation runs them; the scratch data goes under --root and
is removed at the end unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Phase:
    """Times a phase and records its peak RSS (VmHWM) and peak anonymous memory."""

    def __init__(self, name: str, rows: list):
        self.name, self.rows = name, rows

    def _sample(self):
        while not self._stop.wait(0.05):
            self.anon = max(self.anon, _status("RssAnon"))
            self.file = max(self.file, _status("RssFile"))

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.anon, self.file = _status("RssAnon"), _status("RssFile")
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        self.t0 = time.perf_counter()
        self.written = 0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._t.join()
        self.anon = max(self.anon, _status("RssAnon"))
        self.file = max(self.file, _status("RssFile"))
        self.rows.append({"phase": self.name, "s": self.seconds, "peak_rss": _status("VmHWM"),
                          "peak_anon": self.anon, "peak_file": self.file,
                          "written": self.written})
        return False


def _size(*paths) -> int:
    total = 0
    for p in paths:
        p = Path(p)
        if p.is_dir():
            total += sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
        elif p.is_file():
            total += p.stat().st_size
    return total


def run_scale(scale: float, root: Path, args) -> dict:
    import numpy as np
    import torch

    import ibp_gnn
    from ibp_gnn.datasets import NpzEdges, SyntheticPapers, build_csc, memory_budget, ogb_meta
    from ibp_gnn.datasets.features import _npz_features

    torch.set_num_threads(args.threads)
    budget = memory_budget(args.budget)
    ds = SyntheticPapers(root / "cache", root=root / "raw", scale=scale,
                         labeled_fraction=args.labeled, memory_budget=budget,
                         compress_features=args.deflate_features)
    rows: list = []
    progress = not args.quiet
    meta = ogb_meta("ogbn-papers100M")
    folder = ds.cache_folder
    with Phase("generate raw (OGB layout)", rows) as ph:
        d = ds._ensure_downloaded(meta, progress)
        ph.written = _size(d)
    npz = d / "raw" / "data.npz"
    folder.mkdir(parents=True, exist_ok=True)
    with Phase("unpack node_feat", rows) as ph:
        feature_bytes = _npz_features(npz, "node_feat", folder / "features.npy",
                                      progress).nbytes  # not kept mapped: RSS is the phases'
        ph.written = _size(folder / "features.npy")
    n = ds.num_nodes
    with Phase("CSC build (3 passes)", rows) as ph:
        info = build_csc(NpzEdges(npz), n, folder, undirected=True, budget=budget,
                         progress=progress)
        ph.written = _size(folder / "csc_indptr.npy", folder / "csc_indices.npy") \
            + 8 * info["num_edges"]  # the spill files (removed bucket by bucket)
    for k in ("count_s", "partition_s", "sort_s"):
        rows[-1][k] = info["timings"].get(k)
    with Phase("labels, splits, meta", rows) as ph:
        g = ds.prepare(progress=progress)  # reuses the two phases above
        ph.written = _size(*(folder / f for f in ("y.npy", "split_train.npy", "split_val.npy",
                                                  "split_test.npy", "meta.json")))
    if args.compress:
        with Phase("compress features (.ibp)", rows) as ph:
            path = g.compressed("auto", progress=progress)
            ph.written = _size(path)
        ratio = ibp_gnn.load(path, mmap=True, verify=False).ratio
    else:
        ratio = None
    result = {"scale": scale, "nodes": n, "source_edges": ds.num_edges,
              "csc_entries": g.num_edges, "feature_bytes": feature_bytes, "ratio": ratio,
              "budget": budget, "rows": rows, "csc_bytes": _size(folder / "csc_indptr.npy",
                                                                folder / "csc_indices.npy")}
    if args.train_batches:
        result.update(train_phases(g, rows, args, compressed=args.compress))
    return result


def run_graph_only(scale: float, root: Path, args) -> dict:
    """The graph phases alone at `scale`: papers100M's node and edge counts, edges with
    power-law endpoints (ids floor(u^3 * N), fast to draw) written in chunks to an .npy
    of [2, E] int64, then the CSC build from that memory map, the start-up of the sampler
    on the cached CSC, and sampling batches (features are left to run_scale)."""
    import numpy as np
    import torch
    from torch_geometric.loader import NeighborLoader

    from ibp_gnn.datasets import PAPERS100M, build_csc, memory_budget, open_csc
    from ibp_gnn.pyg import IBPFeatureStore, IBPGraphStore
    from ibp_gnn.sampler import NeighborSampler

    torch.set_num_threads(args.threads)
    budget = memory_budget(args.budget)
    n = int(round(PAPERS100M["num_nodes"] * scale))
    E = int(round(PAPERS100M["num_edges"] * scale))
    root.mkdir(parents=True, exist_ok=True)
    rows: list = []
    src = root / "edge_index.npy"
    with Phase("write edges (.npy, power-law ids)", rows) as ph:
        out = np.lib.format.open_memmap(src, mode="w+", dtype=np.int64, shape=(2, E))
        perm = np.random.default_rng(1).permutation(n)  # hubs spread over the id range
        step = 1 << 22
        for k, a in enumerate(range(0, E, step)):
            b = min(E, a + step)
            rng = np.random.default_rng([0, k])
            out[0, a:b] = perm[(rng.random(b - a) ** 3 * n).astype(np.int64)]
            out[1, a:b] = perm[(rng.random(b - a) ** 3 * n).astype(np.int64)]
        out.flush()
        del out, perm
        ph.written = _size(src)
    folder = root / "csc"
    with Phase("CSC build (3 passes)", rows) as ph:
        from ibp_gnn.datasets import npy_edges

        info = build_csc(npy_edges(src), n, folder, undirected=True, budget=budget,
                         progress=not args.quiet)
        ph.written = _size(folder) + 8 * info["num_edges"]
    for k in ("count_s", "partition_s", "sort_s"):
        rows[-1][k] = info["timings"].get(k)
    src.unlink()
    fanouts = [15, 10, 5]
    with Phase("sampler start-up -> first batch", rows) as ph:
        indptr, indices = open_csc(folder)
        gs = IBPGraphStore()
        from ibp_gnn.datasets.base import _tensor

        gs.put_csc(_tensor(indptr), _tensor(indices), size=(n, n), check=False)
        fs = IBPFeatureStore("cpu", compress="never")
        fs.put_tensor(torch.zeros(n, dtype=torch.int8), group_name=None, attr_name="y",
                      index=None)
        sampler = NeighborSampler((fs, gs), fanouts, seed=0)
        seeds = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: 1024 * 200]
        loader = NeighborLoader((fs, gs), num_neighbors=fanouts, neighbor_sampler=sampler,
                                input_nodes=seeds, batch_size=args.batch_size)
        it = iter(loader)
        next(it)
    startup = rows[-1]["s"]
    with Phase(f"sample {args.train_batches} batches", rows) as ph:
        nodes = 0
        for _ in range(args.train_batches):
            nodes += next(it).n_id.numel()
    sample_s = rows[-1]["s"] / args.train_batches
    return {"scale": scale, "nodes": n, "source_edges": E, "csc_entries": info["num_edges"],
            "feature_bytes": n * 128 * 4, "ratio": None, "budget": budget, "rows": rows,
            "csc_bytes": _size(folder), "graph_only": True, "startup_s": startup,
            "sample_s": sample_s, "rows_per_batch": nodes / args.train_batches}


def run_startup(scale: float, root: Path, args) -> dict:
    """Training start-up alone on a run kept with --keep (same --root): the
    cached dataset is opened (nothing is prepared again), then start-up to the
    first batch and N batches with store.verify=args.verify."""
    import ibp_gnn
    from ibp_gnn.datasets import SyntheticPapers, memory_budget

    budget = memory_budget(args.budget)
    ds = SyntheticPapers(root / "cache", root=root / "raw", scale=scale,
                         labeled_fraction=args.labeled, memory_budget=budget,
                         compress_features=args.deflate_features)
    g = ds.prepare(progress=False)
    if not g._ibp_current("auto"):
        raise SystemExit(f"--startup-only: no current .ibp under {root} (run with --keep first)")
    ct = ibp_gnn.load(g.compressed("auto", progress=False), mmap=True, verify="lazy")
    res = {"scale": scale, "nodes": g.num_nodes, "source_edges": ds.num_edges,
           "csc_entries": g.num_edges, "feature_bytes": ct.raw_nbytes, "ratio": ct.ratio,
           "budget": budget, "rows": [], "verify": args.verify, "startup_only": True}
    del ct
    res.update(train_phases(g, res["rows"], args, compressed=True))
    return res


def train_phases(g, rows, args, compressed: bool) -> dict:
    """Start-up to the first batch (store, graph store, sampler, loader), then N
    batches of sampling + feature gather + a SAGE step, as train() runs them."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.loader import NeighborLoader

    from ibp_gnn.models import SAGE
    from ibp_gnn.sampler import NeighborSampler
    from ibp_gnn.stores import IBPStore, RawStore

    fanouts = [15, 10, 5]
    verify = {"true": True, "false": False}.get(args.verify, args.verify)
    t_start = time.perf_counter()
    with Phase("train start-up -> first batch", rows) as ph:
        store = (IBPStore(g, verify=verify) if compressed else RawStore(g))
        fs, gs = g.to_remote()
        sampler = NeighborSampler((fs, gs), fanouts, seed=0)
        labeled = g.y >= 0
        train_ids = g.split["train"][labeled[g.split["train"]]]
        loader = NeighborLoader((fs, gs), num_neighbors=fanouts, neighbor_sampler=sampler,
                                input_nodes=train_ids, batch_size=args.batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(0))
        it = iter(loader)
        batch = next(it)
        x = store.gather(batch.n_id)
    startup = rows[-1]["s"]
    verified_at = None
    model = SAGE(g.num_features, g.num_classes, hidden=128, layers=len(fanouts))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    done, sample_s, gather_s, model_s = 0, 0.0, 0.0, 0.0
    rows_fetched = 0
    with Phase(f"train {args.train_batches} batches ({args.model_batches} with SAGE steps)",
               rows) as ph:
        while done < args.train_batches:
            t = time.perf_counter()
            if done:
                try:
                    batch = next(it)
                except StopIteration:
                    it = iter(loader)
                    batch = next(it)
                t1 = time.perf_counter()
                x = store.gather(batch.n_id)
                sample_s += t1 - t
                gather_s += time.perf_counter() - t1
                rows_fetched += batch.n_id.numel()
                if compressed and verified_at is None and store.check_verified(wait=False):
                    verified_at = time.perf_counter() - t_start
            t2 = time.perf_counter()
            if done < args.model_batches:
                out = model(x.float(), batch.edge_index, batch.num_sampled_nodes,
                            batch.num_sampled_edges)[: batch.batch_size]
                loss = F.cross_entropy(out, batch.y[: batch.batch_size])
                opt.zero_grad()
                loss.backward()
                opt.step()
                model_s += time.perf_counter() - t2
            done += 1
    if compressed:
        store.check_verified()
        if verified_at is None:
            verified_at = time.perf_counter() - t_start
    k = max(1, done - 1)
    return {"startup_s": startup, "verified_s": verified_at,
            "sample_s": sample_s / k, "gather_s": gather_s / k,
            "rows_per_batch": rows_fetched / k,
            "model_s": model_s / max(1, min(done, args.model_batches))}


def fmt_bytes(b) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def table(res: dict) -> str:
    lines = [f"scale {res['scale']:g}: {res['nodes']:,} nodes, {res['source_edges']:,} source "
             f"edges -> {res['csc_entries']:,} CSC entries, features "
             f"{fmt_bytes(res['feature_bytes'])}, budget {fmt_bytes(res['budget'])}"
             + (f", IBP ratio {res['ratio']:.3f}" if res["ratio"] else ""), "",
             "| phase | time s | peak RSS | peak anon | peak file | written |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        extra = ""
        if "count_s" in r:
            extra = (f" (count {r['count_s']:.1f}, partition {r['partition_s']:.1f}, "
                     f"sort {r['sort_s']:.1f})")
        pf = fmt_bytes(r["peak_file"]) if "peak_file" in r else "-"
        lines.append(f"| {r['phase']}{extra} | {r['s']:.1f} | {fmt_bytes(r['peak_rss'])} | "
                     f"{fmt_bytes(r['peak_anon'])} | {pf} | {fmt_bytes(r['written'])} |")
    return "\n".join(lines)


# O(N) arrays a phase holds besides its budget-bound chunks, in bytes per node (upper
# bounds read off the code): generation keeps class, year, labeled mask, weights, order and
# cumulative weights; the CSC build the degree counts and a bincount temporary; the other
# phases labels and splits.
PER_NODE = {"generate raw": 56, "CSC build": 24}
BUDGET_BOUND = ("CSC build",)


def project(res: dict) -> str:
    """The real papers100M from this run's per-row and per-edge costs. Memory, an
    upper bound per phase: the measured anonymous peak, plus its O(N) arrays grown to
    N, plus the whole budget for the phases whose chunks the budget sizes."""
    from ibp_gnn.datasets import PAPERS100M

    N, E = PAPERS100M["num_nodes"], PAPERS100M["num_edges"]
    fn, fe = N / res["nodes"], E / res["source_edges"]
    rows = {r["phase"].split(" (")[0]: r for r in res["rows"]}
    per_row = ("generate raw", "unpack node_feat", "labels, splits, meta",
               "compress features")
    t = 0.0
    lines = ["", f"Projection for ogbn-papers100M ({N:,} nodes, {E:,} edges) from scale "
             f"{res['scale']:g} (times scale linearly with rows or edges, x{fn:.0f}; memory is "
             "an upper bound):", "",
             "| phase | projected time | projected peak anon |", "|---|---:|---:|"]
    peak_prep = 0.0
    for name, r in rows.items():
        if name.startswith(("train", "sampl")):
            continue
        secs = r["s"] * (fn if name in per_row else fe)
        anon = r["peak_anon"] + PER_NODE.get(name, 16) * (N - res["nodes"]) \
            + (res["budget"] if name in BUDGET_BOUND else 0)
        if name not in ("generate raw", "write edges"):  # making the inputs is not preparation
            peak_prep = max(peak_prep, anon)
            t += secs
        lines.append(f"| {name} | {secs / 60:.0f} min | {anon / 2**30:.1f} GiB |")
    csc_full = res["csc_bytes"] * fe
    ibp_full = res["feature_bytes"] * fn / (res["ratio"] or 1.0)
    train = rows.get(next((k for k in rows if k.startswith("train ") and "batches" in k), ""))
    batch_anon = train["peak_anon"] if train else 2 << 30
    train_need = csc_full + ibp_full + 16 * N + batch_anon
    lines += ["", f"- preparation (without generating the raw files): ~{t / 3600:.1f} h on this "
              f"2-core machine; peak anonymous memory <= {peak_prep / 2**30:.1f} GiB "
              f"(budget {fmt_bytes(res['budget'])}) -> "
              f"{'fits' if peak_prep < 56 * 2**30 else 'does NOT fit'} a 64 GB machine; "
              f"temporary disk ~8 B per directed entry "
              f"({8 * res['csc_entries'] * fe / 2**30:.0f} GiB) during the CSC build",
              f"- training maps the CSC ({csc_full / 2**30:.1f} GiB) and the "
              f"{'.ibp file' if res['ratio'] else 'raw features'} "
              f"({ibp_full / 2**30:.1f} GiB; page cache shared by the ranks of a node), holds "
              f"labels and splits (~{16 * N / 2**30:.1f} GiB) and a batch's working set "
              f"(~{batch_anon / 2**30:.1f} GiB measured): ~{train_need / 2**30:.0f} GiB -> "
              f"{'fits' if train_need < 120 * 2**30 else 'does NOT fit'} a 128 GB machine"]
    if res.get("graph_only"):
        lines.append(f"- sampler start-up to the first batch: {res['startup_s']:.1f} s (CSC "
                     f"mapped in place); sampling {res['sample_s']:.3f} s per batch (1024 "
                     f"seeds, [15, 10, 5], {res['rows_per_batch']:,.0f} nodes)")
    elif "startup_s" in res:
        lines.append(f"- start-up to the first batch: {res['startup_s']:.1f} s here (no COO, "
                     f"no sort, CRCs in the background); per batch (1024 seeds, [15, 10, 5], "
                     f"{res['rows_per_batch']:,.0f} rows): sampling {res['sample_s']:.3f} s, "
                     f"feature gather {res['gather_s']:.3f} s; a SAGE-128 step on 2 CPU cores "
                     f"{res['model_s']:.2f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, nargs="+", default=[0.01])
    p.add_argument("--root", type=Path, default=Path("/tmp") / os.environ.get("USER", "bench")
                   / "prepare-bench")
    p.add_argument("--budget", default=None, help="memory budget (default $IBP_PREP_MEMORY "
                   "or 3 GiB)")
    p.add_argument("--labeled", type=float, default=None,
                   help="labeled fraction (default papers100M's 1.4%%)")
    p.add_argument("--stored-features", dest="deflate_features", action="store_false",
                   help="store node_feat in data.npz (mapped in place: no unpack phase); "
                   "deflating dense floats costs minutes per GB here")
    p.add_argument("--graph-only", action="store_true",
                   help="only the graph phases (edges .npy -> CSC -> sampler) at this scale")
    p.add_argument("--no-compress", dest="compress", action="store_false",
                   help="skip the .ibp phase (graph phases only; training reads raw rows)")
    p.add_argument("--train-batches", type=int, default=100)
    p.add_argument("--model-batches", type=int, default=5,
                   help="of those, how many also run a SAGE step (CPU-bound, slow here)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--verify", default="background",
                   choices=["background", "true", "false", "lazy", "full"],
                   help="store.verify for the training phases")
    p.add_argument("--startup-only", action="store_true",
                   help="only training start-up and batches, on a run kept with --keep")
    p.add_argument("--keep", action="store_true", help="keep the scratch data")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--from-json", type=Path, default=None,
                   help="print the tables of a saved --json run instead of running")
    a = p.parse_args(argv)
    if a.from_json:
        for res in json.loads(a.from_json.read_text()):
            print(table(res))
            print(project(res))
            print()
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    results = []
    for s in a.scale:
        root = a.root / f"scale{s:g}"
        try:
            res = (run_graph_only(s, root, a) if a.graph_only else
                   run_startup(s, root, a) if a.startup_only else run_scale(s, root, a))
        finally:
            if not a.keep and not a.startup_only:
                shutil.rmtree(root, ignore_errors=True)
        results.append(res)
        print(table(res))
        if a.startup_only:
            print(f"- store.verify={a.verify}: start-up to the first batch {res['startup_s']:.1f} s, "
                  f"background check done {res['verified_s']:.1f} s after the start; per batch "
                  f"sampling {res['sample_s']:.3f} s, feature gather {res['gather_s']:.3f} s")
        else:
            print(project(res))
        print()
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
