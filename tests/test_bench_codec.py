"""benchmarks/codec.py --speed-only: the one-thread speed lines and their JSON."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "codec.py"


def test_speed_only_reports_each_measurements_spread(tmp_path):
    # The slowest / fastest of the alternated measurements, per method: a run
    # where another guest's load slowed the decode shows it in ibp's spread.
    out = tmp_path / "speed.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--speed-only", "--quick", "--datasets",
                        "syn_embed", "--clock", "thread", "--encode-repeat", "1", "--json",
                        str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.lstrip().startswith("batch ")
             and "x[idx]" in ln]
    assert len(lines) == 2 and all("slowest / fastest of the 3: ibp " in ln for ln in lines)
    gather = json.loads(out.read_text())["results"][0]["speed"]["gather"]
    assert sorted(gather, key=int) == ["1024", "100000"]
    for g in gather.values():
        assert set(g["spread"]) == {"ibp_t1", "ibp_core_t1", "x_idx_t1"}
        assert all(1.0 <= v < 1e3 for v in g["spread"].values()), g["spread"]
