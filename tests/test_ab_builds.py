"""benchmarks/ab_builds.py: two builds of ibp_gnn._C timed in turn, a worker process each."""
import shutil
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


def test_each_build_is_the_one_timed(tmp_path):
    # The first version loaded both files into one process, where Python hands
    # back the ibp_gnn._C already imported: it timed the installed build twice
    # whatever B was. Each worker now names the file its module came from.
    copy = tmp_path / "copy" / Path(C.__file__).name
    copy.parent.mkdir()
    shutil.copy(C.__file__, copy)
    r = run(C.__file__, str(copy), "--datasets", "syn_embed", "--quick", "--rounds", "1",
            "--batch", "32")
    assert r.returncode == 0, r.stderr
    named = dict(ln.split(" = ", 1) for ln in r.stdout.splitlines() if " = " in ln[:4])
    assert named == {"A": str(Path(C.__file__).resolve()), "B": str(copy.resolve())}


def test_large_table_case_runs_on_mapped_arrays():
    # `large` (codec.py --large's table; --quick: a tenth of it) is saved once and
    # memory-mapped by each worker; its rows are still checked against x[idx].
    r = run(C.__file__, C.__file__, "--datasets", "large", "--quick", "--rounds", "1",
            "--batch", "64")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("large")]
    assert len(lines) == 1 and "batch     64:" in lines[0] and "B/A" in lines[0]
