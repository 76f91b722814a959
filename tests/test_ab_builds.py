"""benchmarks/ab_builds.py: two builds of ibp_gnn._C timed in one process."""
import subprocess
import sys
from pathlib import Path

import ibp_gnn._C as C

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "ab_builds.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600)


def test_same_build_twice_runs_and_checks_rows():
    r = run(C.__file__, C.__file__, "--datasets", "syn_embed", "--quick", "--rounds", "2",
            "--batch", "64", "--batch", "300")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("syn_embed")]
    assert [ln.split()[2].rstrip(":") for ln in lines] == ["64", "300"]
    assert all("B/A" in ln and "index_select" in ln for ln in lines)


def test_bad_arguments_are_named():
    r = run(C.__file__, C.__file__, "--datasets", "no_such_set")
    assert r.returncode == 2 and "no_such_set" in r.stderr
    r = run(C.__file__, C.__file__, "--rounds", "0")
    assert r.returncode == 2 and "--rounds must be >= 1, got 0" in r.stderr
    r = run(C.__file__, str(ROOT / "no_such_build.so"))
    assert r.returncode != 0 and "no_such_build.so" in r.stderr
