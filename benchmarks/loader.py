#!/usr/bin/env python
"""Loader benchmark: GraphSAGE training epochs fed by PyG's NeighborLoader over
the raw store and over the IBP store, side by side in one run, with and without
the Prefetcher.

    python benchmarks/loader.py                  # cora, citeseer, synthetic (~2 min on 2 cores)
    python benchmarks/loader.py --quick          # smoke run
    python benchmarks/loader.py --json out.json

Every configuration trains the same model on the same batches
(ibp_gnn.sampler.NeighborSampler, fan-out --fanouts, --batch-size seeds):

  raw        IBPFeatureStore(compress="never"): rows gathered uncompressed
             (CPU: x[ids]; GPU: from pinned host memory, x[ids] on the CPU then
             an asynchronous copy -- torch has no zero-copy row gather).
  ibp        IBPFeatureStore(compress="always"): rows decoded from the compressed
             tensor (CPU threads; GPU: the CUDA kernel reading only the requested
             compressed rows from pinned host memory).
  +prefetch  ibp_gnn.prefetch.Prefetcher(loader, device, depth=2): sampling and
             the gather of batch i+1 run in a background thread during batch i.

Reported per configuration, from the fastest of --repeat epochs after a warm-up
epoch (the configurations' epochs interleaved, round robin, so that a shared
machine's changing load affects them alike): epoch time, time the training loop waited for a batch (without prefetch:
all of sampling + feature gather; with it: the part not hidden), and the bytes
the feature gathers read from host memory. On a machine with a CUDA GPU the
same table is repeated with device=cuda (model on the GPU).

Datasets: cora and citeseer from ../shared/datasets (skipped when absent) and a
synthetic graph (--nodes, --edges, --features; sparse binary features like a
bag of words, --density of ones), built from a fixed seed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ibp_gnn.prefetch import Prefetcher  # noqa: E402
from ibp_gnn.pyg import from_data  # noqa: E402
from ibp_gnn.sampler import NeighborSampler  # noqa: E402


def load_dataset(name: str, args):
    from torch_geometric.data import Data

    if name == "synthetic":
        g = torch.Generator().manual_seed(0)
        n = args.nodes
        x = (torch.rand(n, args.features, generator=g) < args.density).float()
        data = Data(x=x, y=torch.randint(0, 16, (n,), generator=g),
                    edge_index=torch.randint(0, n, (2, args.edges), generator=g), num_nodes=n)
        train = torch.randperm(n, generator=g)[:min(n, args.train_nodes)]
        return data, train
    from ibp_gnn.testing import shared_dir

    root = shared_dir()
    if root is None or not (root / name / f"ind.{name}.graph").is_file():
        return None, None
    from torch_geometric.io import read_planetoid_data

    data = read_planetoid_data(str(root / name), name)
    return data, torch.arange(data.num_nodes)  # every node a seed: a longer epoch


def make_model(data, device):
    from torch_geometric.nn.models import GraphSAGE

    torch.manual_seed(0)
    return GraphSAGE(data.num_features, 128, num_layers=2, out_channels=int(data.y.max()) + 1,
                     dropout=0.5).to(device)


def run_epoch(batches, model, opt, device, prefetched: bool):
    """(epoch seconds, seconds waiting for batches, batches)."""
    wait, n = 0.0, 0
    start = time.perf_counter()
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        if not prefetched:
            batch = batch.to(device, non_blocking=True)
        wait += time.perf_counter() - t
        opt.zero_grad()
        out = model(batch.x, batch.edge_index)[:batch.batch_size]
        loss = torch.nn.functional.cross_entropy(out, batch.y[:batch.batch_size])
        loss.backward()
        opt.step()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, wait, n


class Config:
    """One column of the table: a store, with or without the Prefetcher, its
    own loader and model (same initial weights and batches as the others)."""

    def __init__(self, data, train, device, store: str, prefetch: bool, args):
        from torch_geometric.loader import NeighborLoader

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.fs, gs = from_data(data, device=device,
                                    compress="always" if store == "ibp" else "never")
        fanouts = [int(f) for f in args.fanouts.split(",")]
        loader = NeighborLoader((self.fs, gs), fanouts, input_nodes=train,
                                batch_size=args.batch_size, shuffle=True, filter_per_worker=False,
                                generator=torch.Generator().manual_seed(0),
                                neighbor_sampler=NeighborSampler((self.fs, gs), fanouts, seed=0))
        self.batches = Prefetcher(loader, device, depth=2) if prefetch else loader
        self.model = make_model(data, device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.01)
        self.device, self.store, self.prefetch = device, store, prefetch
        self.best = None

    def epoch(self, keep: bool) -> None:
        self.fs.reset_counters()
        epoch_s, wait_s, n = run_epoch(self.batches, self.model, self.opt, self.device,
                                       self.prefetch)
        if self.prefetch:
            wait_s = self.batches.last.wait_s
        row = {"epoch_s": epoch_s, "wait_s": wait_s, "batches": n,
               "bytes_read": self.fs.bytes_read, "raw_bytes_read": self.fs.raw_bytes_read}
        if keep and (self.best is None or epoch_s < self.best["epoch_s"]):
            self.best = row

    def result(self) -> dict:
        x = self.fs.describe()["x"]
        return dict(self.best, store=self.store, prefetch=self.prefetch, device=str(self.device),
                    host_nbytes=x["nbytes"], raw_nbytes=x["raw_nbytes"])


def bench(data, train, device, args) -> list:
    """Results of the four configurations, their epochs interleaved (round robin)
    so that a machine whose load drifts affects them alike."""
    configs = [Config(data, train, device, store, prefetch, args)
               for store in ("raw", "ibp") for prefetch in (False, True)]
    for rep in range(args.repeat + 1):  # the first round warms up
        for c in configs:
            c.epoch(keep=rep > 0)
    return [c.result() for c in configs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="cora,citeseer,synthetic")
    p.add_argument("--fanouts", default="10,5", help="neighbours per hop (default 10,5)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3, help="timed epochs (best kept)")
    p.add_argument("--nodes", type=int, default=100_000, help="synthetic graph: nodes")
    p.add_argument("--edges", type=int, default=1_000_000, help="synthetic graph: edges")
    p.add_argument("--features", type=int, default=512, help="synthetic graph: columns")
    p.add_argument("--density", type=float, default=0.02, help="synthetic graph: share of ones")
    p.add_argument("--train-nodes", type=int, default=16384, help="synthetic graph: seeds")
    p.add_argument("--cpu-only", action="store_true", help="skip the GPU table")
    p.add_argument("--quick", action="store_true", help="fast smoke run")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()
    if args.quick:
        args.repeat, args.nodes, args.edges, args.train_nodes = 1, 20_000, 200_000, 2048
        args.features = 256
    torch.manual_seed(0)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda", torch.cuda.current_device()))
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}"
          + (f", GPU {torch.cuda.get_device_name()}" if len(devices) > 1 else ", no GPU"))
    print(f"# fan-out {args.fanouts}, batch size {args.batch_size}, best of {args.repeat} epochs")
    results = []
    header = (f"{'dataset':<10} {'device':<7} {'store':<14} {'epoch s':>8} {'wait s':>8} "
              f"{'wait %':>7} {'MiB read':>9} {'fetch x':>8} {'host MiB':>9}")
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        data, train = load_dataset(name, args)
        if data is None:
            print(f"# {name}: ../shared/datasets/{name} is not present, skipped")
            continue
        print(f"\n## {name}: {data.num_nodes} nodes, {data.num_edges} edges, "
              f"{data.num_features} features, {train.numel()} seeds")
        print(header)
        for device in devices:
            for r in bench(data, train, device, args):
                r["dataset"] = name
                results.append(r)
                label = r["store"] + ("+prefetch" if r["prefetch"] else "")
                fetch = r["raw_bytes_read"] / max(1, r["bytes_read"])
                print(f"{name:<10} {device.type:<7} {label:<14} {r['epoch_s']:>8.3f} "
                      f"{r['wait_s']:>8.3f} {100 * r['wait_s'] / r['epoch_s']:>6.1f}% "
                      f"{r['bytes_read'] / 2**20:>9.2f} {fetch:>8.1f} "
                      f"{r['host_nbytes'] / 2**20:>9.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "torch": torch.__version__, "results": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()
