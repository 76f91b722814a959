"""The emulation layer catches kernel bugs: one-line bugs planted in copies of
csrc/ibp/cuda/gather.cu, compiled (without sanitizers, for speed) against the
emulation runtime and run on matrices that reach the changed line, must each
give a wrong output or an emulation error naming gather.cu, while the
unchanged copy, built the same way, is exact.

Each mutant runs in a child process (numpy and ctypes only), so a mutant that
crashes fails its check instead of the test run."""
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import ibp_gnn

from conftest import special_matrix
from test_compress import sparse_forms_matrix

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
KERNEL = CSRC / "ibp" / "cuda" / "gather.cu"
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")

# name -> (line in gather.cu, its planted replacement, how it must be caught)
MUTANTS = {
    "scan_off_by_one": ("    if (g >= d) v += up;", "    if (g > d) v += up;", "wrong"),
    "dropped_span_word": ("        for (uint64_t k = g; k < blocks; k += G) {",
                          "        for (uint64_t k = g; k + 1 < blocks; k += G) {", "wrong"),
    "removed_syncwarp": ("  __syncwarp(mask);  // the listed words overwrite the values",
                         "  // the listed words overwrite the values", "wrong"),
    "shuffle_in_divergent_branch": (
        "    const uint32_t total = __shfl_sync(mask, incl, G - 1, G);",
        "    const uint32_t total = active ? __shfl_sync(mask, incl, G - 1, G) : 0;", "error"),
}

CHILD = r"""
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("emulation", sys.argv[1])
emulation = importlib.util.module_from_spec(spec); spec.loader.exec_module(emulation)
emu = emulation.Emulator(sys.argv[2])
cases = np.load(sys.argv[3])
result = {"wrong": [], "error": None}
for name in sorted({k.split("/")[0] for k in cases.files}):
    a = {k.split("/")[1]: cases[k] for k in cases.files if k.startswith(name + "/")}
    ids = a["ids"]
    out = np.zeros_like(a["want"])
    try:
        err = emu.gather_cuda(a["header"].tobytes(), a["table"].ctypes.data, a["bases"].ctypes.data,
                              a["rel"].ctypes.data, a["payload"].ctypes.data, ids.ctypes.data, True,
                              len(ids), 0, out.ctypes.data)
    except emulation.EmulationError as e:
        result["error"] = str(e)
        break
    if err != 0 or not np.array_equal(out, a["want"]):
        result["wrong"].append(name)
print(json.dumps(result))
"""


def _cases():
    g = torch.Generator().manual_seed(11)
    mats = {
        "ibp_45": special_matrix(torch.float32, 150, 45, seed=3),  # 2 chunks, 19 idle lanes
        "raw_70": torch.randint(-2**31, 2**31 - 1, (60, 70), generator=g,
                                dtype=torch.int64).int(),  # spans of 17+ 16-byte loads
        "sparse_300": sparse_forms_matrix()[:100].contiguous(),  # listed positions
    }
    arrays = {}
    for name, x in mats.items():
        ct = ibp_gnn.compress(x)
        ids = np.arange(len(x) - 1, -1, -1, dtype=np.int64)
        arrays.update({f"{name}/header": np.frombuffer(ct._header, np.uint8),
                       f"{name}/table": np.ascontiguousarray(ct._decode_table),
                       f"{name}/bases": ct._bases, f"{name}/rel": ct._rel,
                       f"{name}/payload": ct._payload, f"{name}/ids": ids,
                       f"{name}/want": x[torch.from_numpy(ids)].contiguous().view(torch.uint8)
                       .numpy()})
    return arrays


def _compile(args):
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(args)}\n{r.stderr[-4000:]}"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler on the PATH")
    tmp = tmp_path_factory.mktemp("mutants")
    flags = ["-std=c++17", "-O0", "-fPIC", "-DIBP_CUDA_EMU", "-D__CUDA_ARCH__=800",
             "-include", str(CSRC / "testing" / "cuda_emu.h"), "-I", str(CSRC / "testing"),
             "-I", str(CSRC / "testing" / "include")]
    jobs, objects = [], []
    for src in ("cuda_emu.cpp", "emu_capi.cpp", "emu_sampler.cpp"):
        obj = tmp / (src + ".o")
        jobs.append([CXX, *flags, "-I", str(CSRC), "-c", str(CSRC / "testing" / src), "-o",
                     str(obj)])
        objects.append(str(obj))
    source = KERNEL.read_text()
    variants = {"original": source}
    for name, (line, planted, _) in MUTANTS.items():
        assert source.count(line) == 1, f"mutant {name}: {line!r} is not once in gather.cu"
        variants[name] = source.replace(line, planted)
    libs = {}
    for name, text in variants.items():
        root = tmp / name
        shutil.copytree(CSRC / "ibp", root / "ibp")
        (root / "ibp" / "cuda" / "gather.cu").write_text(text)
        obj = root / "gather.o"
        jobs.append([CXX, *flags, "-I", str(root), "-I", str(CSRC), "-c",
                     str(CSRC / "testing" / "emu_gather.cpp"), "-o", str(obj)])
        libs[name] = (root / "libibp_emu.so", obj)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(_compile, jobs))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(_compile, [[CXX, "-shared", "-o", str(lib), str(obj), *objects]
                                 for lib, obj in libs.values()]))
    cases = tmp / "cases.npz"
    np.savez(cases, **_cases())

    def run(name):
        r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "ibp_gnn" / "emulation.py"),
                            str(libs[name][0]), str(cases)], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            return {"crash": r.returncode, "stderr": r.stderr[-2000:]}
        return json.loads(r.stdout)
    return run


def test_unchanged_copy_is_exact(harness):
    assert harness("original") == {"wrong": [], "error": None}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_planted_bug_is_caught(harness, name):
    r = harness(name)
    assert "crash" not in r, r  # caught, but not by the emulation's own checks
    if MUTANTS[name][2] == "wrong":
        assert r["wrong"] or r["error"], f"{name} went unnoticed: {r}"
    else:
        assert r["error"] and "gather.cu:" in r["error"], f"{name}: no emulation error: {r}"
