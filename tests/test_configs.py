"""Every config group composes and every option instantiates; bad values fail
at the start of train(cfg) with a message naming the key and the allowed values."""
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("hydra")
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.errors import ConfigCompositionException  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from ibp_gnn.train import ConfigError, LoaderSpec, TrainerSpec, train, validate  # noqa: E402

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ["dataset", "model", "store", "loader", "optim", "scheduler", "trainer", "logger"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def cfg_of(tmp_path, *overrides, hydra_cfg=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", return_hydra_config=hydra_cfg, overrides=[
            f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'out'}",
            *overrides])


def test_every_group_has_options():
    for g in GROUPS:
        assert options(g), f"conf/{g}/ is empty"
    assert "synthetic" in options("dataset") and {"sage", "gat"} <= set(options("model"))
    assert {"ibp", "raw"} <= set(options("store"))
    for name in ("ogbn-arxiv", "ogbn-products", "ogbn-papers100M", "mag240m", "cora", "npz",
                 "local", "igb-tiny", "igb-full"):
        assert name in options("dataset")


@pytest.mark.parametrize("group", GROUPS)
def test_compose_and_instantiate_every_option(group, tmp_path):
    for option in options(group):
        extra = []
        if group == "dataset" and option in ("npz", "local", "pt", "pyg"):
            extra = [f"dataset.path={tmp_path / 'mine'}"]
        cfg = cfg_of(tmp_path, f"{group}={option}", *extra)
        validate(cfg)
        node = cfg[group]
        if group == "dataset":
            ds = instantiate(node)  # no I/O until prepare()
            assert ds.cache_root == Path(cfg.paths.cache_dir)
        elif group == "model":
            model = instantiate(node)(in_channels=8, out_channels=3)
            x = torch.randn(5, 8)
            ei = torch.tensor([[1, 2, 3, 4, 0], [0, 0, 1, 2, 3]])
            assert model(x, ei).shape == (5, 3)
        elif group == "store":
            x = np.random.default_rng(0).random((10, 4)).astype(np.float32)
            store = instantiate(node)(x)
            ids = torch.tensor([3, 0, 9])
            assert torch.equal(store.gather(ids), torch.from_numpy(x[[3, 0, 9]]))
        elif group == "loader":
            assert isinstance(instantiate(node, _convert_="all"), LoaderSpec)
        elif group == "trainer":
            spec = instantiate(node, _convert_="all")
            assert isinstance(spec, TrainerSpec) and spec.epochs >= 1
        elif group == "optim":
            opt = instantiate(node)(params=[torch.nn.Parameter(torch.zeros(2))])
            assert isinstance(opt, torch.optim.Optimizer)
        elif group == "scheduler":
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
            sched = instantiate(node)(optimizer=opt)
            opt.step()
            sched.step(0.5) if option == "plateau" else sched.step()
            assert isinstance(sched.state_dict(), dict)
        elif group == "logger":
            for lg in (node or {}).values():
                logger = instantiate(lg)
                logger.log({"loss": 1.0}, 1)
                logger.close()


def test_sweeper_and_launcher_configs(tmp_path):
    cfg = cfg_of(tmp_path, "hparams_search=optuna", "hydra/launcher=slurm", hydra_cfg=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert {"optim.lr", "model.hidden", "model.dropout"} <= set(sweeper.params)
    assert cfg.optimized_metric == "best_val_acc" and cfg.trainer.progress is False
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    from hydra.core.utils import JobReturn  # noqa: F401  (plugins import beside hydra)

    OmegaConf.resolve(cfg.hydra.sweeper.sampler)
    sampler = instantiate(cfg.hydra.sweeper.sampler)
    assert type(sampler).__name__ == "TPESampler"


def test_default_config_is_the_one_minute_synthetic_run(tmp_path):
    cfg = cfg_of(tmp_path)
    assert cfg.dataset._target_.endswith("Synthetic") and cfg.store._target_.endswith("IBPStore")
    assert cfg.loader.sampler == "ibp" and cfg.trainer.device == "cpu"


@pytest.mark.parametrize("override, words", [
    ("loader.sampler=dgl", ["loader.sampler", "'ibp'", "'pyg'"]),
    ("store.mode=fast", ["store.mode", "'auto'", "'paper'"]),
    ("store.layout=aligned", ["store.layout", "'sectors'", "'packed'"]),
    ("trainer.amp=fp8", ["trainer.amp", "bf16", "fp16"]),
    ("trainer.device=tpu", ["trainer.device", "'cpu'", "'cuda'"]),
    ("loader.fanouts=[10,0]", ["loader.fanouts", "-1"]),
    ("loader.batch_size=0", ["loader.batch_size", "positive"]),
    ("model.layers=3", ["model.layers=3", "loader.fanouts"]),
    ("model.layers=0", ["model.layers", "positive"]),
    ("model.dropout=1.5", ["model.dropout", "[0, 1)"]),
    ("trainer.epochs=0", ["trainer.epochs", "positive"]),
    ("dataset.feature_kind=sparse", ["dataset.feature_kind", "'bow'", "'dense'"]),
    ("optim.lr=-1", ["optim.lr", "positive"]),
    ("trainer.devices=2", ["trainer.devices=2", "torchrun --nproc_per_node=2"]),
])
def test_bad_values_name_the_key(override, words, tmp_path):
    cfg = cfg_of(tmp_path, override, "trainer.progress=false")
    with pytest.raises(ConfigError) as e:
        train(cfg)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path / "data").exists()  # failed before touching any data


def test_pyg_sampler_without_its_libraries_names_the_key(tmp_path):
    from ibp_gnn.train import _have_pyg_sampler

    if _have_pyg_sampler():
        pytest.skip("pyg-lib or torch-sparse is installed: PyG's sampler works here")
    with pytest.raises(ConfigError, match="loader.sampler='pyg' .*pyg-lib or torch-sparse"):
        validate(cfg_of(tmp_path, "loader.sampler=pyg"))


def test_gat_heads_must_divide_hidden(tmp_path):
    cfg = cfg_of(tmp_path, "model=gat", "model.hidden=30", "model.heads=4")
    with pytest.raises(ConfigError, match=r"model.hidden=30 .* model.heads=4"):
        validate(cfg)


def test_store_on_another_device_than_training(tmp_path):
    cfg = cfg_of(tmp_path, "store.device=cuda")
    with pytest.raises(ConfigError, match="store.device"):
        validate(cfg)


def test_unknown_option_and_key_are_hydra_errors(tmp_path):
    with pytest.raises(ConfigCompositionException, match="Available options"):
        cfg_of(tmp_path, "dataset=ogbn-nope")
    with pytest.raises(ConfigCompositionException, match="hiden"):
        cfg_of(tmp_path, "model.hiden=3")


def test_npz_without_a_path_names_the_key(tmp_path):
    cfg = cfg_of(tmp_path, "dataset=npz")
    with pytest.raises(ConfigError, match="dataset.path"):
        validate(cfg)


@pytest.mark.parametrize("group", ["experiment", "debug"])
def test_experiment_and_debug_options_compose_and_validate(group, tmp_path):
    assert options(group)
    for option in options(group):
        cfg = cfg_of(tmp_path, f"{group}={option}")
        validate(cfg)
        if group == "debug":
            assert cfg.trainer.progress is False and cfg.task_name == "debug"
            hy = cfg_of(tmp_path, f"{group}={option}", hydra_cfg=True).hydra
            assert hy.job_logging.root.level == "DEBUG" and "debug" in hy.run.dir
    cfg = cfg_of(tmp_path, "experiment=cora_sage")
    assert cfg.dataset.name == "cora" and cfg.trainer.patience == 10
    assert cfg.scheduler._target_.endswith("CosineAnnealingLR") and cfg.scheduler.T_max == 30
    cfg = cfg_of(tmp_path, "debug=fdr", "trainer.epochs=4")  # the command line wins
    assert cfg.trainer.limit_train_batches == 1 and cfg.trainer.epochs == 4


@pytest.mark.parametrize("override, words", [
    ("trainer.patience=0", ["trainer.patience", "positive"]),
    ("trainer.eval_only=true", ["trainer.eval_only", "trainer.ckpt_path"]),
    ("trainer.ckpt_path=/nonexistent/last.pt", ["trainer.ckpt_path", "existing checkpoint"]),
    ("trainer.min_delta=-1", ["trainer.min_delta", ">= 0"]),
])
def test_bad_trainer_values_name_the_key(override, words, tmp_path):
    with pytest.raises(ConfigError) as e:
        validate(cfg_of(tmp_path, override))
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_a_file_that_is_not_a_checkpoint_names_the_key(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="trainer.ckpt_path=.*bad.pt.* not a checkpoint"):
        train(cfg_of(tmp_path, f"trainer.ckpt_path={bad}", "trainer.progress=false"))
