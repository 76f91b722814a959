"""Runs the emulated-CUDA tests under the sanitizers they were built with.

A library built with -fsanitize=address loads only where the ASan runtime
comes first, which this pytest process lacks; the tests run in a child pytest
started with the runtime preloaded (ibp_gnn.emulation.sanitized_env)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ibp_gnn import emulation

from emulated import CHILD, INFO, NEEDS_CHILD, REQUIRED

HERE = Path(__file__).resolve().parent
FILES = ["test_emulated.py", "test_emulated_sampler.py", "test_emulated_cache.py",
         "test_emulated_coded.py", "test_emulated_sparse_code.py"]


def test_emulated_build_exists_when_required():
    if not REQUIRED:
        pytest.skip("IBP_EMU_REQUIRED is not set (make test sets it after `make emu`)")
    assert INFO is not None, "make emu did not leave build/emu/ibp_emu.json"
    assert INFO["sanitize"], "make test builds the emulation with sanitizers"


@pytest.mark.skipif(CHILD or not NEEDS_CHILD,
                    reason="no sanitized emulated build, or already in the sanitized child")
def test_sanitized_emulation():
    env = emulation.sanitized_env()
    env["IBP_EMU_CHILD"] = "1"
    env.setdefault("OMP_NUM_THREADS", "2")
    # --capture=sys: a sanitizer report (written to fd 2 before it aborts)
    # reaches this process instead of dying in a capture file.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--capture=sys",
           "-W", "ignore::DeprecationWarning", *FILES]
    r = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"sanitized emulated tests failed (rc {r.returncode}):\n{out[-20000:]}"
    assert " passed" in out and "skipped" not in out.split("\n")[-2], out[-3000:]


@pytest.mark.parametrize("name", ["gather_cuda", "neighbor_count_cuda", "neighbor_pick_cuda",
                                  "relabel_insert_cuda", "relabel_mark_cuda",
                                  "relabel_finish_cuda", "relabel_commit_cuda"])
def test_emulated_entry_points_match_C(name):
    """The emulated entry points take the arguments of ibp_gnn._C's CUDA ones
    (the ones ibp_gnn._tensor and ibp_gnn.sampler call), in the same order."""
    import inspect
    import re

    from ibp_gnn import _C

    doc = getattr(_C, name).__doc__.split("\n")[0]
    c_args = re.findall(r"(\w+): ", doc[doc.index("(") + 1:])
    emu_args = list(inspect.signature(getattr(emulation.Emulator, name)).parameters)[1:]
    assert emu_args == c_args
