"""``train(cfg)``: the epoch loop (with resume, early stopping, an LR scheduler)
and the eval-only mode; writes ``metrics.json``, ``best.pt`` and ``last.pt``."""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .distributed import _all_sum, _setup_distributed, _shard, _teardown
from .loop import _autocast, _batches, _evaluate, _Loaders, _Stats, _step_inputs
from .specs import ConfigError, LoaderSpec, TrainerSpec
from .validate import validate

log = logging.getLogger("ibp_gnn.train")


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
    return str(o)


def _plain(rec: dict) -> dict:
    """The record as JSON types (what a weights_only checkpoint may hold)."""
    return json.loads(json.dumps(rec, default=_json_default))


def _write_metrics(out_dir: Path, metrics: Dict[str, Any]) -> None:
    from ..datasets._cache import _publish, _tmp

    tmp = _tmp(out_dir / "metrics.json")
    tmp.write_text(json.dumps(metrics, indent=1, default=_json_default))
    _publish(tmp, out_dir / "metrics.json")


def _scheduler(cfg, optimizer):
    if cfg.get("scheduler") is None:
        return None
    from hydra.utils import instantiate

    return instantiate(cfg.scheduler)(optimizer=optimizer)


def _is_plateau(scheduler) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def train(cfg) -> Dict[str, Any]:
    """Trains and tests one configuration (or, with ``trainer.eval_only``,
    evaluates a checkpoint); returns its metrics (also written to
    ``<paths.output_dir>/metrics.json``)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from .._progress import progress_bar

    validate(cfg)
    loader_spec: LoaderSpec = instantiate(cfg.loader, _convert_="all")
    tr: TrainerSpec = instantiate(cfg.trainer, _convert_="all")
    ckpt = checkpoint.load(tr.ckpt_path) if tr.ckpt_path else None
    if ckpt is not None and not tr.eval_only and "optimizer" not in ckpt:
        raise ConfigError(f"trainer.ckpt_path={tr.ckpt_path!r} holds weights only (best.pt): "
                          "resume from <run>/checkpoints/last.pt, or evaluate it with "
                          "trainer.eval_only=true")
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
            from .sample_only import sample_only

            return sample_only(store, train_loader, epochs=tr.epochs,
                               limit=tr.limit_train_batches)

        torch.manual_seed(tr.seed)
        layers = cfg.model.get("layers") or len(loader_spec.fanouts)
        model = instantiate(cfg.model)(in_channels=graph.num_features,
                                       out_channels=graph.num_classes, layers=layers).to(d.device)
        base = {"dataset": graph.name, "store": store.kind,
                "model": cfg.model._target_.rsplit(".", 1)[-1],
                "store_ratio": store.ratio, "store_nbytes": store.nbytes,
                "raw_nbytes": store.raw_nbytes, "prepare_s": prep_s, "world_size": d.world,
                "num_nodes": graph.num_nodes, "num_features": graph.num_features,
                "overrides": _overrides(), "store_info": store.describe()}

        def evaluate(loader, desc):
            loaders.rewind_eval()  # the same weights give the same accuracy, whatever ran before
            return _evaluate(model, loader, store, d, tr.amp, tr.limit_eval_batches, progress,
                             desc)

        if tr.eval_only:
            checkpoint.load_weights(model, ckpt, tr.ckpt_path)
            val_acc, test_acc = evaluate(val_loader, "val"), evaluate(test_loader, "test")
            metrics = {"status": "eval", **base, "ckpt_path": tr.ckpt_path,
                       "ckpt_epoch": ckpt.get("epoch"), "val_acc": val_acc,
                       "best_val_acc": val_acc, "test_acc": test_acc}
            if d.main:
                _write_metrics(out_dir, metrics)
                log.info("eval of %s (epoch %s): val_acc %.4f test_acc %.4f; metrics in %s",
                         tr.ckpt_path, ckpt.get("epoch"), val_acc, test_acc,
                         out_dir / "metrics.json")
            return metrics

        net = model
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        optimizer = instantiate(cfg.optim)(params=model.parameters())
        scheduler = _scheduler(cfg, optimizer)
        scaler = torch.amp.GradScaler(d.device.type,
                                      enabled=tr.amp == "fp16" and d.device.type == "cuda")
        loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()] if d.main else []
        ckpt_dir = Path(str(tr.ckpt_dir)) if tr.ckpt_dir else out_dir / "checkpoints"

        epochs: List[dict] = []
        batch_losses: List[float] = []
        best_val, best_epoch, best_state = -1.0, 0, None
        bad_evals, stopped_epoch, start = 0, None, 1
        if ckpt is not None:  # resume: the state at the end of epoch ckpt["epoch"]
            checkpoint.load_weights(model, ckpt, tr.ckpt_path)
            optimizer.load_state_dict(ckpt["optimizer"])
            if scheduler is not None and ckpt.get("scheduler") is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            epochs, batch_losses = list(ckpt["epochs"]), list(ckpt["batch_losses"])
            best_val, best_epoch = ckpt["best_val"], ckpt["best_epoch"]
            best_state = ckpt["best_model"]
            bad_evals, stopped_epoch = ckpt["bad_evals"], ckpt["stopped_epoch"]
            start = ckpt["epoch"] + 1
            if d.enabled:  # each rank's own random streams are not in the file
                torch.manual_seed(tr.seed + 7919 * d.rank + start)
            else:
                loaders.load_state_dict(ckpt["loaders"])
                checkpoint.set_rng_state(ckpt["rng"])
            if d.main:
                log.info("resumed from %s at epoch %d", tr.ckpt_path, start)

        for epoch in range(start, tr.epochs + 1):
            if stopped_epoch is not None:
                break
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
                bar.set_postfix(loss=f"{lv:.3f}", refresh=False)  # redraws follow mininterval
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
            rec["lr"] = optimizer.param_groups[0]["lr"]
            if epoch % tr.eval_every == 0 or epoch == tr.epochs:
                rec["val_acc"] = evaluate(val_loader, "val")
                if rec["val_acc"] > best_val + tr.min_delta or best_state is None:
                    best_val, best_epoch, bad_evals = rec["val_acc"], epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                    if d.main:
                        checkpoint.save({"model": best_state, "epoch": epoch, "val_acc": best_val,
                                         "config": OmegaConf.to_container(cfg, resolve=True)},
                                        ckpt_dir / "best.pt")
                else:
                    bad_evals += 1
                    if tr.patience is not None and bad_evals >= tr.patience:
                        stopped_epoch = epoch
                if scheduler is not None and _is_plateau(scheduler):
                    scheduler.step(rec["val_acc"])
            if scheduler is not None and not _is_plateau(scheduler):
                scheduler.step()
            epochs.append(_plain(rec))
            if d.main:
                checkpoint.save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "epoch": epoch, "best_val": best_val,
                    "best_epoch": best_epoch, "best_model": best_state, "bad_evals": bad_evals,
                    "stopped_epoch": stopped_epoch, "epochs": epochs,
                    "batch_losses": batch_losses, "loaders": loaders.state_dict(),
                    "rng": checkpoint.rng_state(),
                    "config": OmegaConf.to_container(cfg, resolve=True)}, ckpt_dir / "last.pt")
                val = "-" if rec["val_acc"] is None else f"{rec['val_acc']:.4f}"
                log.info("epoch %d: loss %.4f train_acc %.4f val_acc %s | %.2fs, feature wait "
                         "%.3fs, host %.1f MB (raw %.1f MB), store ratio %.2f", epoch, rec["loss"],
                         rec["train_acc"], val, epoch_s, stats.wait_s, host_bytes / 1e6,
                         rec["raw_bytes"] / 1e6, store.ratio)
                if stopped_epoch is not None:
                    log.info("early stop at epoch %d: val_acc did not improve for %d "
                             "evaluations (trainer.patience)", epoch, tr.patience)
                for lg in loggers:
                    lg.log({k: v for k, v in rec.items() if k != "epoch"}, epoch)

        model.load_state_dict(best_state)
        test_acc = evaluate(test_loader, "test")
        timed = epochs[1:] if len(epochs) > 1 else epochs  # the first epoch warms caches
        metrics = {
            "status": "ok", **base, "test_acc": test_acc,
            "best_val_acc": best_val, "best_epoch": best_epoch, "stopped_epoch": stopped_epoch,
            "resumed_from": tr.ckpt_path,
            "final_loss": epochs[-1]["loss"], "final_train_acc": epochs[-1]["train_acc"],
            "epoch_s": float(np.mean([e["epoch_s"] for e in timed])),
            "feature_wait_s": float(np.mean([e["feature_wait_s"] for e in timed])),
            "host_bytes_per_epoch": float(np.mean([e["host_bytes"] for e in timed])),
            "raw_bytes_per_epoch": float(np.mean([e["raw_bytes"] for e in timed])),
            "epochs": epochs,
        }
        if d.main:
            _write_metrics(out_dir, metrics)
            log.info("test_acc %.4f (best val_acc %.4f at epoch %d); metrics in %s", test_acc,
                     best_val, best_epoch, out_dir / "metrics.json")
            for lg in loggers:
                lg.log({"test_acc": test_acc}, len(epochs))
                lg.close()
        metrics["batch_losses"] = batch_losses
        return metrics
    finally:
        _teardown(d)
