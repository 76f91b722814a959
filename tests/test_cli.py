import subprocess
import sys

import numpy as np
import torch

import ibp_gnn
from ibp_gnn.__main__ import main


def test_info_prints_the_description(tmp_path, capsys):
    x = (torch.rand(500, 64, generator=torch.Generator().manual_seed(0)) < 0.05).half()
    path = ibp_gnn.compress(x).save(tmp_path / "f.ibp")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    for words in [f"format version  {ibp_gnn.FORMAT_VERSION}", "500 x 64", "float16", "ratio",
                  "rows sparse"]:
        assert words in out, words


def test_info_on_a_bad_file_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.ibp"
    bad.write_bytes(b"garbage" * 40)
    assert main(["info", str(bad)]) == 2
    assert "magic" in capsys.readouterr().err


def test_compress_command(tmp_path, capsys):
    x = np.arange(3000, dtype=np.int32).reshape(300, 10)
    np.save(tmp_path / "x.npy", x)
    assert main(["compress", str(tmp_path / "x.npy"), str(tmp_path / "x.ibp")]) == 0
    assert torch.equal(ibp_gnn.load(tmp_path / "x.ibp").decompress(), torch.from_numpy(x))


def test_demo_runs_and_checks_itself(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ibp_gnn", "demo", "--save",
                        str(tmp_path / "d.ibp")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" yes") == 2
