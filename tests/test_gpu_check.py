"""`make gpu-check` (scripts/gpu_check.sh) and benchmarks/gpu.py: the parts that run
without a GPU. The script's syntax, its step machinery (timeouts, logs, summary,
budget), its no-GPU exit; gpu.py's byte accounting and, with --dry-run, its whole
pipeline (CPU stand-ins) down to the markdown report."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def _gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_script(tmp_path, **env):
    e = dict(os.environ, GPU_CHECK_LOGS=str(tmp_path / "logs"),
             GPU_CHECK_RESULTS=str(tmp_path / "results"))
    e.update(env)
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=e,
                          timeout=120, cwd=tmp_path)


@needs_bash
def test_script_syntax_and_make_target():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "bash scripts/gpu_check.sh" in (ROOT / "Makefile").read_text()
    assert "make gpu-check" in (ROOT / "README.md").read_text()


@needs_bash
def test_step_machinery_logs_failures_and_timeouts(tmp_path):
    r = run_script(tmp_path, GPU_CHECK_SELFTEST="1")
    assert r.returncode == 1, r.stdout + r.stderr  # a step failed
    summary = (tmp_path / "results" / "gpu-check.md").read_text()
    assert "| pass | ok |" in summary
    assert "| fail | FAILED (exit 3) |" in summary
    assert "| hang | TIMED OUT after 1 s |" in summary
    assert "| later | not run: selftest |" in summary
    assert "broken" in summary  # the failing step's log tail
    assert (tmp_path / "logs" / "fail.log").read_text().strip() == "broken"


@needs_bash
def test_spent_budget_skips_steps(tmp_path):
    r = run_script(tmp_path, GPU_CHECK_SELFTEST="1", GPU_CHECK_BUDGET="5")
    assert r.returncode == 1
    summary = (tmp_path / "results" / "gpu-check.md").read_text()
    assert summary.count("skipped (budget of 5 s spent)") == 3


@needs_bash
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_without_gpu_it_says_so_and_skips(tmp_path):
    r = run_script(tmp_path, PYTHON=sys.executable)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gpu-check: no GPU (" in r.stdout and "is_available() is False" in r.stdout
    assert not (tmp_path / "results").exists()  # nothing measured, nothing written
    fake = tmp_path / "python"  # a python without a usable GPU, cheaper than torch's import
    fake.write_text("#!/bin/sh\necho 'no CUDA here' >&2\nexit 1\n")
    fake.chmod(0o755)
    r = run_script(tmp_path, GPU_CHECK_REQUIRE="1", PYTHON=str(fake))
    assert r.returncode == 1 and "no GPU (no CUDA here)" in r.stdout


def test_bus_bytes_count_sectors_of_the_spans():
    gpu = _gpu_module()
    assert gpu.sector_bytes(np.array([0, 31, 32]), np.array([1, 33, 64])) == 32 + 64 + 32
    x = gpu.make_matrix("bow-fp32-500", 300)
    assert x.shape == (300, 500) and int(x.sum(1).max()) <= 20
    ct = ibp_gnn.compress(x)
    idx = np.array([0, 7, 7, 299])
    b = gpu.bus_bytes(ct, idx, 2000)
    # raw row r spans bytes [2000 r, 2000 (r + 1)): 63 or 64 sectors.
    want = sum(32 * ((2000 * (r + 1) + 31) // 32 - 2000 * r // 32) for r in idx)
    assert b["raw UVA gather"] == want
    assert b["raw pinned index_select+copy"] == 4 * 2000
    assert 0 < b["ibp zero-copy"] <= ct.fetch_nbytes(idx) + 64 * len(idx)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_gpu_benchmark_without_gpu_reports_it(capsys):
    assert _gpu_module().main(["--no-epoch"]) == 0
    assert "no GPU" in capsys.readouterr().out


def test_gpu_benchmark_dry_run_writes_the_report(tmp_path):
    pytest.importorskip("hydra")
    out, js = tmp_path / "gpu.md", tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run",
                        "--repeat", "1", "--layouts", "dense-fp32-128,bow-fp32-500",
                        "--data-dir", str(tmp_path / "data"), "--out", str(out),
                        "--json", str(js)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert r.returncode == 0, r.stdout + r.stderr
    md = out.read_text()
    assert md.startswith("# GPU benchmark (DRY RUN")
    for method in ("ibp zero-copy", "raw UVA gather", "raw pinned index_select+copy",
                   "raw in GPU memory"):
        assert md.count(f"| {method} |") == 2
    assert "binary bag-of-words" in md and "dense fp32" in md
    assert "batch losses identical raw vs ibp: True" in md
    data = json.loads(js.read_text())
    stores = data["epoch"]["stores"]
    assert stores["raw"]["batches"] == stores["ibp"]["batches"] > 0
    assert f"| ibp | {stores['ibp']['batches']} |" in md
    bow = data["gathers"][1]
    by = {m["method"]: m for m in bow["methods"]}
    # Bag-of-words rows compress well: far fewer bus bytes than the raw rows.
    assert by["ibp zero-copy"]["bus_bytes"] * 5 < by["raw UVA gather"]["bus_bytes"]
    assert all(m["gbps"] > 0 for m in bow["methods"])
    assert data["epoch"]["stores"]["ibp"]["store_ratio"] > 1
