"""Shared pieces of the emulated-CUDA tests (tests/test_emulated*.py).

The kernels run from build/emu/libibp_emu.so (`make emu`), built under
ASan/UBSan. Such a library only loads into a process whose ASan runtime comes
first, so when this pytest process has none, the emulated tests skip here and
test_emulated_run.py reruns them in a child pytest with the runtime preloaded.
"""
from __future__ import annotations

import os

import pytest
import torch

from ibp_gnn import emulation

INFO = emulation.info()
REQUIRED = os.environ.get("IBP_EMU_REQUIRED") == "1"
CHILD = os.environ.get("IBP_EMU_CHILD") == "1"
NEEDS_CHILD = bool(INFO and INFO.get("asan_runtime")) and not emulation.asan_loaded()


def _skip_reason():
    if INFO is None:
        return "the emulated CUDA build is missing: run `make emu` (make test does)"
    if NEEDS_CHILD:
        return "runs in the sanitized child process of test_emulated_run.py"
    return None


def emulator() -> emulation.Emulator:
    if INFO is None and REQUIRED:
        pytest.fail("IBP_EMU_REQUIRED=1 but build/emu has no emulated CUDA build")
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    return emulation.Emulator.load()


@pytest.fixture(scope="module")
def emu():
    return emulator()


def gather(emu, ct, ids, *, sort: bool = True, out: torch.Tensor = None,
           counters: bool = False):
    """ct's rows `ids` by the emulated CUDA kernel (Emulator.gather), with the
    launch's counters when asked."""
    if counters:
        emu.reset_counters()
    out = emu.gather(ct, ids, sort=sort, out=out)
    return (out, emu.counters()) if counters else out


