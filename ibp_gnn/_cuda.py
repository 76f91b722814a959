"""CUDA bookkeeping of the Python layer: whether `_C` can use the GPUs torch
sees, and the launches that still read a buffer before it may be freed.

`_C` links the CUDA runtime statically: it needs a driver at least as new as
the toolkit it was built with, while torch may be built for an older CUDA and
see the GPUs. `runtime_problem` names that case (driver and runtime versions)
so that it fails loudly instead of looking like a machine without GPU.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional

import torch

from . import _C

# cudaError_t values that mean "this driver cannot run this runtime".
_DRIVER_ERRORS = {35: "cudaErrorInsufficientDriver", 803: "cudaErrorSystemDriverMismatch",
                  804: "cudaErrorCompatNotSupportedOnDevice"}


def version_str(v: int) -> str:
    """A CUDA version integer (12040) as text ("12.4"); 0 = no driver."""
    if v <= 0:
        return "none" if v == 0 else "n/a"
    return f"{v // 1000}.{v % 1000 // 10}"


def runtime_problem(torch_devices: int, built: bool, versions: Dict[str, int]) -> Optional[str]:
    """Why `_C` cannot use the `torch_devices` GPUs torch sees, or None.

    versions: `_C.cuda_versions()` (driver, runtime, device_count, count_error).
    None also when torch sees no GPU or `_C` was built without CUDA (those
    are reported where CUDA is asked for)."""
    if torch_devices <= 0 or not built or versions["device_count"] > 0:
        return None
    err = versions["count_error"]
    driver, runtime = versions["driver"], versions["runtime"]
    why = (f"cudaGetDeviceCount failed with cudaError {err}"
           f"{' (' + _DRIVER_ERRORS[err] + ')' if err in _DRIVER_ERRORS else ''}"
           if err else "cudaGetDeviceCount found no device")
    hint = ""
    if 0 < driver < runtime or err in _DRIVER_ERRORS:
        hint = (f" The driver is older than the CUDA runtime linked into ibp_gnn._C: install an "
                f"NVIDIA driver for CUDA >= {version_str(runtime)}, or rebuild ibp_gnn with an "
                f"nvcc no newer than CUDA {version_str(driver)} (pip install --no-build-isolation "
                "-e . with that nvcc first on the PATH).")
    return (f"ibp_gnn: torch sees {torch_devices} CUDA device(s) but ibp_gnn._C sees none: CUDA "
            f"driver {version_str(driver)} (cudaDriverGetVersion = {driver}), CUDA runtime "
            f"{version_str(runtime)} in ibp_gnn._C (cudaRuntimeGetVersion = {runtime}, linked "
            f"statically); {why}.{hint}")


_checked: List[Optional[str]] = []


def current_problem() -> Optional[str]:
    """runtime_problem for this process (computed once)."""
    if not _checked:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        _checked.append(runtime_problem(n, _C.cuda_built(), _C.cuda_versions()) if n else None)
    return _checked[0]


def require_runtime(op: str) -> None:
    """RuntimeError naming both versions when `_C` cannot use torch's GPUs."""
    problem = current_problem()
    if problem is not None:
        raise RuntimeError(f"{op}: {problem}")


class StreamUses:
    """The launches that may still read a buffer: one event per stream, the
    latest launch's (a stream runs its work in order). `wait()` blocks until
    all have finished; call it before the buffer is unregistered or freed.

    event_factory makes an object with record(stream), query() and
    synchronize() (torch.cuda.Event by default)."""

    def __init__(self, event_factory: Optional[Callable[[], object]] = None):
        self._new = event_factory or torch.cuda.Event
        self._events: Dict[tuple, object] = {}
        self._lock = threading.Lock()

    def record(self, stream) -> None:
        """Marks the work queued on `stream` so far as a user of the buffer."""
        event = self._new()
        event.record(stream)
        key = (str(getattr(stream, "device", "")), int(stream.cuda_stream))  # handles repeat per device
        with self._lock:
            # Streams whose work has finished need no event any more.
            done = [k for k, e in self._events.items() if k != key and e.query()]
            for k in done:
                del self._events[k]
            self._events[key] = event

    def pending(self) -> int:
        with self._lock:
            return len(self._events)

    def wait(self) -> None:
        with self._lock:
            events, self._events = list(self._events.values()), {}
        for e in events:
            e.synchronize()
