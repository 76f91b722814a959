"""``train(cfg)``: node classification with sampled mini-batches whose features
come from a feature store (IBP-compressed or raw), driven by a Hydra config
(``conf/train.yaml``; ``python train.py`` is the command-line entry).

Per epoch it logs the loss, train/val accuracy, the epoch time, the time the
loop waited for features, the bytes read from host memory and the store's
ratio; the best-val model is checkpointed and gives the final test accuracy.
Under torchrun each process trains on its share of the training nodes with
DistributedDataParallel (gloo on CPU, nccl on GPU), and every process of a
node memory-maps the same cached feature file: the OS page cache holds the one
shared copy.

Features reach the model through ``store.gather(batch.n_id)``: the loader
samples the graph only (its ``Data`` has no ``x``), so IBP and raw runs see
bit-identical features and, with a fixed seed, give identical losses.
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("ibp_gnn.train")

SAMPLERS = ("ibp", "pyg")
AMP_MODES = ("bf16", "fp16")
BACKENDS = ("auto", "gloo", "nccl")
CODEC_MODES = ("auto", "paper")


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the key and the allowed values."""


# ---- config specs (the `_target_`s of conf/loader and conf/trainer) -----------------------------
@dataclass
class LoaderSpec:
    fanouts: List[int] = field(default_factory=lambda: [10, 5])
    batch_size: int = 512
    eval_fanouts: Optional[List[int]] = None
    eval_batch_size: int = 2048
    num_workers: int = 0
    prefetch: int = 1
    sampler: str = "ibp"
    shuffle: bool = True


@dataclass
class TrainerSpec:
    epochs: int = 5
    eval_every: int = 1
    device: str = "cpu"
    amp: Any = False
    seed: int = 0
    ckpt_dir: Optional[str] = None
    devices: int = 1
    backend: str = "auto"
    progress: bool = True
    limit_train_batches: Optional[int] = None
    limit_eval_batches: Optional[int] = None


# ---- loggers (conf/logger) ----------------------------------------------------------------------
class CSVLogger:
    """One row per epoch in ``<save_dir>/<filename>``."""

    def __init__(self, save_dir: str, filename: str = "metrics.csv"):
        self.path = Path(save_dir) / filename
        self.rows: List[dict] = []

    def log(self, metrics: Dict[str, Any], step: int) -> None:
        self.rows.append({"epoch": step, **metrics})
        keys: List[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        from .datasets._cache import _publish, _tmp

        tmp = _tmp(self.path)
        with open(tmp, "w") as f:
            f.write(",".join(keys) + "\n")
            for r in self.rows:
                f.write(",".join("" if r.get(k) is None else str(r.get(k)) for k in keys) + "\n")
        _publish(tmp, self.path)

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars per epoch for TensorBoard (``tensorboard --logdir <save_dir>``)."""

    def __init__(self, save_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # pragma: no cover
            raise ConfigError("logger.tensorboard needs the tensorboard package "
                              "(pip install tensorboard) or choose logger=csv") from e
        self.writer = SummaryWriter(log_dir=save_dir)

    def log(self, metrics: Dict[str, Any], step: int) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# ---- validation ---------------------------------------------------------------------------------
def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_device(key: str, value: Any) -> None:
    ok = isinstance(value, str) and (value in ("cpu", "cuda", "auto")
                                     or (value.startswith("cuda:") and value[5:].isdigit()))
    if not ok:
        _fail(key, value, "allowed values: 'cpu', 'cuda', 'cuda:N', 'auto'")


def _check_fanouts(key: str, value: Any) -> List[int]:
    vals = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if not vals or not all(_is_int(f) and (f > 0 or f == -1) for f in vals):
        _fail(key, value, "a non-empty list of ints, one per hop: > 0, or -1 for all neighbours")
    return vals


def validate(cfg) -> None:
    """Checks the values train() relies on, before anything is loaded."""
    from omegaconf import OmegaConf

    for group in ("dataset", "model", "store", "loader", "optim", "trainer", "paths"):
        if group not in cfg or cfg[group] is None:
            raise ConfigError(f"config group {group!r} is missing; compose conf/train.yaml")
    for group in ("dataset", "model", "store", "optim"):
        if "_target_" not in cfg[group]:
            raise ConfigError(f"{group}._target_ is missing: pick one of conf/{group}/*.yaml")
    c = OmegaConf.to_container(cfg, resolve=True)
    ld, tr, st, md, op = c["loader"], c["trainer"], c["store"], c["model"], c["optim"]

    fanouts = _check_fanouts("loader.fanouts", ld.get("fanouts"))
    if ld.get("eval_fanouts") is not None:
        ef = _check_fanouts("loader.eval_fanouts", ld["eval_fanouts"])
        if len(ef) != len(fanouts):
            _fail("loader.eval_fanouts", ef, f"one entry per hop, like loader.fanouts={fanouts}")
    for key in ("batch_size", "eval_batch_size"):
        if not _is_int(ld.get(key)) or ld[key] < 1:
            _fail(f"loader.{key}", ld.get(key), "a positive int")
    for key in ("num_workers", "prefetch"):
        if not _is_int(ld.get(key)) or ld[key] < 0:
            _fail(f"loader.{key}", ld.get(key), "an int >= 0")
    if ld.get("sampler") not in SAMPLERS:
        _fail("loader.sampler", ld.get("sampler"), f"allowed values: {list(SAMPLERS)}")
    if ld["sampler"] == "pyg" and not _have_pyg_sampler():
        _fail("loader.sampler", "pyg", "PyG's own sampler needs pyg-lib or torch-sparse, and "
              "neither is installed; use loader.sampler=ibp")

    if not _is_int(tr.get("epochs")) or tr["epochs"] < 1:
        _fail("trainer.epochs", tr.get("epochs"), "a positive int")
    if not _is_int(tr.get("eval_every")) or tr["eval_every"] < 1:
        _fail("trainer.eval_every", tr.get("eval_every"), "a positive int")
    _check_device("trainer.device", tr.get("device"))
    if tr.get("amp") not in (False, None) and tr.get("amp") not in AMP_MODES:
        _fail("trainer.amp", tr.get("amp"), f"allowed values: false, {list(AMP_MODES)}")
    if not _is_int(tr.get("devices")) or tr["devices"] < 1:
        _fail("trainer.devices", tr.get("devices"), "a positive int (processes per node)")
    if tr.get("backend") not in BACKENDS:
        _fail("trainer.backend", tr.get("backend"), f"allowed values: {list(BACKENDS)}")
    if not _is_int(tr.get("seed")):
        _fail("trainer.seed", tr.get("seed"), "an int")
    for key in ("limit_train_batches", "limit_eval_batches"):
        if tr.get(key) is not None and (not _is_int(tr[key]) or tr[key] < 1):
            _fail(f"trainer.{key}", tr[key], "null or a positive int")

    if "mode" in st and st["mode"] not in CODEC_MODES:
        _fail("store.mode", st["mode"], f"allowed values: {list(CODEC_MODES)}")
    _check_device("store.device", st.get("device", "cpu"))
    if st.get("cache") is not None or st.get("transfer", "zero_copy") != "zero_copy":
        from .cache import config_errors

        for key, value, allowed in config_errors(st):
            _fail(f"store.{key}", value, allowed)
    dev = _resolve_device(tr["device"])
    sdev = _resolve_device(st.get("device", "cpu"))
    if sdev.type != dev.type:
        _fail("store.device", st.get("device"),
              f"must be on the training device (trainer.device={tr['device']!r})")

    if md.get("layers") is not None and (not _is_int(md["layers"]) or md["layers"] < 1):
        _fail("model.layers", md.get("layers"),
              "null (one per hop of loader.fanouts) or a positive int")
    if md.get("layers") is not None and md["layers"] != len(fanouts):
        raise ConfigError(f"model.layers={md['layers']} must equal the number of hops in "
                          f"loader.fanouts={fanouts} ({len(fanouts)}); set both")
    if not _is_int(md.get("hidden")) or md["hidden"] < 1:
        _fail("model.hidden", md.get("hidden"), "a positive int")
    for key in ("dropout", "attn_dropout", "input_dropout"):
        v = md.get(key, 0.0)
        if not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            _fail(f"model.{key}", v, "a float in [0, 1)")
    if "heads" in md:
        if not _is_int(md["heads"]) or md["heads"] < 1:
            _fail("model.heads", md["heads"], "a positive int")
        if md["hidden"] % md["heads"]:
            raise ConfigError(f"model.hidden={md['hidden']} must be divisible by "
                              f"model.heads={md['heads']}")
    if "norm" in md and md["norm"] not in (None, "none", "batch", "layer"):
        _fail("model.norm", md["norm"], "allowed values: null, 'batch', 'layer'")
    if "aggr" in md and md["aggr"] not in ("mean", "max", "sum", "add", "min"):
        _fail("model.aggr", md["aggr"], "allowed values: 'mean', 'max', 'sum', 'min'")

    lr = op.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        _fail("optim.lr", lr, "a positive float")

    ds = c["dataset"]
    if "feature_kind" in ds:
        from .data import FEATURE_KINDS

        if ds["feature_kind"] not in FEATURE_KINDS:
            _fail("dataset.feature_kind", ds["feature_kind"],
                  f"allowed values: {list(FEATURE_KINDS)}")
    if "size" in ds:
        from .data import IGB_NODES

        if ds["size"] not in IGB_NODES:
            _fail("dataset.size", ds["size"], f"allowed values: {list(IGB_NODES)}")
    if ds.get("memory_budget") is not None:
        from .datasets import DatasetError, memory_budget

        try:
            memory_budget(ds["memory_budget"])
        except DatasetError as e:
            raise ConfigError(str(e)) from None
    if "scale" in ds and (not isinstance(ds["scale"], (int, float)) or isinstance(ds["scale"], bool)
                          or not 0 < ds["scale"] <= 4):
        _fail("dataset.scale", ds["scale"], "a fraction of papers100M's size in (0, 4]")
    if "path" in ds and ds["path"] in (None, "", "???"):
        _fail("dataset.path", ds["path"], "the path of your dataset (dataset.path=/data/mine)")
    for name, lg in (c.get("logger") or {}).items():
        if not isinstance(lg, dict) or "_target_" not in lg:
            raise ConfigError(f"logger.{name} must be a config with a _target_ "
                              "(pick one of conf/logger/*.yaml)")


def _have_pyg_sampler() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("pyg_lib", "torch_sparse"))


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---- distributed --------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(tr) -> _Dist:
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1 \
            and tr.devices > 1:
        # A SLURM job with several tasks (hydra/launcher=slurm tasks_per_node > 1).
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _resolve_device(tr.device)
    if world == 1:
        if tr.devices > 1:
            raise ConfigError(f"trainer.devices={tr.devices} needs one process per device: launch "
                              f"with `torchrun --nproc_per_node={tr.devices} train.py ... "
                              f"trainer.devices={tr.devices}`")
        return _Dist(device=device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if tr.devices != local_world:
        raise ConfigError(f"trainer.devices={tr.devices} but {local_world} processes run on this "
                          f"node (torchrun --nproc_per_node); make them equal")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = tr.backend if tr.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return _Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def _all_sum(values: List[float], d: _Dist) -> List[float]:
    if not d.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


# ---- batches with features ----------------------------------------------------------------------
@dataclass
class _Stats:
    sample_s: float = 0.0
    wait_s: float = 0.0
    host_bytes: int = 0
    rows: int = 0


def _batches(loader, store, depth: int, stats: _Stats, limit: Optional[int]) -> Iterator:
    """(batch, x) for each batch of `loader`, x = store.gather(batch.n_id).
    depth 0: sample and gather in the loop; the gather time is feature wait.
    depth > 0: an ibp_gnn.Prefetcher thread samples and gathers up to `depth`
    batches ahead; the time the loop blocks for the next batch is the wait."""
    it = iter(loader)  # created here so the shuffle order does not depend on threads
    n = len(loader) if limit is None else min(limit, len(loader))
    if depth == 0:
        for _ in range(n):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            x = store.gather(batch.n_id)
            stats.wait_s += time.perf_counter() - t1
            stats.sample_s += t1 - t0
            stats.host_bytes += store.fetch_nbytes(batch.n_id)
            stats.rows += batch.n_id.numel()
            yield batch, x
        return

    from .prefetch import Prefetcher

    class _First:  # the first n batches of the loader, iterated once
        def __iter__(self):
            return itertools.islice(it, n)

        def __len__(self):
            return n

    def fetch(batch):
        return batch, store.gather(batch.n_id), store.fetch_nbytes(batch.n_id)

    # Sampling and the gather run in the prefetcher's thread; `threads=None`
    # leaves the decoder its usual thread count.
    prefetcher = Prefetcher(_First(), None, depth, transform=fetch, stores=[], threads=None)
    batches = iter(prefetcher)
    try:
        for batch, x, nbytes in batches:
            stats.host_bytes += nbytes
            stats.rows += batch.n_id.numel()
            yield batch, x
    finally:
        batches.close()
        stats.wait_s += prefetcher.last.wait_s


# ---- loaders ------------------------------------------------------------------------------------
class _Loaders:
    def __init__(self, data, spec: LoaderSpec, seed: int):
        self.data, self.spec, self.seed = data, spec, seed
        self._samplers: Dict[tuple, Any] = {}

    def _sampler(self, fanouts: List[int]):
        key = tuple(fanouts)
        if key not in self._samplers:
            from .sampler import NeighborSampler

            # A fixed seed makes the samples reproducible; worker processes
            # instead draw from the per-worker torch generator.
            seed = self.seed if self.spec.num_workers == 0 else None
            self._samplers[key] = NeighborSampler(self.data, num_neighbors=list(fanouts), seed=seed)
        return self._samplers[key]

    def make(self, nodes: torch.Tensor, *, train: bool, seed_offset: int = 0):
        from torch_geometric.loader import NeighborLoader

        spec = self.spec
        fanouts = list(spec.fanouts if train or spec.eval_fanouts is None else spec.eval_fanouts)
        kwargs = dict(num_neighbors=fanouts, input_nodes=nodes,
                      batch_size=spec.batch_size if train else spec.eval_batch_size,
                      shuffle=bool(spec.shuffle and train), num_workers=spec.num_workers,
                      persistent_workers=spec.num_workers > 0,
                      generator=torch.Generator().manual_seed(self.seed + seed_offset))
        if spec.sampler == "ibp":
            return NeighborLoader(self.data, neighbor_sampler=self._sampler(fanouts), **kwargs)
        return NeighborLoader(self.data, **kwargs)  # PyG's sampler (pyg-lib / torch-sparse)


# ---- the loop -----------------------------------------------------------------------------------
def _autocast(device: torch.device, amp):
    if amp in (False, None):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _step_inputs(batch, x, device):
    x = x.to(device, non_blocking=True)
    if not torch.is_floating_point(x) or x.dtype == torch.float64:
        x = x.float()
    return (x, batch.edge_index.to(device, non_blocking=True),
            list(batch.num_sampled_nodes), list(batch.num_sampled_edges))


@torch.no_grad()
def _evaluate(model, loader, store, d: _Dist, amp, limit, progress: bool, desc: str):
    from ._progress import progress_bar

    model.eval()
    correct = total = 0
    stats = _Stats()
    bar = progress_bar(total=len(loader) if limit is None else min(limit, len(loader)),
                       desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for batch, x in _batches(loader, store, 0, stats, limit):
        with _autocast(d.device, amp):
            out = model(*_step_inputs(batch, x, d.device))[: batch.batch_size]
        y = batch.y[: batch.batch_size].to(d.device)
        correct += int((out.argmax(-1) == y).sum())
        total += int(y.numel())
        bar.update(1)
    bar.close()
    correct, total = _all_sum([correct, total], d)
    return correct / max(1.0, total)


def _shard(ids: torch.Tensor, d: _Dist, equal: bool) -> torch.Tensor:
    if not d.enabled:
        return ids
    part = ids[d.rank::d.world]
    if equal:  # every rank must run the same number of steps for DDP
        part = part[: len(ids) // d.world]
    return part


def _output_dir(cfg) -> Path:
    out = Path(str(cfg.paths.output_dir))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _overrides() -> List[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def train(cfg) -> Dict[str, Any]:
    """Trains and tests one configuration; returns its metrics (also written to
    ``<paths.output_dir>/metrics.json``)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from ._progress import progress_bar

    from .datasets._cache import _publish, _tmp

    validate(cfg)
    loader_spec: LoaderSpec = instantiate(cfg.loader, _convert_="all")
    tr: TrainerSpec = instantiate(cfg.trainer, _convert_="all")
    d = _setup_distributed(tr)
    progress = bool(tr.progress and d.main)
    try:
        torch.manual_seed(tr.seed)
        np.random.seed(tr.seed)
        out_dir = _output_dir(cfg) if d.main else Path(str(cfg.paths.output_dir))

        t_prep = time.perf_counter()
        dataset = instantiate(cfg.dataset)
        graph = dataset.prepare(progress=progress)
        store = instantiate(cfg.store)(graph, progress=progress)
        prep_s = time.perf_counter() - t_prep
        if tuple(store.shape) != (graph.num_nodes, graph.num_features):
            raise RuntimeError(f"store shape {tuple(store.shape)} does not match the dataset "
                               f"({graph.num_nodes}, {graph.num_features})")
        if d.main:
            log.info("dataset %s: %d nodes, %d edges, %d features, %d classes; store %s",
                     graph.name, graph.num_nodes, graph.num_edges, graph.num_features,
                     graph.num_classes, store)

        # The loaders sample the cached CSC in place (memory-mapped, no COO copy, no
        # sort, no edge permutation); labels come from a small feature store.
        data = graph.to_remote()
        labeled = graph.y >= 0
        split = {s: ids[labeled[ids]] for s, ids in graph.split.items()}
        loaders = _Loaders(data, loader_spec, tr.seed + 7919 * d.rank)
        train_loader = loaders.make(_shard(split["train"], d, equal=True), train=True)
        val_loader = loaders.make(_shard(split["val"], d, equal=False), train=False)
        test_loader = loaders.make(_shard(split["test"], d, equal=False), train=False)
        if cfg.get("sample_only"):  # +sample_only=true: bus bytes per epoch, no model
            from .cache import sample_only

            return sample_only(store, train_loader, epochs=tr.epochs,
                               limit=tr.limit_train_batches)

        torch.manual_seed(tr.seed)
        layers = cfg.model.get("layers") or len(loader_spec.fanouts)
        model = instantiate(cfg.model)(in_channels=graph.num_features,
                                       out_channels=graph.num_classes, layers=layers).to(d.device)
        net = model
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        optimizer = instantiate(cfg.optim)(params=model.parameters())
        scaler = torch.amp.GradScaler(d.device.type,
                                      enabled=tr.amp == "fp16" and d.device.type == "cuda")
        loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()] if d.main else []
        ckpt_dir = Path(str(tr.ckpt_dir)) if tr.ckpt_dir else out_dir / "checkpoints"

        epochs: List[dict] = []
        batch_losses: List[float] = []
        best_val, best_epoch, best_state = -1.0, 0, None
        for epoch in range(1, tr.epochs + 1):
            net.train()
            stats = _Stats()
            getattr(store, "cache_stats", dict)()  # cache counters from this epoch's start
            loss_sum = correct = seen = 0.0
            steps = 0
            t0 = time.perf_counter()
            limit = tr.limit_train_batches
            bar = progress_bar(total=len(train_loader) if limit is None
                               else min(limit, len(train_loader)),
                               desc=f"epoch {epoch}/{tr.epochs}", leave=False,
                               disable=not progress, dynamic_ncols=True)
            for batch, x in _batches(train_loader, store, loader_spec.prefetch, stats, limit):
                bs = batch.batch_size
                with _autocast(d.device, tr.amp):
                    out = net(*_step_inputs(batch, x, d.device))[:bs]
                    y = batch.y[:bs].to(d.device)
                    loss = F.cross_entropy(out.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                lv = float(loss.detach())
                batch_losses.append(lv)
                loss_sum += lv * bs
                correct += float((out.argmax(-1) == y).sum())
                seen += bs
                steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{lv:.3f}")
            bar.close()
            if epoch == 1 and hasattr(store, "check_verified"):
                store.check_verified(wait=True)  # store.verify=background: CRCs done by now
            epoch_s = time.perf_counter() - t0
            loss_sum, correct, seen, host_bytes, rows = _all_sum(
                [loss_sum, correct, seen, stats.host_bytes, stats.rows], d)
            row_bytes = store.raw_nbytes / max(1, store.shape[0])
            rec = {"epoch": epoch, "loss": loss_sum / max(1.0, seen),
                   "train_acc": correct / max(1.0, seen), "val_acc": None,
                   "epoch_s": epoch_s, "feature_wait_s": stats.wait_s,
                   "sample_s": stats.sample_s if loader_spec.prefetch == 0 else None,
                   "steps": steps, "host_bytes": int(host_bytes),
                   "raw_bytes": int(rows * row_bytes),
                   "store_ratio": store.ratio}
            rec.update(getattr(store, "cache_stats", dict)())  # hit rate, bus bytes
            if epoch % tr.eval_every == 0 or epoch == tr.epochs:
                rec["val_acc"] = _evaluate(model, val_loader, store, d, tr.amp,
                                           tr.limit_eval_batches, progress, "val")
                if rec["val_acc"] > best_val:
                    best_val, best_epoch = rec["val_acc"], epoch
                    best_state = copy.deepcopy(model.state_dict())
                    if d.main:
                        ckpt_dir.mkdir(parents=True, exist_ok=True)
                        tmp = _tmp(ckpt_dir / "best.pt")
                        torch.save({"model": best_state, "epoch": epoch, "val_acc": best_val,
                                    "config": OmegaConf.to_container(cfg, resolve=True)}, tmp)
                        _publish(tmp, ckpt_dir / "best.pt")
            epochs.append(rec)
            if d.main:
                val = "-" if rec["val_acc"] is None else f"{rec['val_acc']:.4f}"
                log.info("epoch %d: loss %.4f train_acc %.4f val_acc %s | %.2fs, feature wait "
                         "%.3fs, host %.1f MB (raw %.1f MB), store ratio %.2f", epoch, rec["loss"],
                         rec["train_acc"], val, epoch_s, stats.wait_s, host_bytes / 1e6,
                         rec["raw_bytes"] / 1e6, store.ratio)
                for lg in loggers:
                    lg.log({k: v for k, v in rec.items() if k != "epoch"}, epoch)

        model.load_state_dict(best_state)
        test_acc = _evaluate(model, test_loader, store, d, tr.amp, tr.limit_eval_batches,
                             progress, "test")
        timed = epochs[1:] if len(epochs) > 1 else epochs  # the first epoch warms caches
        metrics = {
            "status": "ok", "dataset": graph.name, "store": store.kind,
            "model": cfg.model._target_.rsplit(".", 1)[-1], "test_acc": test_acc,
            "best_val_acc": best_val, "best_epoch": best_epoch,
            "final_loss": epochs[-1]["loss"], "final_train_acc": epochs[-1]["train_acc"],
            "epoch_s": float(np.mean([e["epoch_s"] for e in timed])),
            "feature_wait_s": float(np.mean([e["feature_wait_s"] for e in timed])),
            "host_bytes_per_epoch": float(np.mean([e["host_bytes"] for e in timed])),
            "raw_bytes_per_epoch": float(np.mean([e["raw_bytes"] for e in timed])),
            "store_ratio": store.ratio, "store_nbytes": store.nbytes,
            "raw_nbytes": store.raw_nbytes, "prepare_s": prep_s, "world_size": d.world,
            "num_nodes": graph.num_nodes, "num_features": graph.num_features,
            "epochs": epochs, "overrides": _overrides(), "store_info": store.describe(),
        }
        if d.main:
            tmp = _tmp(out_dir / "metrics.json")
            tmp.write_text(json.dumps(metrics, indent=1, default=_json_default))
            _publish(tmp, out_dir / "metrics.json")
            log.info("test_acc %.4f (best val_acc %.4f at epoch %d); metrics in %s", test_acc,
                     best_val, best_epoch, out_dir / "metrics.json")
            for lg in loggers:
                lg.log({"test_acc": test_acc}, tr.epochs)
                lg.close()
        metrics["batch_losses"] = batch_losses
        return metrics
    finally:
        if d.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
