import os
import re
from typing import Optional

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.int16,
          torch.int32, torch.int64]

# Same-size integer views used to compare raw bits.
BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of a tensor as integers of the same size (NaN-safe compare)."""
    return t.view(BITS[t.element_size()])


def assert_bits_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.equal(bits(a), bits(b))


def special_matrix(dtype: torch.dtype, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Rows mixing structure (zeros, repeats, small values) with the awkward
    values of the dtype: NaN payloads, -0.0, +/-Inf, denormals, extremes."""
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        x = torch.randn(rows, cols, generator=g).to(dtype)
        x[torch.rand(rows, cols, generator=g) < 0.4] = 0
        if rows * cols:
            flat = x.view(-1)
            specials = [float("nan"), float("-inf"), float("inf"), -0.0,
                        torch.finfo(dtype).tiny / 4, -torch.finfo(dtype).tiny / 8,
                        torch.finfo(dtype).max, torch.finfo(dtype).min]
            pos = torch.randint(0, flat.numel(), (min(flat.numel(), 4 * len(specials)),),
                                generator=g)
            for i, p in enumerate(pos.tolist()):
                flat[p] = specials[i % len(specials)]
            # NaNs with distinct payloads and signs, written through the bits.
            ib = bits(flat)
            nan_bits = {torch.float32: [0x7FC00001, -0x0003FFFF, 0x7F800001],
                        torch.float16: [0x7E01, -0x01FF, 0x7C01],
                        torch.bfloat16: [0x7FC1, -0x003F, 0x7F81]}[dtype]
            for i, v in enumerate(nan_bits):
                ib[(7 * i + 3) % flat.numel()] = v
        return x.contiguous()
    info = torch.iinfo(dtype)
    x = torch.randint(max(info.min, -20), min(info.max, 20) + 1, (rows, cols), generator=g,
                      dtype=torch.int64).to(dtype)
    if rows * cols:
        flat = x.view(-1)
        flat[torch.randint(0, flat.numel(), (3,), generator=g)] = info.max
        flat[torch.randint(0, flat.numel(), (3,), generator=g)] = info.min
    if rows > 2:
        x[1] = x[0]  # a repeated row
        x[2] = 0
    return x.contiguous()


cuda_available = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


# ---- GPU tests fail, not skip, when torch sees a GPU that ibp_gnn._C cannot use --------------
# (a CUDA runtime in _C newer than the driver). IBP_GPU_ONLY=1 selects the GPU tests alone
# (scripts/gpu_check.sh runs them, and under compute-sanitizer).
GPU_SKIP = re.compile(r"needs a CUDA")
GPU_SELECT = re.compile(r"needs a CUDA|nvcc")


def gpu_skip_failure(reason: str, problem: Optional[str]) -> Optional[str]:
    """The failure that replaces a GPU test's skip while `problem` (see
    ibp_gnn._cuda.runtime_problem) holds; None to leave the skip alone."""
    if problem is None or not GPU_SKIP.search(reason):
        return None
    reason = reason.strip().removeprefix("Skipped: ")
    return f"GPU test not skipped ({reason}): {problem}"


def _is_gpu_test(item) -> bool:
    return any(GPU_SELECT.search(str(m.kwargs.get("reason", "")))
               for m in item.iter_markers("skipif"))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("IBP_GPU_ONLY") == "1":
        keep = [it for it in items if _is_gpu_test(it)]
        config.hook.pytest_deselected(items=[it for it in items if not _is_gpu_test(it)])
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        from ibp_gnn import _cuda

        failure = gpu_skip_failure(reason, _cuda.current_problem())
        if failure is not None:
            rep.outcome = "failed"
            rep.longrepr = failure
