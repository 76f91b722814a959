from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
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


def _bits(t):
    return t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32)


def test_compress_npz_pt_and_pyg_data_inputs(tmp_path, capsys):
    from torch_geometric.data import Data

    g = torch.Generator().manual_seed(0)
    a = (torch.rand(200, 16, generator=g) < 0.2).float()
    np.savez(tmp_path / "z.npz", a=a.numpy(), b=np.arange(12, dtype=np.int32).reshape(3, 4))
    assert main(["compress", str(tmp_path / "z.npz"), str(tmp_path / "a.ibp"), "--key", "a"]) == 0
    assert torch.equal(ibp_gnn.load(tmp_path / "a.ibp").decompress(), a)
    torch.save(a.half(), tmp_path / "t.pt")
    assert main(["compress", str(tmp_path / "t.pt"), str(tmp_path / "t.ibp")]) == 0
    assert torch.equal(_bits(ibp_gnn.load(tmp_path / "t.ibp").decompress()), _bits(a.half()))
    torch.save(Data(x=a, edge_index=torch.zeros(2, 1, dtype=torch.long)), tmp_path / "d.pt")
    assert main(["compress", str(tmp_path / "d.pt"), str(tmp_path / "d.ibp")]) == 0  # --key x
    assert torch.equal(ibp_gnn.load(tmp_path / "d.ibp").decompress(), a)
    assert "200 x 16 float32" in capsys.readouterr().out


def test_compress_float64_needs_an_explicit_dtype(tmp_path, capsys):
    x = np.random.default_rng(0).random((50, 6))  # float64, numpy's default
    x[0, 0], x[0, 1] = np.nan, 0.5
    np.save(tmp_path / "x.npy", x)
    assert main(["compress", str(tmp_path / "x.npy"), str(tmp_path / "x.ibp")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dtype" in err and "float64" in err
    assert main(["compress", str(tmp_path / "x.npy"), str(tmp_path / "x.ibp"),
                 "--dtype", "float32"]) == 0
    assert "rounded 298 of 300 values" in capsys.readouterr().err  # NaN and 0.5 are exact
    got = ibp_gnn.load(tmp_path / "x.ibp").decompress()
    want = torch.from_numpy(x.astype(np.float32))
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("make, args, words", [
    ("npz2", ["--key", "c"], ["--key='c'", "['a', 'b']"]),
    ("npz2", [], ["--key:", "choose one"]),
    ("npy", ["--key", "x"], ["--key='x'", ".npy"]),
    ("sparse", [], ["src:", "sparse"]),
    ("missing", [], ["src:", "does not exist"]),
    ("txt", [], ["compress_file: src", "a.txt"]),
    ("pickle", [], ["src=", "weights_only=True"]),
    ("npy", ["--out-dir"], None),
])
def test_compress_errors_are_one_line_naming_the_argument(tmp_path, capsys, make, args, words):
    src = tmp_path / {"npz2": "z.npz", "npy": "x.npy", "sparse": "s.pt", "missing": "m.pt",
                      "txt": "a.txt", "pickle": "p.pt"}[make]
    if make == "npz2":
        np.savez(src, a=np.zeros((2, 2), np.float32), b=np.zeros((2, 2), np.float32))
    elif make == "npy":
        np.save(src, np.zeros((2, 2), np.float32))
    elif make == "sparse":
        torch.save(torch.eye(3).to_sparse(), src)
    elif make == "txt":
        src.write_text("1 2\n")
    elif make == "pickle":
        torch.save({"x": torch.zeros(2, 2), "f": Path}, src)  # a pickled class
    if words is None:  # argparse's own error for an unknown option: usage + one error line
        with pytest.raises(SystemExit):
            main(["compress", str(src), str(tmp_path / "o.ibp"), *args])
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
            "error: unrecognized arguments: --out-dir")
        return
    assert main(["compress", str(src), str(tmp_path / "o.ibp"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "o.ibp").exists()


def test_compress_api_on_a_sparse_tensor_says_so():
    with pytest.raises(TypeError, match="sparse tensor .*to_dense"):
        ibp_gnn.compress(torch.eye(4).to_sparse())
    sp = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="scipy sparse matrix.*toarray"):
        ibp_gnn.compress(sp.csr_matrix(np.eye(4, dtype=np.float32)))


def test_help_shows_the_name_it_was_run_by(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])  # under pytest, sys.argv[0] is not the ibp-gnn script
    assert capsys.readouterr().out.startswith("usage: python -m ibp_gnn ")
    script = Path(sys.executable).with_name("ibp-gnn")
    if not script.exists():
        pytest.skip("the ibp-gnn script is not installed beside this python")
    r = subprocess.run([str(script), "compress", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: ibp-gnn compress ")
    assert "--key" in r.stdout and "--dtype" in r.stdout
