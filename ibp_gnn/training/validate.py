"""validate(cfg): every value train() relies on, checked before anything is loaded;
a bad one raises ConfigError naming the key and the allowed values."""
from __future__ import annotations

import os
from typing import Any, List, Sequence

from .distributed import _resolve_device
from .specs import AMP_MODES, BACKENDS, CODEC_MODES, SAMPLERS, ConfigError

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
    if tr.get("patience") is not None and (not _is_int(tr["patience"]) or tr["patience"] < 1):
        _fail("trainer.patience", tr["patience"],
              "null (no early stopping) or a positive int (evaluations without improvement)")
    md_ = tr.get("min_delta", 0.0)
    if not isinstance(md_, (int, float)) or isinstance(md_, bool) or md_ < 0:
        _fail("trainer.min_delta", md_, "a float >= 0")
    if not isinstance(tr.get("eval_only", False), bool):
        _fail("trainer.eval_only", tr.get("eval_only"), "true or false")
    ckpt = tr.get("ckpt_path")
    if ckpt is not None and (not isinstance(ckpt, str) or not os.path.isfile(ckpt)):
        _fail("trainer.ckpt_path", ckpt, "null or an existing checkpoint file "
              "(<run>/checkpoints/last.pt to resume, best.pt or last.pt to evaluate)")
    if tr.get("eval_only") and ckpt is None:
        _fail("trainer.eval_only", True, "needs trainer.ckpt_path=<run>/checkpoints/best.pt")
    sc = c.get("scheduler")
    if sc is not None and (not isinstance(sc, dict) or "_target_" not in sc):
        raise ConfigError("scheduler must be a config with a _target_ "
                          "(pick one of conf/scheduler/*.yaml, or scheduler=null)")

    if "mode" in st and st["mode"] not in CODEC_MODES:
        _fail("store.mode", st["mode"], f"allowed values: {list(CODEC_MODES)}")
    if st.get("layout", "auto") not in ("auto", "sectors", "packed"):
        _fail("store.layout", st.get("layout"), "allowed values: ['auto', 'sectors', 'packed']")
    _check_device("store.device", st.get("device", "cpu"))
    if st.get("cache") is not None or st.get("transfer", "zero_copy") != "zero_copy":
        from ..cache import config_errors

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
        from ..data import FEATURE_KINDS

        if ds["feature_kind"] not in FEATURE_KINDS:
            _fail("dataset.feature_kind", ds["feature_kind"],
                  f"allowed values: {list(FEATURE_KINDS)}")
    if "size" in ds:
        from ..data import IGB_NODES

        if ds["size"] not in IGB_NODES:
            _fail("dataset.size", ds["size"], f"allowed values: {list(IGB_NODES)}")
    if ds.get("memory_budget") is not None:
        from ..datasets import DatasetError, memory_budget

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


