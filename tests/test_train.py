"""train(cfg) end to end: IBP and raw stores give identical losses (synthetic
and Cora), the outputs a run writes, a 2-config multirun, a 2-process gloo DDP
run, and the sweep report."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("hydra")
from hydra import compose, initialize_config_dir  # noqa: E402

from ibp_gnn import report  # noqa: E402
from ibp_gnn.stores import IBPStore, RawStore  # noqa: E402
from ibp_gnn.testing import shared_dir  # noqa: E402
from ibp_gnn.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["dataset.num_nodes=3000", "dataset.num_features=128", "trainer.epochs=1",
         "trainer.progress=false", "model.hidden=32"]

TINY = ["dataset.num_nodes=1500", "dataset.num_features=64", "trainer.progress=false",
        "model.hidden=16", "trainer.limit_eval_batches=1"]


def cfg_of(tmp_path, *overrides, out="out"):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.data_dir={tmp_path / 'data'}",
                                           f"paths.output_dir={tmp_path / out}", *overrides])


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="1")
    env.pop("WORLD_SIZE", None)
    return env


def test_synthetic_ibp_and_raw_give_identical_losses(tmp_path):
    fast = ["loader.batch_size=128", "optim.lr=0.01"]
    ibp = train(cfg_of(tmp_path, *SMALL, *fast, "store=ibp", out="ibp"))
    raw = train(cfg_of(tmp_path, *SMALL, *fast, "store=raw", out="raw"))
    assert len(ibp["batch_losses"]) == 12  # 1500 training nodes
    assert ibp["batch_losses"] == raw["batch_losses"]  # bit-identical features
    assert ibp["test_acc"] == raw["test_acc"] and ibp["best_val_acc"] == raw["best_val_acc"]
    assert ibp["store"] == "ibp" and raw["store"] == "raw"
    assert ibp["store_ratio"] > 4 and raw["store_ratio"] == 1.0
    assert ibp["host_bytes_per_epoch"] < raw["host_bytes_per_epoch"] / 4
    assert raw["host_bytes_per_epoch"] == raw["raw_bytes_per_epoch"]
    assert ibp["test_acc"] > 0.2  # 8 classes: chance is 0.125

    # What a run leaves behind.
    out = tmp_path / "ibp"
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_acc"] == ibp["test_acc"] and len(m["epochs"]) == 1
    for key in ("loss", "train_acc", "val_acc", "epoch_s", "feature_wait_s", "host_bytes",
                "store_ratio"):
        assert key in m["epochs"][0]
    assert (out / "metrics.csv").read_text().startswith("epoch,loss,train_acc,val_acc")
    ckpt = torch.load(out / "checkpoints" / "best.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and "model" in ckpt


def test_prefetch_depth_does_not_change_the_losses(tmp_path):
    base = train(cfg_of(tmp_path, *SMALL, "loader.prefetch=0"))
    deep = train(cfg_of(tmp_path, *SMALL, "loader.prefetch=3"))
    assert base["batch_losses"] == deep["batch_losses"]
    assert base["epochs"][0]["sample_s"] is not None and deep["epochs"][0]["sample_s"] is None


def test_gat_and_dense_features_train(tmp_path):
    m = train(cfg_of(tmp_path, *SMALL, "model=gat", "model.heads=2",
                     "dataset=synthetic-dense", "trainer.epochs=2"))
    assert m["model"] == "GAT" and len(m["epochs"]) == 2 and m["store_ratio"] < 2


def test_cora_ibp_and_raw_give_identical_losses(tmp_path):
    if shared_dir() is None:
        pytest.skip("../shared/datasets is absent (Cora's Planetoid files)")
    common = ["dataset=cora", "trainer.epochs=2", "trainer.progress=false",
              "loader.batch_size=32", "model.hidden=32"]
    ibp = train(cfg_of(tmp_path, *common, "store=ibp", out="ibp"))
    raw = train(cfg_of(tmp_path, *common, "store=raw", out="raw"))
    assert len(ibp["batch_losses"]) == 10  # 140 training nodes, batches of 32, 2 epochs
    assert ibp["batch_losses"] == raw["batch_losses"]
    assert ibp["test_acc"] == raw["test_acc"] > 0.3  # 7 classes
    assert ibp["num_nodes"] == 2708 and ibp["num_features"] == 1433
    assert ibp["store_ratio"] > 10


def test_stores_return_identical_rows(tmp_path):
    x = np.random.default_rng(0).random((50, 7)).astype(np.float32)
    x[x < 0.7] = 0
    ids = torch.tensor([49, 0, 3, 3, 17])
    a, b = IBPStore(x), RawStore(x)
    assert torch.equal(a.gather(ids).view(torch.int32), b.gather(ids).view(torch.int32))
    assert a.fetch_nbytes(ids) < b.fetch_nbytes(ids) == 5 * 7 * 4
    assert a.describe()["store"] == "ibp" and a.ratio > 1


def test_multirun_and_report_best_first(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", "model=sage,gat",
           "dataset.num_nodes=2000", "dataset.num_features=64", "trainer.epochs=1",
           "trainer.progress=false", "model.hidden=16", f"paths.data_dir={tmp_path / 'data'}",
           f"hydra.sweep.dir={sweep}"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = report.load_runs(sweep)
    assert len(runs) == 2 and {m["model"] for m in runs} == {"SAGE", "GAT"}
    for m in runs:
        assert (sweep / m["_run"] / ".hydra" / "config.yaml").is_file()

    r = subprocess.run([sys.executable, "-m", "ibp_gnn.report", str(sweep)], env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith(("| 1 ", "| 2 "))]
    assert len(rows) == 2
    vals = [float(row.split("|")[4]) for row in rows]
    assert vals == sorted(vals, reverse=True)
    assert "model=" in rows[0]


def test_report_orders_runs_best_first(tmp_path, capsys):
    for i, (val, t) in enumerate([(0.5, 2.0), (0.9, 3.0), (0.7, 1.0)]):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(
            {"best_val_acc": val, "test_acc": val - 0.01, "epoch_s": t, "feature_wait_s": 0.1,
             "host_bytes_per_epoch": 1e6, "store_ratio": 3.5,
             "overrides": [f"optim.lr=0.00{i + 1}23456789", "trainer.epochs=3"]}))
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.index("0.9000") < out.index("0.7000") < out.index("0.5000")
    assert "all runs: trainer.epochs=3" in out and "optim.lr=0.002235" in out
    assert report.main([str(tmp_path), "--sort", "epoch_s"]) == 0
    out = capsys.readouterr().out
    assert out.index("| 1.00 |") < out.index("| 2.00 |") < out.index("| 3.00 |")
    assert report.main([str(tmp_path / "0"), "--csv", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().count("\n") == 2


def test_ddp_two_gloo_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this python")
    run_dir = tmp_path / "ddp"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"),
           "trainer.devices=2", "dataset.num_nodes=2000", "dataset.num_features=64",
           "trainer.epochs=2", "trainer.progress=false", "model.hidden=16",
           "loader.batch_size=256", f"paths.data_dir={tmp_path / 'data'}",
           f"hydra.run.dir={run_dir}"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["status"] == "ok" and len(m["epochs"]) == 2
    # Each rank trains on its half of the 1000 training nodes: 2 steps of 256 per epoch.
    assert m["epochs"][0]["steps"] == 2
    # Both ranks mapped the one cached .ibp file (the page cache is the shared copy).
    assert m["store_info"]["path"].endswith(".ibp")


class _Interrupt(Exception):
    pass


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """3 epochs straight vs 2 epochs, killed, resumed from last.pt for the 3rd:
    the same losses, weights, optimizer/scheduler state and test accuracy."""
    from ibp_gnn.training import CSVLogger

    common = [*TINY, "trainer.epochs=3", "scheduler=step",
              "scheduler.step_size=1", "model.dropout=0.3", "loader.batch_size=128",
              "trainer.limit_train_batches=3"]
    straight = train(cfg_of(tmp_path, *common, out="straight"))
    assert [e["lr"] for e in straight["epochs"]] == pytest.approx([0.003, 0.0015, 0.00075])

    log = CSVLogger.log

    def interrupt_after_epoch_2(self, metrics, step):
        log(self, metrics, step)
        if step == 2:
            raise _Interrupt  # after last.pt of epoch 2 is written, as a kill would
    monkeypatch.setattr(CSVLogger, "log", interrupt_after_epoch_2)
    with pytest.raises(_Interrupt):
        train(cfg_of(tmp_path, *common, out="killed"))
    monkeypatch.setattr(CSVLogger, "log", log)
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=True)
    assert ck["epoch"] == 2 and {"optimizer", "scheduler", "rng", "loaders"} <= set(ck)
    resumed = train(cfg_of(tmp_path, *common, f"trainer.ckpt_path={last}", out="resumed"))

    assert resumed["batch_losses"] == straight["batch_losses"]
    assert resumed["test_acc"] == straight["test_acc"]
    assert resumed["best_val_acc"] == straight["best_val_acc"]
    assert resumed["resumed_from"] == str(last) and len(resumed["epochs"]) == 3
    assert straight["stopped_epoch"] is None
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["scheduler"] == b["scheduler"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)

    # Without the random states the third epoch differs: the test above can fail.
    ck["rng"]["torch"] = torch.manual_seed(123).get_state()
    torch.save(ck, tmp_path / "norng.pt")
    other = train(cfg_of(tmp_path, *common, f"trainer.ckpt_path={tmp_path / 'norng.pt'}",
                         out="norng"))
    assert other["batch_losses"][:6] == straight["batch_losses"][:6]
    assert other["batch_losses"][6:] != straight["batch_losses"][6:]

    # Eval-only on best.pt reproduces the run's accuracies; a best.pt cannot be resumed.
    best = tmp_path / "straight" / "checkpoints" / "best.pt"
    ev = train(cfg_of(tmp_path, *common, "trainer.eval_only=true", f"trainer.ckpt_path={best}",
                      out="eval"))
    assert ev["status"] == "eval" and ev["test_acc"] == straight["test_acc"]
    assert ev["val_acc"] == straight["best_val_acc"]
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["test_acc"] == ev["test_acc"]
    from ibp_gnn.train import ConfigError

    with pytest.raises(ConfigError, match="weights only .*last.pt"):
        train(cfg_of(tmp_path, *common, f"trainer.ckpt_path={best}", out="bad"))
    with pytest.raises(ConfigError, match="trainer.ckpt_path=.*another model"):
        train(cfg_of(tmp_path, *common, "model.hidden=8", "trainer.eval_only=true",
                     f"trainer.ckpt_path={best}", out="bad"))


def test_early_stopping_after_patience_evaluations(tmp_path, capsys):
    # lr ~ 0: val_acc never improves after epoch 1, so patience=2 stops at epoch 3 of 10.
    m = train(cfg_of(tmp_path, *TINY, "trainer.epochs=10", "trainer.patience=2",
                     "optim.lr=1e-12", "model.dropout=0.0", "trainer.progress=true",
                     "loader.batch_size=64"))
    assert m["stopped_epoch"] == 3 and len(m["epochs"]) == 3 and m["best_epoch"] == 1
    # Progress bars on a captured (non-TTY) stderr: a start and an end per bar, not a
    # redraw per batch (12 batches per epoch here).
    err = capsys.readouterr().err
    assert m["epochs"][0]["steps"] == 12 and 1 <= err.count("epoch 2/10") <= 2, err


def test_dataset_pt_trains_on_a_saved_pyg_data(tmp_path):
    from torch_geometric.data import Data

    from ibp_gnn.datasets import DatasetError, PyGFile

    g = torch.Generator().manual_seed(0)
    n = 600
    y = torch.randint(0, 3, (n,), generator=g)
    x = (torch.rand(n, 32, generator=g) < 0.1).float()
    x[:, :3] += torch.nn.functional.one_hot(y, 3)  # a learnable signal
    mask = torch.zeros(n, dtype=torch.bool)
    data = Data(x=x, edge_index=torch.randint(0, n, (2, 3000), generator=g), y=y,
                train_mask=mask.clone().index_fill_(0, torch.arange(0, 300), True),
                val_mask=mask.clone().index_fill_(0, torch.arange(300, 400), True),
                test_mask=mask.clone().index_fill_(0, torch.arange(400, 600), True))
    torch.save(data, tmp_path / "mine.pt")
    m = train(cfg_of(tmp_path, "dataset=pyg", f"dataset.path={tmp_path / 'mine.pt'}",
                     "trainer.epochs=2", "trainer.progress=false", "model.hidden=16",
                     "loader.batch_size=100", "optim.lr=0.05"))
    assert m["dataset"] == "mine" and m["num_nodes"] == n and m["num_features"] == 32
    assert len(m["batch_losses"]) == 6 and m["test_acc"] > 0.5  # 3 classes
    graph = PyGFile(tmp_path / "c", tmp_path / "mine.pt").prepare(progress=False)
    assert torch.equal(graph.split["val"], torch.arange(300, 400))
    assert np.array_equal(np.load(graph.features.path), x.numpy())

    torch.save(Data(x=x.double(), edge_index=data.edge_index, y=y), tmp_path / "f64.pt")
    with pytest.raises(DatasetError, match="float64, .*dataset.dtype=float32"):
        PyGFile(tmp_path / "c", tmp_path / "f64.pt").prepare(progress=False)
    torch.save({"x": x, "edge_index": data.edge_index}, tmp_path / "noy.pt")
    with pytest.raises(DatasetError, match="lacks y"):
        PyGFile(tmp_path / "c", tmp_path / "noy.pt").prepare(progress=False)
    with pytest.raises(DatasetError, match="dataset.path=.*does not exist"):
        PyGFile(tmp_path / "c", tmp_path / "nope.pt").prepare(progress=False)


def test_report_mean_and_std_over_seeds(tmp_path, capsys):
    vals = {("sage", 0): 0.80, ("sage", 1): 0.82, ("sage", 2): 0.84, ("gat", 0): 0.70,
            ("gat", 1): 0.74}
    for i, ((model, seed), v) in enumerate(vals.items()):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(
            {"best_val_acc": v, "test_acc": v - 0.1, "epoch_s": 1.0 + seed,
             "overrides": [f"model={model}", f"trainer.seed={seed}", "trainer.epochs=3"]}))
    assert report.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    seeds = out[out.index("mean ± std over trainer.seed"):]
    rows = [r for r in seeds.splitlines() if r.startswith("| 1 ") or r.startswith("| 2 ")]
    assert "model=sage" in rows[0] and "3 (0,1,2)" in rows[0]  # best mean first
    assert "| 0.8200 ± 0.0200 |" in rows[0] and "| 0.7200 ± 0.0283 |" in rows[1]
    assert "| 2.00 ± 1.00 |" in rows[0] and "trainer.seed" not in rows[0].split("|")[2]
    # Runs that do not repeat a configuration over seeds get no second table.
    assert report.seed_table([{"overrides": ["model=sage"]}, {"overrides": ["model=gat"]}]) is None
